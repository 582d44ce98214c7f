"""The one small interface every platform connector implements, and the HTTP client they share.

A connector turns a date window into pages of store-shaped rows
(`MetricRow`). It never touches the store: `campaignflow.ingest` spools its
pages, maps them to campaigns and merges them in one transaction. A connector
declares everything about its platform in its own module (kind, source
options, credentials, limits), and registers itself with `@register`; the
spec's source validation, the Prefect credentials block and the platform
limits are derived from those declarations.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, NamedTuple
from urllib.parse import quote

from pydantic import BaseModel, SecretStr

from campaignflow import settings
from campaignflow.errors import UserError


class MetricRow(NamedTuple):
    """One platform row: one ad (or ad group, or campaign) on one day. A NamedTuple, so a page of a
    million rows costs what tuples cost. A measure the source does not report is None (stored as NULL)."""

    date: str  # ISO date
    account: str
    platform_campaign: str  # the platform's campaign id (or its name where it has no id)
    ad_group: str
    ad: str
    platform_campaign_name: str
    impressions: int | None
    clicks: int | None
    spend: float | None
    conversions: float | None
    conversion_value: float | None
    currency: str


MEASURES = ("impressions", "clicks", "spend", "conversions", "conversion_value")


class SourceError(UserError):
    """A source run stopped; the message names the source, the account and what was wrong (secrets redacted)."""

    def __init__(self, source: str, account: str, what: str, secrets: Iterable[str] = ()):
        what = redact(what, secrets)
        self.source, self.account, self.what = source, account, what
        where = f"source {source!r}" + (f" (account {account})" if account else "")
        super().__init__(f"{where}: {what}. Nothing was written and the cursor did not move.")


class AuthError(SourceError):
    """401/403 or a platform's 'token invalid / no permission' error: retrying will not help."""


class MalformedResponse(SourceError):
    """The platform answered with something that is not its documented format."""


class RetriesExhausted(SourceError):
    """Throttled or failing for longer than this run may wait: worth trying again later.

    What to run next depends on the run (the cursor's next run, or the same backfill window), so
    `campaignflow.ingest.with_next_step` says it, not this module."""


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
    metrics: dict[str, str] = field(default_factory=dict)  # ga4: GA4 metric -> the measure it counts as
    currency: str = ""  # used when the platform does not say
    first_day: dt.date | None = None  # where the very first run starts (earliest campaign start)
    schedule: str | None = None
    rules: list[MappingRule] = field(default_factory=list)
    campaigns: list[str] = field(default_factory=list)


@dataclass
class HttpStats:
    requests: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Verdict:
    """What to do with a response: ok, retry (after `wait` seconds if known), or stop with `kind` error."""

    action: str  # ok|retry|auth|error|malformed|exhausted
    reason: str = ""
    wait: float | None = None  # what the platform asked for
    min_wait: float = 0.0  # when it asked for nothing: back off from here, doubling per attempt


_SECRET_PARAM = re.compile(r"(?i)\b(access_token|refresh_token|id_token|client_secret|developer[_-]token|api[_-]?key|"
                           r"password)=([^&\s\"'<>]+)")
_URL_KEY = re.compile(r"(?i)([?&](?:key|token|sig|signature)=)[^&\s\"'<>]+")  # only as URL parameters: `key=` is common
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secrets, nor anything that looks like a token in a URL or an Authorization header.

    The one place every error text passes through before it is shown, stored or handed to Prefect.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "[redacted]")
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=[redacted]", text)
    text = _URL_KEY.sub(lambda m: f"{m.group(1)}[redacted]", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)


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


# One source run may take as long in all (requests, retries, waits) as CAMPAIGNFLOW_INGEST_MAX_MINUTES says.
MAX_MINUTES_ENV = settings.variable("ingest_max_minutes")
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # a report page that takes longer is retried (or the cap ends the run)


def max_seconds_from_env() -> float:
    return settings.get().ingest_max_minutes * 60


