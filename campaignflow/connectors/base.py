"""The one small interface every platform connector implements, and the HTTP client they share.

A connector turns a date window into pages of store-shaped rows
(`MetricRow`). It never touches the store: `campaignflow.ingest` spools its
pages, maps them to campaigns and merges them in one transaction. Adding a
platform means adding one module here and one line in `__init__.py`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

from campaignflow.errors import UserError

# The store's row shape, in the order the spool and the upsert use.
ROW_FIELDS = ("date", "account", "platform_campaign", "ad_group", "ad", "platform_campaign_name",
              "impressions", "clicks", "spend", "conversions", "conversion_value", "currency")


class SourceError(UserError):
    """A source run stopped; the message names the source, the account and what was wrong."""

    def __init__(self, source: str, account: str, what: str):
        self.source, self.account, self.what = source, account, what
        where = f"source {source!r}" + (f" (account {account})" if account else "")
        super().__init__(f"{where}: {what}. Nothing was written and the cursor did not move.")


class AuthError(SourceError):
    """401/403 or a platform's 'token invalid / no permission' error: retrying will not help."""


class MalformedResponse(SourceError):
    """The platform answered with something that is not its documented format."""


class RetriesExhausted(SourceError):
    """Throttled or failing for longer than this run may wait; the next run continues."""


@dataclass(frozen=True)
class MappingRule:
    """How one campaignflow campaign claims platform campaigns of a source."""

    campaign_id: str
    names: frozenset[str] = frozenset()  # explicit platform campaign ids or names, lowercased
    pattern: str | None = None  # naming/UTM convention (glob, case-insensitive)

    @property
    def claims_all(self) -> bool:
        return not self.names and not self.pattern


@dataclass
class SourceConfig:
    """Everything a run of one source needs, resolved from the campaign specs that name it."""

    name: str
    kind: str
    account: str = ""
    path: str | None = None
    base_dir: Path = Path(".")
    columns: dict[str, str] = field(default_factory=dict)
    lookback_days: int | None = None
    credentials: str | None = None
    base_url: str | None = None
    conversion_actions: list[str] = field(default_factory=list)
    currency: str = ""  # used when the platform does not say
    first_day: dt.date | None = None  # where the very first run starts (earliest campaign start)
    schedule: str | None = None
    rules: list[MappingRule] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)


@dataclass
class HttpStats:
    requests: int = 0
    retries: int = 0
    waited_seconds: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """What to do with a response: ok, retry (after `wait` seconds if known), or stop with `kind` error."""

    action: str  # ok|retry|auth|error|malformed|exhausted
    reason: str = ""
    wait: float | None = None


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max((when - dt.datetime.now(dt.timezone.utc)).total_seconds(), 0.0)


def default_verdict(response: Any) -> Verdict:
    status = response.status_code
    if status < 400:
        return Verdict("ok")
    text = _error_text(response)
    if status == 429 or status >= 500 or status == 408:
        return Verdict("retry", f"HTTP {status} {text}".strip(), retry_after_seconds(response.headers.get("Retry-After")))
    if status in (401, 403):
        return Verdict("auth", f"HTTP {status} {text}".strip())
    return Verdict("error", f"HTTP {status} {text}".strip())


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("status") or "")[:300]
    return str(body)[:200]


