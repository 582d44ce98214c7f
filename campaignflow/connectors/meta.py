"""Meta Marketing API: daily rows per ad from `act_{id}/insights` (level=ad, time_increment=1).

Pages follow `paging.cursors.after` while `paging.next` is present. Numbers
arrive as strings; conversions are the sum of the configured `actions` types
and their value the sum of the same types in `action_values`. Throttling
comes as error codes 4, 17, 32, 613 or 80000-80014, with the wait in the
`x-business-use-case-usage` / `x-ad-account-usage` headers.
"""

from __future__ import annotations

import json
from typing import Iterator

from campaignflow.connectors.base import (Connector, Part, MalformedResponse, Verdict, day, default_verdict, dumps_compact,
                                          number, parse_json, retry_after_seconds)

FIELDS = ("date_start,account_currency,campaign_id,campaign_name,adset_id,adset_name,ad_id,ad_name,"
          "impressions,clicks,spend,actions,action_values")
DEFAULT_CONVERSIONS = ("purchase", "lead", "complete_registration")
THROTTLE_CODES = {4, 17, 32, 613} | set(range(80000, 80015))
AUTH_CODES = {102, 190, 10} | set(range(200, 300))
TRANSIENT_CODES = {1, 2}


def throttle_wait(headers) -> float | None:  # noqa: ANN001
    """Seconds until access is back, from Meta's usage headers (the largest of what they say)."""
    waits: list[float] = []
    raw = headers.get("x-business-use-case-usage")
    if raw:
        try:
            for entries in json.loads(raw).values():
                for entry in entries:
                    minutes = entry.get("estimated_time_to_regain_access")
                    if minutes:
                        waits.append(float(minutes) * 60)
        except (ValueError, AttributeError, TypeError):
            pass
    raw = headers.get("x-ad-account-usage")
    if raw:
        try:
            reset = json.loads(raw).get("reset_time_duration")
            if reset:
                waits.append(float(reset))
        except (ValueError, AttributeError, TypeError):
            pass
    retry_after = retry_after_seconds(headers.get("Retry-After"))
    if retry_after is not None:
        waits.append(retry_after)
    return max(waits) if waits else None


HIGH_USAGE = 90.0  # percent of a Meta rate-limit budget: above it, pause before the next call


def usage_pct(headers) -> float:  # noqa: ANN001
    """The highest share of any Meta rate-limit budget in use, from the usage headers (0 when absent)."""
    found = [0.0]
    for name in ("x-app-usage", "x-ad-account-usage", "x-business-use-case-usage"):
        raw = headers.get(name)
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        entries = [e for group in data.values() for e in group] if name == "x-business-use-case-usage" else [data]
        for e in entries:
            if isinstance(e, dict):
                found += [float(e.get(k) or 0) for k in ("call_count", "total_cputime", "total_time", "acc_id_util_pct")]
    return max(found)


def _verdict(response) -> Verdict:  # noqa: ANN001
    if response.status_code < 400:
        return Verdict("ok")
    try:
        error = response.json().get("error") or {}
        code = int(error.get("code", 0))
    except (ValueError, AttributeError, TypeError):
        return default_verdict(response)
    reason = f"HTTP {response.status_code}, code {code}" + (f"/{error['error_subcode']}" if error.get("error_subcode") else "") \
        + f": {error.get('message', '')}"
    if code in THROTTLE_CODES:
        return Verdict("retry", reason, throttle_wait(response.headers))
    if code in AUTH_CODES or response.status_code in (401, 403):
        return Verdict("auth", reason)
    if code in TRANSIENT_CODES or response.status_code >= 500 or error.get("is_transient"):
        return Verdict("retry", reason, retry_after_seconds(response.headers.get("Retry-After")))
    return Verdict("error", reason)


class MetaConnector(Connector):
    kind = "meta"
    default_base_url = "https://graph.facebook.com/v25.0"
    default_lookback_days = 28
    slice_days = 31
    required = (("access_token",),)
    page_size = 500

    def pages(self, part: Part) -> Iterator[list[tuple]]:
        since, until = part.since, part.until
        account = self.config.account if self.config.account.startswith("act_") else f"act_{self.config.account}"
        conversions = set(self.config.conversion_actions or DEFAULT_CONVERSIONS)
        params = {"level": "ad", "time_increment": "1", "fields": FIELDS, "limit": str(self.page_size),
                  "time_range": dumps_compact({"since": since.isoformat(), "until": until.isoformat()}),
                  "access_token": self.credentials["access_token"]}
        page = 0
        while True:
            page += 1
            what = f"insights {since}..{until} page {page}"
            response = self.http.request("GET", f"{self.base_url}/{account}/insights", params=params,
                                         verdict=_verdict, what=what)
            body = parse_json(self.http, response, what)
            if usage_pct(response.headers) >= HIGH_USAGE:
                # Slow down before Meta throttles us (throttled accounts stay blocked for minutes).
                pause = min(throttle_wait(response.headers) or 60.0, self.http.max_wait)
                self.http.stats.waited_seconds += pause
                self.http.sleep(pause)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise self.http.fail(MalformedResponse, f"{what}: no `data` list in the answer")
            yield [self._row(r, conversions, f"{what}, row {i}") for i, r in enumerate(data, start=1)]
            paging = body.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("next") or not after:
                return
            params = {**params, "after": after}

    def _row(self, r: dict, conversions: set[str], where: str) -> tuple:
        http = self.http
        if not isinstance(r, dict) or not r.get("campaign_id") and not r.get("campaign_name"):
            raise http.fail(MalformedResponse, f"{where}: no campaign_id")
        return (day(http, r.get("date_start"), f"{where}: date_start"), self.config.account,
                str(r.get("campaign_id") or r.get("campaign_name")), str(r.get("adset_id", "")), str(r.get("ad_id", "")),
                str(r.get("campaign_name", "")),
                number(http, r.get("impressions"), f"{where}: impressions", integer=True),
                number(http, r.get("clicks"), f"{where}: clicks", integer=True),
                number(http, r.get("spend"), f"{where}: spend"),
                self._actions(r.get("actions"), conversions, f"{where}: actions"),
                self._actions(r.get("action_values"), conversions, f"{where}: action_values"),
                r.get("account_currency") or self.config.currency)

    def _actions(self, actions, wanted: set[str], where: str) -> float:  # noqa: ANN001
        if not actions:
            return 0.0
        if not isinstance(actions, list):
            raise self.http.fail(MalformedResponse, f"{where} is not a list")
        total = 0.0
        for a in actions:
            if isinstance(a, dict) and a.get("action_type") in wanted:
                total += number(self.http, a.get("value"), f"{where}[{a.get('action_type')}]")
        return total