def duration(seconds: float) -> str:
    """A wait as people say it: 45 s, 3 min, 1 h 5 min."""
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class Http:
    """requests with timeouts and retries (tenacity): 429/5xx/timeouts/cut-off answers back off (honouring Retry-After),
    auth errors stop, and the whole source run stays within a time cap (`max_seconds`).

    `before_request` lets the orchestration layer take a rate-limit slot per request (Prefect's
    `rate_limit`) without this module knowing Prefect; `on_notice` hears about each retry and wait, so
    the CLI and the Prefect log can show them. `sleep` and `clock` are injectable for tests.
    """

    def __init__(self, source: str, account: str, *, timeout: float = READ_TIMEOUT, max_attempts: int = 6,
                 backoff: float = 1.0, max_seconds: float | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, before_request: Callable[[], None] | None = None,
                 on_notice: Callable[[str], None] | None = None):
        import requests

        self.source, self.account = source, account
        self.timeout, self.max_attempts, self.backoff = timeout, max_attempts, backoff
        self.max_seconds = max_seconds_from_env() if max_seconds is None else max_seconds
        self.sleep, self.clock, self.before_request, self.on_notice = sleep, clock, before_request, on_notice
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "campaignflow-ingest/0.1"
        self.stats = HttpStats()
        self.secrets: set[str] = set()  # credential values: redacted from every error this client builds
        self.started: float | None = None

    def fail(self, cls: type[SourceError], what: str) -> SourceError:
        return cls(self.source, self.account, what, self.secrets)

    def add_secrets(self, *values: str) -> None:
        self.secrets.update(v for v in values if v)

    def remaining(self) -> float:
        """Seconds left of this source run's time cap (counted from its first request)."""
        if self.started is None:
            return self.max_seconds
        return self.max_seconds - (self.clock() - self.started)

    def _cap(self) -> str:
        return f"a source run's cap of {duration(self.max_seconds)} ({MAX_MINUTES_ENV})"

    def pause(self, seconds: float, why: str, asked: bool = True) -> None:
        """Wait before the next call, within the time cap; a wait beyond it stops the run now.

        `asked`: the platform asked for this wait (else it is our own backoff).
        """
        self._allow_wait(seconds, why, asked)
        self.sleep(seconds)

    def _allow_wait(self, seconds: float, why: str, asked: bool) -> None:
        """Stop the run now if a wait would go past the time cap, else say that it waits."""
        if self.started is None:
            self.started = self.clock()
        left = self.remaining()
        if seconds > left and asked:
            retry_at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M UTC")
            raise self.fail(RetriesExhausted, f"{why}; the platform asks to wait {duration(seconds)}, more than the "
                                              f"{duration(left)} left of {self._cap()}; the source can be read "
                                              f"again after {retry_at}")
        if seconds > left:
            raise self.fail(RetriesExhausted, f"{why}; the next attempt would go past {self._cap()}, so the run "
                                              "stops here")
        self.notice(f"{why}; waiting {duration(seconds)}")

    def notice(self, text: str) -> None:
        if self.on_notice:
            self.on_notice(redact(f"{self.source}: {text}", self.secrets))

    def _backoff(self, state: Any) -> float:
        """The wait before the next attempt: what the platform asked for; else, doubling per attempt, from the
        platform's minimum when it throttled without saying how long, or from `backoff` with jitter (at most 60 s)."""
        failed: _Retry = state.outcome.exception()
        if failed.wait is not None:
            return failed.wait
        if failed.min_wait:
            return failed.min_wait * 2 ** (state.attempt_number - 1)
        return min(self.backoff * 2 ** (state.attempt_number - 1), 60.0) * (0.5 + random.random() / 2)

    def request(self, method: str, url: str, *, verdict: Callable[[Any], Verdict] = default_verdict,
                what: str = "request", **kwargs: Any) -> Any:
        """The response once the verdict says ok; retried (tenacity) while it says retry, within `max_attempts`
        and the time cap; any other verdict stops the run with its error."""
        import tenacity  # imported when a platform is called, not with the spec

        if self.started is None:
            self.started = self.clock()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            failed: _Retry = state.outcome.exception()
            self._allow_wait(state.upcoming_sleep, f"{what}: {failed.reason}; retry {state.attempt_number + 1} of "
                                                   f"{self.max_attempts}", failed.asked)
            self.stats.retries += 1

        def gave_up(state: tenacity.RetryCallState) -> None:
            raise self.fail(RetriesExhausted, f"{what} still failing after {self.max_attempts} attempts "
                                              f"({state.outcome.exception().reason})")

        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.max_attempts), wait=self._backoff,
                                     retry=tenacity.retry_if_exception_type(_Retry), before_sleep=before_sleep,
                                     sleep=self.sleep, retry_error_callback=gave_up)
        last = ""
        for attempt in retrying:
            with attempt:
                left = self.remaining()
                if left <= 0:
                    raise self.fail(RetriesExhausted, f"{what} stopped after {attempt.retry_state.attempt_number - 1} "
                                                      f"attempt(s) ({last or 'slow answers'}): {self._cap()} is used up")
                try:
                    return self._attempt(method, url, verdict, what, left, kwargs)
                except _Retry as failed:
                    last = failed.reason
                    raise
        raise AssertionError("unreachable: tenacity either returns, retries or gives up")  # pragma: no cover

    def _attempt(self, method: str, url: str, verdict: Callable[[Any], Verdict], what: str, left: float,
                 kwargs: dict[str, Any]) -> Any:
        """One request and its verdict: the response, a `_Retry`, or the run's error."""
        if self.before_request:
            self.before_request()
        self.stats.requests += 1
        try:
            response = self.session.request(method, url, timeout=(min(CONNECT_TIMEOUT, left), min(self.timeout, left)),
                                            **kwargs)
        except _transport_errors() as exc:
            raise _Retry(_transport_problem(exc, url, min(self.timeout, left))) from None
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
            raise self.fail(RetriesExhausted, f"{what}: {v.reason}")
        raise _Retry(v.reason, v.wait, v.min_wait)


