"""Google OAuth2 for the Google Ads and GA4 connectors: a given access token, or one from a refresh token."""

from __future__ import annotations

from campaignflow.connectors.base import AuthError, Http, MalformedResponse, Verdict, default_verdict, parse_json

TOKEN_URL = "https://oauth2.googleapis.com/token"
REQUIRED = (("access_token", "refresh_token"),)


def _token_verdict(response) -> Verdict:  # noqa: ANN001
    # The token endpoint answers 400 invalid_grant for a revoked or wrong refresh token.
    if response.status_code in (400, 401, 403):
        return Verdict("auth", f"HTTP {response.status_code} {response.text[:200].strip()}")
    return default_verdict(response)


def access_token(http: Http, credentials: dict[str, str]) -> str:
    if credentials.get("access_token"):
        return credentials["access_token"]
    for key in ("client_id", "client_secret"):
        if not credentials.get(key):
            raise http.fail(AuthError, f"a refresh token needs {key} too (from the Google Cloud OAuth client)")
    response = http.request("POST", credentials.get("token_url") or TOKEN_URL, verdict=_token_verdict,
                            what="refreshing the OAuth access token",
                            data={"grant_type": "refresh_token", "refresh_token": credentials["refresh_token"],
                                  "client_id": credentials["client_id"], "client_secret": credentials["client_secret"]})
    body = parse_json(http, response, "the OAuth token response")
    token = body.get("access_token") if isinstance(body, dict) else None
    if not token:
        raise http.fail(MalformedResponse, "the OAuth token response has no access_token")
    if not isinstance(token, str):
        raise http.fail(MalformedResponse, "the OAuth token response's access_token is not text")
    http.add_secrets(token)
    credentials["access_token"] = token
    return token
