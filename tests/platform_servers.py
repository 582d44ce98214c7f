"""Local HTTP servers that answer like the real platforms, for the ingestion tests and the docs.

One threaded server speaks all three APIs plus Google's OAuth token endpoint:

- Google Ads  POST /v21/customers/{id}/googleAds:searchStream  -> JSON array of result batches
- Meta        GET  /v25.0/act_{id}/insights                      -> {data, paging{cursors{after}, next}}
- GA4         POST /v1beta/properties/{id}:runReport             -> {dimensionHeaders, metricHeaders, rows, rowCount}
- OAuth       POST /token                                        -> {access_token, expires_in, token_type}

Tests put platform rows in `server.google_ads`, `server.meta`, `server.ga4`
and queue faults with `server.fail_next(platform, ...)` (throttling, 401, 5xx)
or `server.corrupt(platform, request_number)` (a malformed page mid-stream).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

TOKEN = "test-access-token"
DEVELOPER_TOKEN = "test-developer-token"


@dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow upstream: the client times out)
    cut: str = ""  # "length": a body shorter than its Content-Length; "chunked": chunks without the last one


class PlatformServer:
    def __init__(self, batch_size: int = 3, meta_page_size: int | None = None, ga4_page_size: int | None = None):
        self.google_ads: list[dict] = []  # {date, campaign_id, campaign_name, ad_group_id, impressions, clicks, cost_micros, conversions, conversions_value}
        self.google_ads_currency = "EUR"
        self.meta: list[dict] = []  # insights rows exactly as Meta returns them (strings), with date_start
        self.meta_usage = 5  # percent of the app's rate-limit budget Meta reports in x-app-usage
        self.ga4: list[dict] = []  # {date: 'YYYYMMDD', campaign, metrics: {name: value}}
        self.ga4_currency = "EUR"
        self.ga4_ads_linked = True  # False: a property without a Google Ads link has no advertiserAd* metrics
        self.batch_size, self.meta_page_size, self.ga4_page_size = batch_size, meta_page_size, ga4_page_size
        self.faults: dict[str, list[Fault]] = {"google_ads": [], "meta": [], "ga4": [], "token": []}
        self.corrupt_at: dict[str, set[int]] = {"google_ads": set(), "meta": set(), "ga4": set()}
        self.requests: list[dict] = []
        self.count: dict[str, int] = {"google_ads": 0, "meta": 0, "ga4": 0, "token": 0}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------

    def fail_next(self, platform: str, status: int, body: Any, headers: dict[str, str] | None = None,
                  times: int = 1) -> None:
        for _ in range(times):
            self.faults[platform].append(Fault(status, body, headers or {}))

    def stall_next(self, platform: str, seconds: float) -> None:
        """Answer the next request only after `seconds` (with a 504), so a client with a shorter timeout gives up."""
        self.faults[platform].append(Fault(504, {"error": {"code": 504, "message": "Deadline exceeded"}}, {}, seconds))

    def cut_next(self, platform: str, how: str = "length", times: int = 1) -> None:
        """Answer the next request(s) with a 200 cut off mid-transfer, then drop the connection.

        how="length": fewer bytes than the Content-Length says; how="chunked": a chunked body that stops
        before its last (zero-length) chunk. The bytes go straight to the socket, as a dying proxy sends them.
        """
        for _ in range(times):
            self.faults[platform].append(Fault(200, None, {}, 0.0, how))

    def corrupt(self, platform: str, request_number: int) -> None:
        """Answer the platform's n-th successful request (1-based, counted from now) with a broken page."""
        self.corrupt_at[platform].add(self.count[platform] + request_number)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "PlatformServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- dispatch ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        if h.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            body: Any = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        else:
            body = json.loads(raw) if raw else None
        if parsed.path == "/token":
            platform = "token"
        elif parsed.path.endswith(":searchStream"):
            platform = "google_ads"
        elif "/insights" in parsed.path:
            platform = "meta"
        elif parsed.path.endswith(":runReport"):
            platform = "ga4"
        else:
            return self._send(h, 404, {"error": {"code": 404, "message": f"no route {parsed.path}", "status": "NOT_FOUND"}})
        with self._lock:
            self.requests.append({"platform": platform, "method": method, "path": parsed.path, "query": query,
                                  "body": body, "headers": dict(h.headers)})
            fault = self.faults[platform].pop(0) if self.faults[platform] else None
            if fault is None:
                self.count[platform] += 1
                broken = self.count[platform] in self.corrupt_at.get(platform, set())
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            try:
                if fault.cut:
                    return self._send_cut(h, fault.cut)
                return self._send(h, fault.status, fault.body, fault.headers)
            except (BrokenPipeError, ConnectionResetError):
                return None
        handler = getattr(self, f"_{platform}")
        status, payload, headers = handler(h, parsed.path, query, body)
        if status == 200 and broken:
            return self._send_raw(h, 200, self._broken(platform, payload))
        self._send(h, status, payload, headers)

    def _broken(self, platform: str, payload: Any) -> bytes:
        if platform == "google_ads":  # the stream cut off in the middle of a batch
            return json.dumps(payload).encode()[:-40]
        if platform == "meta":  # a proxy error page instead of JSON
            return b"<html><body>502 Bad Gateway</body></html>"
        return json.dumps({"rows": payload.get("rows", []), "rowCount": payload.get("rowCount")}).encode()

    @staticmethod
    def _send_cut(h: BaseHTTPRequestHandler, how: str) -> None:
        part = b'{"data": [{"date_start": "2027-01-01", "campaign_id": "c-1", "impressions": "1'
        if how == "chunked":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            body = f"{len(part):x}\r\n".encode() + part + b"\r\n"  # no "0\r\n\r\n" terminator follows
        else:
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(part) + 4000}\r\n"
                    f"\r\n").encode()
            body = part
        h.wfile.write(head + body)
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(2)  # the connection dies mid-body

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(h, status, json.dumps(payload).encode(), headers)

    def _send_raw(self, h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    # -- OAuth ---------------------------------------------------------------------------------

    def _token(self, h, path, query, body):  # noqa: ANN001
        if not body or body.get("grant_type") != "refresh_token" or body.get("refresh_token") != "good-refresh":
            return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, {}
        return 200, {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer",
                     "scope": "https://www.googleapis.com/auth/adwords"}, {}

    # -- Google Ads ----------------------------------------------------------------------------

    def _google_ads(self, h, path, query, body):  # noqa: ANN001
        if h.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected "
                                   "OAuth 2 access token, login cookie or other valid authentication credential.",
                                   "status": "UNAUTHENTICATED"}}, {}
        if h.headers.get("developer-token") != DEVELOPER_TOKEN:
            return 403, {"error": {"code": 403, "message": "The developer token is not approved.",
                                   "status": "PERMISSION_DENIED"}}, {}
        customer = re.search(r"/customers/(\d+)/", path).group(1)
        since, until = re.search(r"BETWEEN '([\d-]+)' AND '([\d-]+)'", body["query"]).groups()
        rows = sorted((r for r in self.google_ads if since <= r["date"] <= until), key=lambda r: r["date"])
        results = [{
            "customer": {"resourceName": f"customers/{customer}", "currencyCode": self.google_ads_currency},
            "campaign": {"resourceName": f"customers/{customer}/campaigns/{r['campaign_id']}",
                         "name": r["campaign_name"], "id": str(r["campaign_id"])},
            "adGroup": {"resourceName": f"customers/{customer}/adGroups/{r['ad_group_id']}",
                        "id": str(r["ad_group_id"]), "name": r.get("ad_group_name", "")},
            "metrics": {"clicks": str(r["clicks"]), "conversions": float(r.get("conversions", 0)),
                        "conversionsValue": float(r.get("conversions_value", 0)),
                        "costMicros": str(r["cost_micros"]), "impressions": str(r["impressions"])},
            "segments": {"date": r["date"]},
        } for r in rows]
        mask = ("customer.currencyCode,campaign.id,campaign.name,adGroup.id,adGroup.name,segments.date,"
                "metrics.impressions,metrics.clicks,metrics.costMicros,metrics.conversions,metrics.conversionsValue")
        batches = [{"results": results[i:i + self.batch_size], "fieldMask": mask, "requestId": f"req-{i}"}
                   for i in range(0, len(results), self.batch_size)]
        if not batches:
            batches = [{"fieldMask": mask, "requestId": "req-empty"}]
        return 200, batches, {}

    # -- Meta ----------------------------------------------------------------------------------

    def _meta(self, h, path, query, body):  # noqa: ANN001
        # The Graph API takes the token as `Authorization: Bearer` (what campaignflow sends) or `access_token=`.
        auth = h.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else query.get("access_token")
        if token != TOKEN:
            return 400, {"error": {"message": "Error validating access token: Session has expired on Monday, "
                                   "23-Nov-26 01:00:00 PST.", "type": "OAuthException", "code": 190,
                                   "error_subcode": 463, "fbtrace_id": "AbCdEf123"}}, {}
        assert query["level"] == "ad" and query["time_increment"] == "1", query
        window = json.loads(query["time_range"])
        rows = sorted((r for r in self.meta if window["since"] <= r["date_start"] <= window["until"]),
                      key=lambda r: (r["date_start"], r["ad_id"]))
        limit = self.meta_page_size or int(query.get("limit", 25))
        start = int(base64.b64decode(query["after"]).decode()) if query.get("after") else 0
        page = rows[start:start + limit]
        paging: dict[str, Any] = {"cursors": {"before": base64.b64encode(str(start).encode()).decode(),
                                              "after": base64.b64encode(str(start + len(page)).encode()).decode()}}
        if start + limit < len(rows):
            paging["next"] = f"{self.url}{path}?" + urlencode({**query, "after": paging["cursors"]["after"]})
        usage = {"x-app-usage": json.dumps({"call_count": self.meta_usage, "total_cputime": 2, "total_time": 3}),
                 "x-business-use-case-usage": json.dumps({"1234": [{"type": "ads_insights", "call_count": 4,
                                                                   "total_cputime": 1, "total_time": 2,
                                                                   "estimated_time_to_regain_access": 0}]})}
        return 200, {"data": page, "paging": paging}, usage

    # -- GA4 -----------------------------------------------------------------------------------

    def _ga4(self, h, path, query, body):  # noqa: ANN001
        if h.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials.",
                                   "status": "UNAUTHENTICATED"}}, {}
        rng = body["dateRanges"][0]
        metric_names = [x["name"] for x in body["metrics"]]
        missing = [n for n in metric_names if n.startswith("advertiserAd") and not self.ga4_ads_linked]
        if missing:
            return 400, {"error": {"code": 400, "message": f"Field {missing[0]} is not a valid metric. For a list of "
                                   "valid dimensions and metrics, see https://developers.google.com/analytics/devguides/"
                                   "reporting/data/v1/api-schema", "status": "INVALID_ARGUMENT"}}, {}
        rows = sorted((r for r in self.ga4 if rng["startDate"].replace("-", "") <= r["date"] <= rng["endDate"].replace("-", "")),
                      key=lambda r: (r["date"], r["campaign"]))
        offset, limit = int(body.get("offset", 0)), self.ga4_page_size or int(body.get("limit", 10000))
        page = rows[offset:offset + limit]
        answer = {
            "dimensionHeaders": [{"name": "date"}, {"name": "sessionCampaignName"}],
            "metricHeaders": [{"name": n, "type": "TYPE_CURRENCY" if "Cost" in n or "Revenue" in n else "TYPE_INTEGER"}
                              for n in metric_names],
            "rowCount": len(rows),
            "metadata": {"currencyCode": self.ga4_currency, "timeZone": "Europe/Berlin"},
            "propertyQuota": {"tokensPerDay": {"consumed": 12, "remaining": 199988},
                              "tokensPerHour": {"consumed": 12, "remaining": 39988},
                              "concurrentRequests": {"consumed": 0, "remaining": 10}},
            "kind": "analyticsData#runReport",
        }
        if page:
            answer["rows"] = [{"dimensionValues": [{"value": r["date"]}, {"value": r["campaign"]}],
                               "metricValues": [{"value": str(r["metrics"].get(n, 0))} for n in metric_names]}
                              for r in page]
        return 200, answer, {}


