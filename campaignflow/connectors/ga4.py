"""Google Analytics 4 Data API: daily rows per campaign (utm_campaign) from `properties/{id}:runReport`.

Dimensions date x sessionCampaignName; `YYYYMMDD` dates; every value a
string; offset/limit paging until `rowCount`; quota exhaustion is a 429
(RESOURCE_EXHAUSTED). Money is in the property currency (`metadata.currencyCode`).

The source's `metrics` name the GA4 metrics to request and the measure each
counts as. A measure no metric maps to is stored as unknown (NULL), not 0:
GA4 does not know a property's ad impressions unless an ads account is linked.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from campaignflow.connectors import google, register
from campaignflow.connectors.base import (MEASURES, AccountFormat, Connector, Limits, MalformedResponse, MetricRow, Part,
                                          SourceOptions, Verdict, currency, day, default_verdict, get, number,
                                          parse_json, text)

# Metrics every property has (no linked ads account needed).
DEFAULT_METRICS = {"keyEvents": "conversions", "totalRevenue": "conversion_value"}
INTEGER = {"impressions", "clicks"}
METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(:[A-Za-z0-9_]+)?")


def _verdict(response) -> Verdict:  # noqa: ANN001
    v = default_verdict(response)
    # Property tokens per hour/day come back only when the quota window resets: stop instead of retrying.
    if response.status_code == 429 and ("per day" in v.reason.lower() or "per hour" in v.reason.lower()):
        return Verdict("exhausted", f"the GA4 property quota is used up ({v.reason})")
    return v


class Ga4Credentials(BaseModel):
    """Google Analytics Data API access: OAuth refresh token (or access token) with analytics.readonly."""

    model_config = ConfigDict(title="GA4 Credentials")

    client_id: str = Field(default="", description="OAuth client id (Google Cloud console).")
    client_secret: SecretStr | None = Field(default=None)
    refresh_token: SecretStr | None = Field(default=None, description="With the analytics.readonly scope.")
    access_token: SecretStr | None = Field(default=None, description="Instead of a refresh token (expires in 1 h).")
    token_url: str = Field(default=google.TOKEN_URL)


@register
class Ga4Connector(Connector):
    kind = "ga4"
    options = SourceOptions(
        summary="Data API runReport", account_label="property id",
        account=AccountFormat(r"\d+", "a GA4 property id (digits only, e.g. 312345678)"),
        base_url="https://analyticsdata.googleapis.com/v1beta", lookback_days=3, metrics=DEFAULT_METRICS,
        columns_hint="; a ga4 source names its GA4 metrics under `metrics:` (GA4 metric: measure), "
                     "e.g. metrics: {keyEvents: conversions}")
    limits = Limits(concurrency=2, requests_per_second=5.0)
    credentials_model = Ga4Credentials
    required = google.REQUIRED
    slice_days = 31
    page_size = 10_000

    @classmethod
    def source_problems(cls, source: Any) -> list[str]:
        problems, claimed = [], {}
        for name, measure in source.metrics.items():
            if not METRIC_NAME.fullmatch(name):
                problems.append(f"metrics.{name}: not a GA4 metric name (e.g. sessions, keyEvents, customEvent:signup)")
            if measure not in MEASURES:
                problems.append(f"metrics.{name}: {measure!r} is not a measure; map it onto one of {', '.join(MEASURES)}")
            elif measure in claimed:
                problems.append(f"metrics.{name}: {claimed[measure]} already maps onto {measure}; one GA4 metric per measure")
            claimed.setdefault(measure, name)
        return problems

    def unknown_measures(self) -> frozenset[str]:
        return frozenset(MEASURES) - set((self.config.metrics or self.options.metrics).values())

    def pages(self, part: Part) -> Iterator[list[MetricRow]]:
        since, until = part.since, part.until
        metrics = dict(self.config.metrics or self.options.metrics)  # GA4 metric -> our measure
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

    def _row(self, r: Any, metrics: dict[str, str], code: str, part: Part, where: str) -> MetricRow:
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
        return MetricRow(date=day(http, d[0], f"{where}: date", part), account=self.config.account,
                         platform_campaign=campaign, ad_group="", ad="", platform_campaign_name=campaign,
                         **values, currency=code)


def _names(headers: Any) -> list[str] | None:
    if not isinstance(headers, list) or not all(isinstance(h, dict) for h in headers):
        return None
    return [h.get("name") for h in headers]