class _Retry(Exception):
    """One failed attempt worth repeating: a transport problem, or a verdict of retry."""

    def __init__(self, reason: str, wait: float | None = None, min_wait: float = 0.0):
        super().__init__(reason)
        self.reason, self.wait, self.min_wait = reason, wait, min_wait

    @property
    def asked(self) -> bool:
        """Did the platform itself ask for a wait (its throttle), rather than our own backoff?"""
        return self.wait is not None or bool(self.min_wait)


def _transport_problem(exc: Exception, url: str, timeout: float) -> str:
    import requests

    if isinstance(exc, requests.Timeout) and not isinstance(exc, requests.ConnectTimeout):
        return f"no answer from {_short(url)} within {duration(timeout)} ({exc.__class__.__name__})"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return f"the answer from {_short(url)} was cut off mid-transfer ({exc.__class__.__name__})"
    return f"{exc.__class__.__name__} calling {_short(url)}"


def _transport_errors() -> tuple[type[BaseException], ...]:
    import requests

    # A cut-off body (shorter than its Content-Length, or chunked without the last chunk) is a transport
    # failure like a dropped connection: the same request may well succeed on the next try.
    return (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError)


def _short(url: str) -> str:
    return url.split("?", 1)[0]


def parse_json(http: Http, response: Any, what: str) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):
        snippet = response.text[:80].replace("\n", " ")
        raise http.fail(MalformedResponse, f"{what} is not JSON (starts with {snippet!r})") from None


# Larger than any real day of one ad; also keeps sums far from float overflow in the KPI math.
MAX_VALUE = 1e15
MAX_TEXT = 1000


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def number(http: Http, value: Any, what: str, integer: bool = False) -> float | int:
    """A platform number (int64 travels as a JSON string) as int or float; '' and null are 0.

    Counts (`integer`) are whole and not negative; every value is finite and below MAX_VALUE.
    """
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not a number")
    try:
        as_float = float(value)
    except (ValueError, OverflowError):
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not a number") from None
    if not math.isfinite(as_float) or abs(as_float) > MAX_VALUE:
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not a number a platform reports "
                                           f"(beyond {MAX_VALUE:.0e})")
    if integer:
        if not as_float.is_integer() or as_float < 0:
            raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not a whole number of 0 or more")
        return int(value) if isinstance(value, str) and value.isdigit() else int(as_float)
    return as_float


def text(http: Http, value: Any, what: str, default: str = "") -> str:
    """A platform id, name or code as text (ids may arrive as numbers); anything else is malformed."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not text")
    result = str(value)
    if len(result) > MAX_TEXT or "\x00" in result:
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not a name or id a platform reports")
    try:
        result.encode("utf-8")
    except UnicodeEncodeError:
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not valid text") from None
    return result


def currency(http: Http, value: Any, what: str, default: str) -> str:
    code = text(http, value, what) or default
    if code and not re.fullmatch(r"[A-Z]{3}", code):
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not a currency code such as EUR")
    return code


def get(value: Any, *keys: str) -> Any:
    """value[k1][k2]... through JSON objects; None when a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def day(http: Http, value: Any, what: str, within: "Part | None" = None) -> str:
    """A date as ISO text; accepts YYYY-MM-DD and GA4's YYYYMMDD; inside the requested window when given."""
    raw = value if isinstance(value, str) else ""
    if len(raw) == 8 and raw.isdigit():
        raw = f"{raw[:4]}-{raw[4:6]}-{raw[6:]}"
    try:
        date = dt.date.fromisoformat(raw) if len(raw) == 10 else None
    except ValueError:
        date = None
    if date is None:
        raise http.fail(MalformedResponse, f"{what} is {_show(value)}, not a date")
    if within is not None and within.since and within.until and not within.since <= date <= within.until:
        raise http.fail(MalformedResponse, f"{what} is {date}, outside the window asked for ({within})")
    return date.isoformat()


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


