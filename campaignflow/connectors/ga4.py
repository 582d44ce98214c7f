"""Google Analytics 4 Data API: daily rows per campaign (utm_campaign) from `properties/{id}:runReport`.

Dimensions date x sessionCampaignName; `YYYYMMDD` dates; every value a
string; offset/limit paging until `rowCount`; quota exhaustion is a 429
(RESOURCE_EXHAUSTED). Money is in the property currency (`metadata.currencyCode`).

The source's `metrics` name the GA4 metrics to request and the measure each
counts as. A measure no metric maps to is stored as unknown (NULL), not 0:
GA4 does not know a property's ad impressions unless an ads account is linked.
"""

from __future__ import annotations

from typing import Any, Iterator

from campaignflow.connectors import google
from campaignflow.connectors.base import (Connector, MalformedResponse, Part, Verdict, currency, day, default_verdict,
                                          get, number, parse_json, text)

# Metrics every property has (no linked ads account needed).
DEFAULT_METRICS = {"keyEvents": "conversions", "totalRevenue": "conversion_value"}
MEASURES = ("impressions", "clicks", "spend", "conversions", "conversion_value")
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

    def unknown_measures(self) -> frozenset[str]:
        return frozenset(MEASURES) - set((self.config.metrics or DEFAULT_METRICS).values())

    def pages(self, part: Part) -> Iterator[list[tuple]]:
        since, until = part.since, part.until
        metrics = dict(self.config.metrics or DEFAULT_METRICS)  # GA4 metric -> our measure
        names = list(metrics)
        offset, page = 0, 0
        headers = {"Authorization": f"Bearer {google.access_token(self.http, self.credentials)}"}
        while True:
            page += 1
            what = f"runReport {since}..{until} offset {offset}"
            body = {"dateRanges": [{"startDate": since.isoformat(), "endDate": until.isoformat()}],
                    "dimensions": [{"name": "date"}, {"name": "sessionCampaignName"}],
                    "metrics": [{"name": n} for n in names],
                    "limit": str(self.page_size), "offset": str(offset), "returnPropertyQuota": True,
                    "keepEmptyRows": False}
            response = self.http.request("POST", f"{self.base_url}/properties/{self.config.account}:runReport",
                                         headers=headers, json=body, what=what, verdict=_verdict)
            report = parse_json(self.http, response, what)
            dims, mets = _names(get(report, "dimensionHeaders")), _names(get(report, "metricHeaders"))
            if dims is None or mets is None:
                raise self.http.fail(MalformedResponse, f"{what}: not a runReport answer (no dimensionHeaders/metricHeaders)")
            if dims[:2] != ["date", "sessionCampaignName"] or mets != names:
                raise self.http.fail(MalformedResponse, f"{what}: headers {dims} / {mets} do not match the request")
            rows = get(report, "rows") or []
            if not isinstance(rows, list):
                raise self.http.fail(MalformedResponse, f"{what}: rows is not a list")
            code = currency(self.http, get(report, "metadata", "currencyCode"), f"{what}: metadata.currencyCode",
                            self.config.currency)
            yield [self._row(r, metrics, code, part, f"{what}, row {i}") for i, r in enumerate(rows, start=1)]
            offset += len(rows)
            total = number(self.http, get(report, "rowCount"), f"{what}: rowCount", integer=True)
            if not rows or offset >= total:
                return

    def _row(self, r: Any, metrics: dict[str, str], code: str, part: Part, where: str) -> tuple:
        http = self.http
        try:
            d = [v.get("value") for v in r["dimensionValues"]]
            m = [v.get("value") for v in r["metricValues"]]
        except (KeyError, TypeError, AttributeError):
            raise http.fail(MalformedResponse, f"{where}: no dimensionValues/metricValues") from None
        if len(d) < 2 or len(m) != len(metrics):
            raise http.fail(MalformedResponse, f"{where}: {len(d)} dimension and {len(m)} metric values")
        values: dict[str, Any] = dict.fromkeys(MEASURES)  # None: this source does not report the measure
        for (name, measure), value in zip(metrics.items(), m):
            values[measure] = number(http, value, f"{where}: {name} (as {measure})", integer=measure in INTEGER)
        campaign = text(http, d[1], f"{where}: sessionCampaignName") or "(not set)"
        return (day(http, d[0], f"{where}: date", part), self.config.account, campaign, "", "", campaign,
                *(values[k] for k in MEASURES), code)


def _names(headers: Any) -> list[str] | None:
    if not isinstance(headers, list) or not all(isinstance(h, dict) for h in headers):
        return None
    return [h.get("name") for h in headers]
