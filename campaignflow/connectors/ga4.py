"""Google Analytics 4 Data API: daily rows per campaign (utm_campaign) from `properties/{id}:runReport`.

Dimensions date x sessionCampaignName; `YYYYMMDD` dates; every value a
string; offset/limit paging until `rowCount`; quota exhaustion is a 429
(RESOURCE_EXHAUSTED). Money is in the property currency (`metadata.currencyCode`).
"""

from __future__ import annotations

from typing import Iterator

from campaignflow.connectors import google
from campaignflow.connectors.base import (Connector, MalformedResponse, Part, Verdict, day, default_verdict, number,
                                          parse_json)

DEFAULT_METRICS = {"impressions": "advertiserAdImpressions", "clicks": "advertiserAdClicks",
                   "spend": "advertiserAdCost", "conversions": "keyEvents", "conversion_value": "totalRevenue"}
INTEGER = {"impressions", "clicks"}


def _verdict(response) -> Verdict:  # noqa: ANN001
    v = default_verdict(response)
    # Property tokens per hour/day come back only when the quota window resets: stop instead of retrying.
    if response.status_code == 429 and ("per day" in v.reason.lower() or "per hour" in v.reason.lower()):
        return Verdict("exhausted", f"the GA4 property quota is used up ({v.reason})")
    return v


class Ga4Connector(Connector):
    kind = "ga4"
    default_base_url = "https://analyticsdata.googleapis.com/v1beta"
    default_lookback_days = 3
    slice_days = 31
    required = google.REQUIRED
    page_size = 10_000

    def pages(self, part: Part) -> Iterator[list[tuple]]:
        since, until = part.since, part.until
        metrics = {**DEFAULT_METRICS, **self.config.columns}
        ours = list(metrics)
        offset, page = 0, 0
        headers = {"Authorization": f"Bearer {google.access_token(self.http, self.credentials)}"}
        while True:
            page += 1
            what = f"runReport {since}..{until} offset {offset}"
            body = {"dateRanges": [{"startDate": since.isoformat(), "endDate": until.isoformat()}],
                    "dimensions": [{"name": "date"}, {"name": "sessionCampaignName"}],
                    "metrics": [{"name": metrics[k]} for k in ours],
                    "limit": str(self.page_size), "offset": str(offset), "returnPropertyQuota": True,
                    "keepEmptyRows": False}
            response = self.http.request("POST", f"{self.base_url}/properties/{self.config.account}:runReport",
                                         headers=headers, json=body, what=what, verdict=_verdict)
            report = parse_json(self.http, response, what)
            if not isinstance(report, dict) or "dimensionHeaders" not in report or "metricHeaders" not in report:
                raise self.http.fail(MalformedResponse, f"{what}: not a runReport answer (no dimensionHeaders/metricHeaders)")
            dims = [h.get("name") for h in report["dimensionHeaders"]]
            mets = [h.get("name") for h in report["metricHeaders"]]
            if dims[:2] != ["date", "sessionCampaignName"] or mets != [metrics[k] for k in ours]:
                raise self.http.fail(MalformedResponse, f"{what}: headers {dims} / {mets} do not match the request")
            rows = report.get("rows", [])
            currency = (report.get("metadata") or {}).get("currencyCode") or self.config.currency
            yield [self._row(r, ours, currency, f"{what}, row {i}") for i, r in enumerate(rows, start=1)]
            offset += len(rows)
            total = int(report.get("rowCount", 0) or 0)
            if not rows or offset >= total:
                return

    def _row(self, r: dict, ours: list[str], currency: str, where: str) -> tuple:
        http = self.http
        try:
            d = [v.get("value") for v in r["dimensionValues"]]
            m = [v.get("value") for v in r["metricValues"]]
        except (KeyError, TypeError, AttributeError):
            raise http.fail(MalformedResponse, f"{where}: no dimensionValues/metricValues") from None
        if len(d) < 2 or len(m) != len(ours):
            raise http.fail(MalformedResponse, f"{where}: {len(d)} dimension and {len(m)} metric values")
        values = {k: number(http, v, f"{where}: {k}", integer=k in INTEGER) for k, v in zip(ours, m)}
        campaign = d[1] or "(not set)"
        return (day(http, d[0], f"{where}: date"), self.config.account, campaign, "", "", campaign,
                values["impressions"], values["clicks"], values["spend"], values["conversions"],
                values["conversion_value"], currency)