@dataclass(frozen=True)
class Limits:
    """How hard a platform may be read, across all workers: source runs at once, and requests per second.
    The orchestration layer creates its limits from these (and the environment may override them)."""

    concurrency: int
    requests_per_second: float


@dataclass(frozen=True)
class AccountFormat:
    pattern: str  # the whole account must match
    what: str  # as an error names it, e.g. "a Meta ad account id such as act_1234567890"


@dataclass(frozen=True)
class SourceOptions:
    """What a source of one kind takes in the spec (`measurement.sources[]`), and its defaults.

    An option left None is one this kind does not take; the spec refuses it on such a source."""

    summary: str  # what the kind reads, for the spec's field description
    account_label: str  # what `account` is, for the spec's field description
    account: AccountFormat | None = None  # None: any label
    base_url: str = ""  # the API's address, ending in its version: the default, and the example for an override
    lookback_days: int = 0  # days re-read on every run because the platform revises them
    columns: tuple[str, ...] | None = None  # reads `path` (files), with these `columns:` to map
    metrics: Mapping[str, str] | None = None  # the default `metrics:` (platform metric -> measure)
    conversion_actions: tuple[str, ...] | None = None  # the default `conversion_actions:`
    columns_hint: str = ""  # said when `columns:` is given to a source of this kind


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


class Connector:
    """One platform. A subclass declares its platform in class attributes, implements `pages`, and is
    registered with `campaignflow.connectors.register`, which refuses one that leaves a declaration out."""

    kind: ClassVar[str]
    options: ClassVar[SourceOptions]
    # The platform's limits; None only for a source that calls no platform (files). No default, so a new
    # connector cannot forget them and run unthrottled.
    limits: ClassVar[Limits | None]
    # The credential fields (SecretStr ones are secrets); the Prefect credentials block is derived from it.
    # Its `model_config` title names the block type. None: the source needs no credentials.
    credentials_model: ClassVar[type[BaseModel] | None] = None
    # Every name in `required` must be present (one of each tuple of alternatives).
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()
    slice_days: ClassVar[int] = 31
    # Does the platform need a date window? (csv exports are read whole unless one is given.)
    windowed: ClassVar[bool] = True

    def __init__(self, config: SourceConfig, credentials: Mapping[str, str], http: Http):
        self.config, self.credentials, self.http = config, dict(credentials), http
        self.base_url = (config.base_url or self.options.base_url).rstrip("/")
        public = self.public_credential_fields()
        http.add_secrets(*(v for k, v in self.credentials.items() if k not in public and isinstance(v, str)))

    @classmethod
    def public_credential_fields(cls) -> frozenset[str]:
        """Credential fields that identify rather than authorise (ids, URLs): kept readable in error texts.
        Anything else handed in as a credential is treated as a secret."""
        if cls.credentials_model is None:
            return frozenset()
        return frozenset(n for n, f in cls.credentials_model.model_fields.items() if not _is_secret(f.annotation))

    @classmethod
    def source_problems(cls, source: Any) -> list[str]:
        """What is wrong with a spec source of this kind beyond what `SourceOptions` says, as `field: message`."""
        return []

    def unknown_measures(self) -> frozenset[str]:
        """The measures a row of this source may leave unknown (None, stored as NULL): those it does not report.
        Every other measure must have a value; `campaignflow.ingest` refuses a row without one."""
        return frozenset()

    def warnings(self) -> list[str]:
        """What the run should say although it succeeded (e.g. actions seen, none counted as conversions)."""
        return []

    def parts(self, since: dt.date | None, until: dt.date | None) -> list["Part"]:
        """The run's units of work (date slices; files for csv); their weights drive the progress bar."""
        if since is None or until is None:
            return [Part(since, until)]
        return [Part(a, b, (b - a).days + 1) for a, b in date_slices(since, until, self.slice_days)]

    def pages(self, part: "Part") -> Iterator[list[MetricRow]]:
        """Pages of rows."""
        raise NotImplementedError


def dumps_compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