# -- row builders ------------------------------------------------------------------------------

def days(start: dt.date, n: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(n)]


def google_ads_row(date: dt.date, campaign_id: int, name: str, ad_group_id: int, impressions: int, clicks: int,
                   cost: float, conversions: float = 0, value: float = 0) -> dict:
    return {"date": date.isoformat(), "campaign_id": campaign_id, "campaign_name": name, "ad_group_id": ad_group_id,
            "impressions": impressions, "clicks": clicks, "cost_micros": int(round(cost * 1_000_000)),
            "conversions": conversions, "conversions_value": value}


def meta_row(date: dt.date, campaign_id: str, name: str, ad_id: str, impressions: int, clicks: int, spend: float,
             leads: int = 0, purchases: int = 0, purchase_value: float = 0, currency: str = "EUR") -> dict:
    actions = [{"action_type": "link_click", "value": str(clicks)}]
    if leads:
        actions.append({"action_type": "lead", "value": str(leads)})
    if purchases:
        actions.append({"action_type": "purchase", "value": str(purchases)})
    row = {"date_start": date.isoformat(), "date_stop": date.isoformat(), "account_currency": currency,
           "campaign_id": campaign_id, "campaign_name": name, "adset_id": f"{campaign_id}-as", "adset_name": "Ad set",
           "ad_id": ad_id, "ad_name": f"Ad {ad_id}", "impressions": str(impressions), "clicks": str(clicks),
           "spend": f"{spend:.2f}", "actions": actions}
    if purchase_value:
        row["action_values"] = [{"action_type": "purchase", "value": f"{purchase_value:.2f}"}]
    return row


def ga4_row(date: dt.date, campaign: str, impressions: int, clicks: int, cost: float, key_events: int,
            revenue: float) -> dict:
    return {"date": date.strftime("%Y%m%d"), "campaign": campaign,
            "metrics": {"advertiserAdImpressions": impressions, "advertiserAdClicks": clicks,
                        "advertiserAdCost": cost, "keyEvents": key_events, "totalRevenue": revenue}}


def meta_throttle(code: int = 17) -> tuple[int, dict, dict]:
    """What Meta answers when an ad account hits its insights rate limit."""
    return (400 if code != 80000 else 400,
            {"error": {"message": "User request limit reached", "type": "OAuthException", "code": code,
                       "error_subcode": 2446079, "is_transient": True, "fbtrace_id": "Thr0ttl3"}},
            {"x-business-use-case-usage": json.dumps({"1234": [{"type": "ads_insights", "call_count": 100,
                                                               "total_cputime": 30, "total_time": 40,
                                                               "estimated_time_to_regain_access": 0}]}),
             "x-app-usage": json.dumps({"call_count": 100, "total_cputime": 30, "total_time": 40})})
