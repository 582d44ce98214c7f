"""Google Ads: daily rows per campaign and ad group from `customers/{id}/googleAds:searchStream` (GAQL).

The REST answer is one JSON array of result batches; int64 fields (impressions,
clicks, costMicros) arrive as strings, doubles (conversions) as numbers.
Money comes in micros of the account currency (`customer.currency_code`).
"""

from __future__ import annotations

from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from campaignflow.connectors import google, register
from campaignflow.connectors.base import (AccountFormat, Connector, Limits, MalformedResponse, MetricRow, Part,
                                          SourceOptions, Verdict, currency, day, default_verdict, get, number,
                                          parse_json, text)

QUERY = (
    "SELECT segments.date, customer.currency_code, campaign.id, campaign.name, ad_group.id, ad_group.name, "
    "metrics.impressions, metrics.clicks, metrics.cost_micros, metrics.conversions, metrics.conversions_value "
    "FROM ad_group WHERE segments.date BETWEEN '{since}' AND '{until}' ORDER BY segments.date"
)


def _verdict(response) -> Verdict:  # noqa: ANN001
    v = default_verdict(response)
    if v.action != "ok" and response.status_code == 400 and "QUOTA" in response.text.upper():
        return Verdict("retry", v.reason)
    return v


class GoogleAdsCredentials(BaseModel):
    """Google Ads API access: a developer token plus OAuth (a refresh token, or a short-lived access token)."""

    model_config = ConfigDict(title="Google Ads Credentials")

    developer_token: SecretStr = Field(description="From the Google Ads API Center of your manager account.")
    client_id: str = Field(default="", description="OAuth client id (Google Cloud console).")
    client_secret: SecretStr | None = Field(default=None, description="OAuth client secret.")
    refresh_token: SecretStr | None = Field(default=None, description="OAuth refresh token with the adwords scope.")
    access_token: SecretStr | None = Field(default=None, description="Instead of a refresh token (expires in 1 h).")
    login_customer_id: str = Field(default="", description="Manager account id when accessing a client account.")
    token_url: str = Field(default=google.TOKEN_URL)


@register
class GoogleAdsConnector(Connector):
    kind = "google_ads"
    options = SourceOptions(
        summary="searchStream", account_label="customer id (123-456-7890)",
        account=AccountFormat(r"\d{3}-?\d{3}-?\d{4}", "a Google Ads customer id such as 123-456-7890"),
        base_url="https://googleads.googleapis.com/v21", lookback_days=14)
    limits = Limits(concurrency=2, requests_per_second=5.0)
    credentials_model = GoogleAdsCredentials
    required = (("developer_token",), *google.REQUIRED)
    slice_days = 31

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {google.access_token(self.http, self.credentials)}",
                   "developer-token": self.credentials["developer_token"]}
        if self.credentials.get("login_customer_id"):
            headers["login-customer-id"] = self.credentials["login_customer_id"].replace("-", "")
        return headers

    def pages(self, part: Part) -> Iterator[list[MetricRow]]:
        since, until = part.since, part.until
        customer = self.config.account.replace("-", "")
        what = f"searchStream {since}..{until}"
        response = self.http.request(
            "POST", f"{self.base_url}/customers/{customer}/googleAds:searchStream", verdict=_verdict, what=what,
            headers=self._headers(), json={"query": QUERY.format(since=since, until=until)})
        batches = parse_json(self.http, response, what)
        if not isinstance(batches, list):
            raise self.http.fail(MalformedResponse, f"{what}: expected a JSON array of result batches, "
                                                    f"got {type(batches).__name__}")
        for b, batch in enumerate(batches, start=1):
            if not isinstance(batch, dict):
                raise self.http.fail(MalformedResponse, f"{what}: batch {b} is not an object")
            if "error" in batch:  # an error after some batches were streamed
                message = get(batch, "error", "message") or batch["error"]
                raise self.http.fail(MalformedResponse, f"{what}: batch {b} is an error ({str(message)[:300]})")
            results = batch.get("results", [])
            if not isinstance(results, list):
                raise self.http.fail(MalformedResponse, f"{what}: batch {b} has no results list")
            yield [self._row(r, part, f"{what}, batch {b}, result {i}") for i, r in enumerate(results, start=1)]

    def _row(self, r: Any, part: Part, where: str) -> MetricRow:
        http = self.http
        campaign_id = get(r, "campaign", "id")
        if campaign_id is None or get(r, "segments", "date") is None:
            raise http.fail(MalformedResponse, f"{where}: missing field campaign.id or segments.date")
        metrics = get(r, "metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise http.fail(MalformedResponse, f"{where}: metrics is not an object")
        metrics = metrics or {}
        cost = number(http, metrics.get("costMicros"), f"{where}: metrics.costMicros", integer=True)
        return MetricRow(
            date=day(http, get(r, "segments", "date"), f"{where}: segments.date", part),
            account=self.config.account,
            platform_campaign=text(http, campaign_id, f"{where}: campaign.id"),
            ad_group=text(http, get(r, "adGroup", "id"), f"{where}: adGroup.id"),
            ad="",
            platform_campaign_name=text(http, get(r, "campaign", "name"), f"{where}: campaign.name"),
            impressions=number(http, metrics.get("impressions"), f"{where}: metrics.impressions", integer=True),
            clicks=number(http, metrics.get("clicks"), f"{where}: metrics.clicks", integer=True),
            spend=cost / 1_000_000,
            conversions=number(http, metrics.get("conversions"), f"{where}: metrics.conversions"),
            conversion_value=number(http, metrics.get("conversionsValue"), f"{where}: metrics.conversionsValue"),
            currency=currency(http, get(r, "customer", "currencyCode"), f"{where}: customer.currencyCode",
                              self.config.currency))
