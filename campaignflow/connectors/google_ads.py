"""Google Ads: daily rows per campaign and ad group from `customers/{id}/googleAds:searchStream` (GAQL).

The REST answer is one JSON array of result batches; int64 fields (impressions,
clicks, costMicros) arrive as strings, doubles (conversions) as numbers.
Money comes in micros of the account currency (`customer.currency_code`).
"""

from __future__ import annotations

from typing import Any, Iterator

from campaignflow.connectors import google
from campaignflow.connectors.base import (Connector, MalformedResponse, Part, Verdict, currency, day, default_verdict, get,
                                          number, parse_json, text)

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


class GoogleAdsConnector(Connector):
    kind = "google_ads"
    default_base_url = "https://googleads.googleapis.com/v21"
    default_lookback_days = 14
    slice_days = 31
    required = (("developer_token",), *google.REQUIRED)

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {google.access_token(self.http, self.credentials)}",
                   "developer-token": self.credentials["developer_token"]}
        if self.credentials.get("login_customer_id"):
            headers["login-customer-id"] = self.credentials["login_customer_id"].replace("-", "")
        return headers

    def pages(self, part: Part) -> Iterator[list[tuple]]:
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

    def _row(self, r: Any, part: Part, where: str) -> tuple:
        http = self.http
        campaign_id = get(r, "campaign", "id")
        if campaign_id is None or get(r, "segments", "date") is None:
            raise http.fail(MalformedResponse, f"{where}: missing field campaign.id or segments.date")
        metrics = get(r, "metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise http.fail(MalformedResponse, f"{where}: metrics is not an object")
        metrics = metrics or {}
        cost = number(http, metrics.get("costMicros"), f"{where}: metrics.costMicros", integer=True)
        return (day(http, get(r, "segments", "date"), f"{where}: segments.date", part), self.config.account,
                text(http, campaign_id, f"{where}: campaign.id"),
                text(http, get(r, "adGroup", "id"), f"{where}: adGroup.id"), "",
                text(http, get(r, "campaign", "name"), f"{where}: campaign.name"),
                number(http, metrics.get("impressions"), f"{where}: metrics.impressions", integer=True),
                number(http, metrics.get("clicks"), f"{where}: metrics.clicks", integer=True),
                cost / 1_000_000,
                number(http, metrics.get("conversions"), f"{where}: metrics.conversions"),
                number(http, metrics.get("conversionsValue"), f"{where}: metrics.conversionsValue"),
                currency(http, get(r, "customer", "currencyCode"), f"{where}: customer.currencyCode", self.config.currency))