class Http:
    """requests with timeouts and retries: 429/5xx/timeouts back off (honouring Retry-After), auth errors stop.

    `before_request` lets the orchestration layer take a rate-limit slot per
    request (Prefect's `rate_limit`) without this module knowing Prefect.
    """

    def __init__(self, source: str, account: str, *, timeout: float = 60.0, max_attempts: int = 6,
                 backoff: float = 1.0, max_wait: float = 900.0, sleep: Callable[[float], None] = time.sleep,
                 before_request: Callable[[], None] | None = None):
        import requests

        self.source, self.account = source, account
        self.timeout, self.max_attempts, self.backoff, self.max_wait = timeout, max_attempts, backoff, max_wait
        self.sleep, self.before_request = sleep, before_request
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "campaignflow-ingest/0.1"
        self.stats = HttpStats()

    def fail(self, cls: type[SourceError], what: str) -> SourceError:
        return cls(self.source, self.account, what)

    def request(self, method: str, url: str, *, verdict: Callable[[Any], Verdict] = default_verdict,
                what: str = "request", **kwargs: Any) -> Any:
        import requests

        last = ""
        for attempt in range(1, self.max_attempts + 1):
            if self.before_request:
                self.before_request()
            self.stats.requests += 1
            wait: float | None = None
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                last = f"{exc.__class__.__name__} calling {_short(url)}"
            else:
                v = verdict(response)
                if v.action == "ok":
                    return response
                if v.action == "auth":
                    raise self.fail(AuthError, f"{what} was refused ({v.reason}); check the credentials and the "
                                               f"account's permissions")
                if v.action == "malformed":
                    raise self.fail(MalformedResponse, f"{what}: {v.reason}")
                if v.action == "error":
                    raise self.fail(SourceError, f"{what} failed ({v.reason})")
                if v.action == "exhausted":  # a quota that only resets later: waiting here would not help
                    raise self.fail(RetriesExhausted, f"{what}: {v.reason}; the next run continues from the same cursor")
                last, wait = v.reason, v.wait
            if attempt == self.max_attempts:
                break
            if wait is None:
                wait = min(self.backoff * 2 ** (attempt - 1), 60.0) * (0.5 + random.random() / 2)
            if wait > self.max_wait:
                raise self.fail(RetriesExhausted, f"{what} is throttled ({last}); the platform asks to wait "
                                                  f"{wait / 60:.0f} min, longer than this run waits; the next run continues")
            self.stats.retries += 1
            self.stats.waited_seconds += wait
            self.sleep(wait)
        raise self.fail(RetriesExhausted, f"{what} still failing after {self.max_attempts} attempts ({last}); "
                                          "the next run continues from the same cursor")


def _short(url: str) -> str:
    return url.split("?", 1)[0]


def parse_json(http: Http, response: Any, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        snippet = response.text[:80].replace("\n", " ")
        raise http.fail(MalformedResponse, f"{what} is not JSON (starts with {snippet!r})") from None


def number(http: Http, value: Any, what: str, integer: bool = False) -> float | int:
    """A platform number (int64 travels as a JSON string) as int or float; '' and null are 0."""
    if value is None or value == "":
        return 0
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise http.fail(MalformedResponse, f"{what} is {value!r}, not a number") from None
    if as_float != as_float or as_float in (float("inf"), float("-inf")):
        raise http.fail(MalformedResponse, f"{what} is {value!r}, not a number")
    if integer:
        if not as_float.is_integer():
            raise http.fail(MalformedResponse, f"{what} is {value!r}, not a whole number")
        return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else int(as_float)
    return as_float


def day(http: Http, value: Any, what: str) -> str:
    """A date as ISO text; accepts YYYY-MM-DD and GA4's YYYYMMDD."""
    text = str(value or "")
    if len(text) == 8 and text.isdigit():
        text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise http.fail(MalformedResponse, f"{what} is {value!r}, not a date") from None


def date_slices(since: dt.date, until: dt.date, days: int) -> list[tuple[dt.date, dt.date]]:
    out = []
    start = since
    while start <= until:
        end = min(start + dt.timedelta(days=days - 1), until)
        out.append((start, end))
        start = end + dt.timedelta(days=1)
    return out


@dataclass(frozen=True)
class Part:
    since: dt.date | None
    until: dt.date | None
    weight: int = 1
    file: Path | None = None

    def __str__(self) -> str:
        return self.file.name if self.file else f"{self.since}..{self.until}" if self.since else "all rows"


class Connector:
    """One platform. Subclasses set the class attributes and implement `pages`."""

    kind: ClassVar[str]
    default_base_url: ClassVar[str] = ""
    default_lookback_days: ClassVar[int] = 0
    slice_days: ClassVar[int] = 31
    # Credential fields: every name in `required` must be present (one of each tuple of alternatives).
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()
    # Does the platform need a date window? (csv exports are read whole unless one is given.)
    windowed: ClassVar[bool] = True

    def __init__(self, config: SourceConfig, credentials: Mapping[str, str], http: Http):
        self.config, self.credentials, self.http = config, dict(credentials), http
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")

    def parts(self, since: dt.date | None, until: dt.date | None) -> list["Part"]:
        """The run's units of work (date slices; files for csv); their weights drive the progress bar."""
        if since is None or until is None:
            return [Part(since, until)]
        return [Part(a, b, (b - a).days + 1) for a, b in date_slices(since, until, self.slice_days)]

    def pages(self, part: "Part") -> Iterator[list[tuple]]:
        """Pages of rows, each row a tuple in ROW_FIELDS order."""
        raise NotImplementedError

    def describe(self, what: str) -> str:
        return what


def dumps_compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
