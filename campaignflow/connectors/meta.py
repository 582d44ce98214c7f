"""Meta Marketing API: daily rows per ad from `act_{id}/insights` (level=ad, time_increment=1).

Pages follow `paging.cursors.after` while `paging.next` is present. Numbers
arrive as strings. The access token travels in the Authorization header, never
in the URL (URLs end up in logs, proxy error pages and error texts).

Conversions: Meta reports one purchase under several action types at once
(`omni_purchase`, `purchase`, `offsite_conversion.fb_pixel_purchase`,
`onsite_web_purchase`), so each conversion family counts ONE of its aliases,
the first present in CONVERSION_FAMILIES' order, never their sum. The value is
taken the same way from `action_values`. Throttling comes as error codes 4,
17, 32, 613 or 80000-80014, with the wait (minutes) in the
`x-business-use-case-usage` / `x-ad-account-usage` headers.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from campaignflow.connectors import register
from campaignflow.connectors.base import (AccountFormat, Connector, Limits, MalformedResponse, MetricRow, Part,
                                          SourceOptions, Verdict, currency, day, default_verdict, dumps_compact, get,
                                          number, parse_json, retry_after_seconds, text)

FIELDS = ("date_start,account_currency,campaign_id,campaign_name,adset_id,adset_name,ad_id,ad_name,"
          "impressions,clicks,spend,actions,action_values")
# Per family, its action types in the order one is chosen: the one Ads Manager shows first (omni_*: web,
# app and offline together), then the pixel, on-site and app types for accounts that report only those.
CONVERSION_FAMILIES: dict[str, tuple[str, ...]] = {
    "purchase": ("omni_purchase", "purchase", "offsite_conversion.fb_pixel_purchase", "onsite_web_purchase",
                 "onsite_web_app_purchase", "onsite_conversion.purchase", "app_custom_event.fb_mobile_purchase"),
    "lead": ("lead", "offsite_conversion.fb_pixel_lead", "onsite_web_lead", "onsite_conversion.lead_grouped",
             "leadgen_grouped"),
    "complete_registration": ("omni_complete_registration", "complete_registration",
                              "offsite_conversion.fb_pixel_complete_registration",
                              "app_custom_event.fb_mobile_complete_registration"),
}
_FAMILY_OF = {alias: family for family, aliases in CONVERSION_FAMILIES.items() for alias in aliases}
THROTTLE_CODES = {4, 17, 32, 613} | set(range(80000, 80015))
THROTTLE_BACKOFF = 60.0  # throttled without a stated wait: Meta blocks for minutes, so back off from 1 min
AUTH_CODES = {102, 190, 10} | set(range(200, 300))
TRANSIENT_CODES = {1, 2}


def conversion_groups(configured: list[str] | tuple[str, ...]) -> list[tuple[str, ...]]:
    """The configured action types as groups of aliases, one of which counts per row.

    A family name (purchase, lead, complete_registration) is the whole family; a listed alias is that
    alias, grouped with the other listed aliases of its family; any other type is a group of its own.
    """
    groups: dict[str, set[str]] = {}
    for action in configured:
        family = action if action in CONVERSION_FAMILIES else _FAMILY_OF.get(action, action)
        groups.setdefault(family, set()).update(CONVERSION_FAMILIES.get(action, (action,)))
    order = {alias: i for aliases in CONVERSION_FAMILIES.values() for i, alias in enumerate(aliases)}
    return [tuple(sorted(aliases, key=lambda a: order.get(a, 0))) for aliases in groups.values()]


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
        return Verdict("retry", reason, throttle_wait(response.headers) or None, min_wait=THROTTLE_BACKOFF)
    if code in AUTH_CODES or response.status_code in (401, 403):
        return Verdict("auth", reason)
    if code in TRANSIENT_CODES or response.status_code >= 500 or error.get("is_transient"):
        return Verdict("retry", reason, retry_after_seconds(response.headers.get("Retry-After")))
    return Verdict("error", reason)


class MetaCredentials(BaseModel):
    """Meta Marketing API access: a system-user access token with ads_read."""

    model_config = ConfigDict(title="Meta Ads Credentials")

    access_token: SecretStr = Field(description="System user token (Business Settings -> System users) with ads_read.")


@register
class MetaConnector(Connector):
    kind = "meta"
    options = SourceOptions(
        summary="Marketing API insights", account_label="ad account id (act_123 or 123)",
        account=AccountFormat(r"(act_)?\d+", "a Meta ad account id such as act_1234567890"),
        base_url="https://graph.facebook.com/v25.0", lookback_days=28,
        conversion_actions=tuple(CONVERSION_FAMILIES))
    limits = Limits(concurrency=2, requests_per_second=2.0)
    credentials_model = MetaCredentials
    required = (("access_token",),)
    slice_days = 31
    page_size = 500

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.groups = conversion_groups(self.config.conversion_actions or self.options.conversion_actions)
        self.seen: Counter[str] = Counter()  # action types in the answers, for the "none counted" warning
        self.counted = 0  # rows where some configured type was found

    def pages(self, part: Part) -> Iterator[list[MetricRow]]:
        since, until = part.since, part.until
        account = self.config.account if self.config.account.startswith("act_") else f"act_{self.config.account}"
        params = {"level": "ad", "time_increment": "1", "fields": FIELDS, "limit": str(self.page_size),
                  "time_range": dumps_compact({"since": since.isoformat(), "until": until.isoformat()})}
        headers = {"Authorization": f"Bearer {self.credentials['access_token']}"}
        page = 0
        while True:
            page += 1
            what = f"insights {since}..{until} page {page}"
            response = self.http.request("GET", f"{self.base_url}/{account}/insights", params=params,
                                         headers=headers, verdict=_verdict, what=what)
            body = parse_json(self.http, response, what)
            if usage_pct(response.headers) >= HIGH_USAGE:
                # Slow down before Meta throttles us (throttled accounts stay blocked for minutes).
                self.http.pause(throttle_wait(response.headers) or THROTTLE_BACKOFF,
                                f"Meta reports {usage_pct(response.headers):.0f} % of a rate limit used")
            data = get(body, "data")
            if not isinstance(data, list):
                raise self.http.fail(MalformedResponse, f"{what}: no `data` list in the answer")
            yield [self._row(r, part, f"{what}, row {i}") for i, r in enumerate(data, start=1)]
            after = get(body, "paging", "cursors", "after")
            if not get(body, "paging", "next") or not after:
                return
            if not isinstance(after, str):
                raise self.http.fail(MalformedResponse, f"{what}: paging.cursors.after is not text")
            params = {**params, "after": after}

    def _row(self, r: Any, part: Part, where: str) -> MetricRow:
        http = self.http
        if not isinstance(r, dict) or not r.get("campaign_id") and not r.get("campaign_name"):
            raise http.fail(MalformedResponse, f"{where}: no campaign_id")
        name = text(http, r.get("campaign_name"), f"{where}: campaign_name")
        actions = self._actions(r.get("actions"), f"{where}: actions")
        values = self._actions(r.get("action_values"), f"{where}: action_values")
        self.seen.update(actions.keys())
        counted = [group for group in self.groups if any(a in actions for a in group)]
        self.counted += bool(counted)
        return MetricRow(
            date=day(http, r.get("date_start"), f"{where}: date_start", part),
            account=self.config.account,
            platform_campaign=text(http, r.get("campaign_id"), f"{where}: campaign_id") or name,
            ad_group=text(http, r.get("adset_id"), f"{where}: adset_id"),
            ad=text(http, r.get("ad_id"), f"{where}: ad_id"),
            platform_campaign_name=name,
            impressions=number(http, r.get("impressions"), f"{where}: impressions", integer=True),
            clicks=number(http, r.get("clicks"), f"{where}: clicks", integer=True),
            spend=number(http, r.get("spend"), f"{where}: spend"),
            conversions=self._count(actions),
            conversion_value=self._count(values),
            currency=currency(http, r.get("account_currency"), f"{where}: account_currency", self.config.currency))

    def _actions(self, actions: Any, where: str) -> dict[str, float]:
        """An actions list as {action_type: value} (Meta omits the list when nothing happened)."""
        if not actions:
            return {}
        if not isinstance(actions, list):
            raise self.http.fail(MalformedResponse, f"{where} is not a list")
        found: dict[str, float] = {}
        for a in actions:
            kind = a.get("action_type") if isinstance(a, dict) else None
            if not isinstance(kind, str):
                raise self.http.fail(MalformedResponse, f"{where}: an entry without an action_type")
            found.setdefault(kind, number(self.http, a.get("value"), f"{where}[{kind}]"))
        return found

    def _count(self, found: dict[str, float]) -> float:
        """One alias per conversion group (the first present), so a purchase reported three ways counts once."""
        return sum(next((found[a] for a in group if a in found), 0.0) for group in self.groups)

    def warnings(self) -> list[str]:
        if not self.seen or self.counted:
            return []
        types = ", ".join(t for t, _ in self.seen.most_common(12))
        wanted = ", ".join(self.config.conversion_actions or self.options.conversion_actions)
        return [f"Meta reported actions ({types}) but none of them counts as a conversion ({wanted}), so conversions "
                f"are 0; if some of them are your conversions, list them in `conversion_actions:` on the source"]
