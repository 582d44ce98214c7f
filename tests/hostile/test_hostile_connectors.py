"""Hostile inputs for the HTTP connectors (issue 13, section 6 and the API part of section 7).

Every test runs the real connectors against tests/platform_servers.py, which answers in each
platform's own format, and checks what a user sees: the numbers stored, the error text, the
run record. Waits go through a SleepLog (nothing sleeps for minutes); its clock moves by them.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from campaignflow import db, ingest, metrics, settings
from campaignflow.connectors.base import Http, RetriesExhausted, SourceError, max_seconds_from_env, redact
from campaignflow.errors import SpecInvalid, UserError
from campaignflow.spec import validate_spec_data
from conftest import cli, future_spec
from ingest_helpers import API_PATH, CREDS, SleepLog, register, rows, run, runs, start_of
from invariants import assert_refused, store_row_counts
from platform_servers import DEVELOPER_TOKEN, TOKEN, PlatformServer, days, meta_row, meta_throttle

ACCOUNT = {"google_ads": "123-456-7890", "meta": "act_1234", "ga4": "312345678"}


@pytest.fixture
def server():
    with PlatformServer(meta_page_size=50) as srv:
        yield srv


def source(kind: str, server: PlatformServer, **kw) -> dict:
    return {"name": kind.replace("_", "-"), "kind": kind, "account": ACCOUNT[kind],
            "base_url": server.url + API_PATH[kind], **kw}


def store_url() -> str:
    return settings.get().store_url()


def meta_with_actions(date: dt.date, actions: list[tuple[str, str]], values: list[tuple[str, str]] = ()) -> dict:
    row = meta_row(date, "c-1", "Spring", "a1", 100, 10, 5.0)
    row["actions"] = [{"action_type": t, "value": v} for t, v in actions]
    if values:
        row["action_values"] = [{"action_type": t, "value": v} for t, v in values]
    return row


# -- 1. an answer cut off mid-transfer ----------------------------------------------------------

@pytest.mark.parametrize("how", ["length", "chunked"])
def test_cut_off_answer_is_retried_like_a_dropped_connection(home, server, how):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_row(start, "c-1", "Spring", "a1", 100, 10, 5.0, leads=1))
    server.cut_next("meta", how)

    result = run("meta", "meta", start, since=start)

    assert result.rows_written == 1 and result.retries == 1


def test_cut_off_answers_until_retries_run_out_fail_by_name_and_are_recorded(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.cut_next("meta", "chunked", times=3)

    with pytest.raises(RetriesExhausted) as err:
        run("meta", "meta", start, since=start, max_attempts=3)

    assert "source 'meta'" in str(err.value) and "cut off mid-transfer" in str(err.value)
    recorded = runs("meta")
    assert recorded[0]["status"] == "failed" and "cut off mid-transfer" in recorded[0]["error"]
    assert rows() == []


def test_cli_cut_off_answer_is_one_line_and_kpis_say_the_run_failed(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.cut_next("meta", "length", times=20)
    env = {"CAMPAIGNFLOW_META_ACCESS_TOKEN": TOKEN, "CAMPAIGNFLOW_INGEST_MAX_MINUTES": "0.03"}
    before = store_row_counts(store_url())

    result = cli("ingest", "meta", "--local", "--since", str(start), "--until", str(start), env=env)

    output = assert_refused(result, "source 'meta'", "cut off mid-transfer")
    assert "cut off mid-transfer (ChunkedEncodingError); retry 2 of 6; waiting" in output, "each retry is shown"
    after = store_row_counts(store_url())
    assert after["ingestionrun"] == before["ingestionrun"] + 1 and after["metricdaily"] == before["metricdaily"]
    report = cli("kpis", "acme-spring")
    assert report.returncode == 0, report.stderr
    assert "last run failed" in report.stdout and "cut off mid-transfer" in report.stdout


# -- 2. GA4: the spec chooses the metrics; an unreported measure is unknown, not 0 --------------

def ga4_sessions_row(date: dt.date, campaign: str, sessions: int, key_events: int, revenue: float) -> dict:
    return {"date": date.strftime("%Y%m%d"), "campaign": campaign,
            "metrics": {"sessions": sessions, "keyEvents": key_events, "totalRevenue": revenue}}


def test_ga4_property_without_ads_link_is_read_with_the_metrics_the_spec_names(store_url, server):
    settings.get().home_dir()  # the SQLite store's folder
    server.ga4_ads_linked = False
    metrics_ = {"sessions": "clicks", "keyEvents": "conversions", "totalRevenue": "conversion_value"}
    data = register([source("ga4", server, metrics=metrics_)], url=store_url)
    start = start_of(data)
    for d in days(start, 3):
        server.ga4.append(ga4_sessions_row(d, "spring", 120, 4, 200.0))

    result = run("ga4", "ga4", start + dt.timedelta(days=2), since=start, url=store_url)

    assert result.rows_written == 3
    asked = [x["name"] for x in server.requests[-1]["body"]["metrics"]]
    assert asked == ["sessions", "keyEvents", "totalRevenue"]
    stored = rows(url=store_url, source="ga4")
    assert stored[0]["clicks"] == 120 and stored[0]["conversions"] == 4 and stored[0]["conversion_value"] == 200
    assert stored[0]["impressions"] is None and stored[0]["spend"] is None, "not reported is unknown, not 0"
    with db.session(store_url) as s:
        report = metrics.campaign_report(s, "acme-spring")
    assert report["to_date"]["clicks"] == 360 and report["to_date"]["impressions"] is None


def test_ga4_default_metrics_exist_on_every_property(home, server):
    server.ga4_ads_linked = False
    data = register([source("ga4", server)])
    start = start_of(data)
    server.ga4.append(ga4_sessions_row(start, "spring", 120, 4, 200.0))
    result = run("ga4", "ga4", start, since=start)
    assert result.rows_written == 1
    assert rows(source="ga4")[0]["conversions"] == 4 and rows(source="ga4")[0]["clicks"] is None


def test_kpis_say_not_reported_instead_of_zero(home, server):
    server.ga4_ads_linked = False
    data = register([source("ga4", server, metrics={"sessions": "clicks", "keyEvents": "conversions"})])
    start = start_of(data)
    for d in days(start, 3):
        server.ga4.append(ga4_sessions_row(d, "spring", 100, 5, 0))
    run("ga4", "ga4", start + dt.timedelta(days=2), since=start)

    with db.session() as s:
        report = metrics.campaign_report(s, "acme-spring")
    assert report["to_date"]["clicks"] == 300 and report["to_date"]["conversions"] == 15
    assert report["to_date"]["impressions"] is None and report["to_date"]["ctr"] is None
    assert report["budget"]["status"] == "spend not reported"
    by_kpi = {g["kpi"]: g["status"] for g in report["goals"]}
    assert all(status == "not reported" for kpi, status in by_kpi.items() if kpi in ("impressions", "spend", "cpa",
                                                                                      "ctr", "cpc", "cpm"))
    shown = cli("kpis", "acme-spring")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "impressions not reported" in shown.stdout and "spend not reported" in shown.stdout
    assert "300 clicks" in shown.stdout


def test_kpis_sum_known_values_across_sources_and_skip_unknown_ones(home, server):
    server.ga4_ads_linked = False
    data = register([source("ga4", server, metrics={"keyEvents": "conversions"}), source("meta", server)])
    start = start_of(data)
    server.ga4.append(ga4_sessions_row(start, "spring", 0, 5, 0))
    server.meta.append(meta_row(start, "c-1", "Spring", "a1", 1000, 40, 20.0, leads=3))
    run("ga4", "ga4", start, since=start)
    run("meta", "meta", start, since=start)
    with db.session() as s:
        report = metrics.campaign_report(s, "acme-spring")
    assert report["to_date"]["impressions"] == 1000 and report["to_date"]["conversions"] == 8
    assert report["to_date"]["spend"] == 20.0


@pytest.mark.parametrize("metrics_, problem", [
    ({"sessions": "click"}, "measurement.sources[0].metrics.sessions: 'click' is not a measure; map it onto one of "
                            "impressions, clicks"),
    ({"sessions": "clicks", "totalUsers": "clicks"}, "measurement.sources[0].metrics.totalUsers: sessions already "
                                                     "maps onto clicks"),
    ({"ses sions": "clicks"}, "measurement.sources[0].metrics.ses sions: not a GA4 metric name"),
])
def test_ga4_metrics_spec_errors_name_the_field_and_the_fix(metrics_, problem):
    data = future_spec()
    data["measurement"] = {"sources": [{"name": "ga", "kind": "ga4", "account": "99", "metrics": metrics_}]}
    with pytest.raises(SpecInvalid) as err:
        validate_spec_data(data)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_metrics_on_a_non_ga4_source_is_refused():
    data = future_spec()
    data["measurement"] = {"sources": [{"name": "m", "kind": "meta", "account": "act_1", "metrics": {"a": "clicks"}}]}
    with pytest.raises(SpecInvalid) as err:
        validate_spec_data(data)
    assert "measurement.sources[0].metrics: only ga4 sources take `metrics` (GA4 metric: measure)" in err.value.problems


# -- 3. Meta: pixel conversions count, aliases never add up, "none counted" is said --------------

def test_meta_pixel_conversions_count_by_default(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_with_actions(start, [("link_click", "10"), ("offsite_conversion.fb_pixel_lead", "3"),
                                                 ("offsite_conversion.fb_pixel_purchase", "2")],
                                         [("offsite_conversion.fb_pixel_purchase", "99.50")]))
    result = run("meta", "meta", start, since=start)
    stored = rows(source="meta")[0]
    assert stored["conversions"] == 5 and stored["conversion_value"] == pytest.approx(99.5)
    assert result.warnings == []


def test_meta_one_purchase_reported_under_four_aliases_counts_once(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    aliases = ["purchase", "omni_purchase", "offsite_conversion.fb_pixel_purchase", "onsite_web_purchase"]
    server.meta.append(meta_with_actions(start, [(a, "2") for a in aliases] + [("lead", "1")],
                                         [(a, "80.00") for a in aliases]))
    run("meta", "meta", start, since=start)
    stored = rows(source="meta")[0]
    assert stored["conversions"] == 3, "2 purchases (one alias) + 1 lead, never the 4 aliases summed"
    assert stored["conversion_value"] == pytest.approx(80.0)


def test_meta_omni_alias_wins_when_the_aliases_disagree(home, server):
    data = register([source("meta", server, conversion_actions=["purchase"])])
    start = start_of(data)
    server.meta.append(meta_with_actions(start, [("offsite_conversion.fb_pixel_purchase", "2"),
                                                 ("omni_purchase", "3")]))
    run("meta", "meta", start, since=start)
    assert rows(source="meta")[0]["conversions"] == 3, "omni_purchase is what Ads Manager shows as Purchases"


def test_meta_actions_none_of_which_count_are_said_in_summary_and_run_record(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_with_actions(start, [("link_click", "10"), ("offsite_conversion.custom.7781", "4")]))

    result = run("meta", "meta", start, since=start)

    assert rows(source="meta")[0]["conversions"] == 0
    assert "offsite_conversion.custom.7781" in result.summary() and "link_click" in result.summary()
    assert "none of them counts as a conversion" in result.summary()
    assert "offsite_conversion.custom.7781" in runs("meta")[0]["warnings"]


# -- 4. the Meta token stays out of URLs, errors, the store and the console ----------------------

def test_meta_token_travels_in_a_header_not_the_url(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_row(start, "c-1", "Spring", "a1", 100, 10, 5.0))
    run("meta", "meta", start, since=start)
    call = next(r for r in server.requests if r["platform"] == "meta")
    assert "access_token" not in call["query"] and TOKEN not in json.dumps(call["query"])
    assert call["headers"]["Authorization"] == f"Bearer {TOKEN}"


def echo_page(token: str) -> str:
    """A proxy error page that echoes the request it got, headers included."""
    return (f"<html><body><h1>404 Not Found</h1><pre>GET /v25.0/act_1234/insights?level=ad&access_token={token}"
            f"&limit=500\nAuthorization: Bearer {token}\nX-Debug: {token}</pre></body></html>")


def test_an_error_that_echoes_the_token_is_redacted_on_console_and_in_the_store(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.fail_next("meta", 404, echo_page(TOKEN))
    env = {"CAMPAIGNFLOW_META_ACCESS_TOKEN": TOKEN}

    result = cli("ingest", "meta", "--local", "--since", str(start), "--until", str(start), env=env)

    output = assert_refused(result, "source 'meta'", "HTTP 404")
    assert TOKEN not in output and "[redacted]" in output
    assert runs("meta")[0]["status"] == "failed" and TOKEN not in runs("meta")[0]["error"]
    shown = cli("kpis", "acme-spring")
    assert "last run failed" in shown.stdout and TOKEN not in shown.stdout + shown.stderr


def test_google_ads_developer_token_echoed_by_the_platform_is_redacted(home, server):
    data = register([source("google_ads", server)])
    server.fail_next("google_ads", 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                                   "message": f"developer-token {DEVELOPER_TOKEN} is not valid for "
                                                              f"customer 1234567890 (token {TOKEN})"}})
    with pytest.raises(SourceError) as err:
        run("google-ads", "google_ads", start_of(data), since=start_of(data))
    assert DEVELOPER_TOKEN not in str(err.value) and TOKEN not in str(err.value)
    assert DEVELOPER_TOKEN not in runs("google-ads")[0]["error"]


def test_redact_knows_the_generic_shapes_of_secrets():
    text = ("GET https://graph.facebook.com/v25.0/act_1/insights?fields=x&access_token=EAABsecret123&limit=5 "
            "Authorization: Bearer ya29.a0AfH6SM; refresh_token=1//0gabc client_secret=GOCSPX-xyz")
    clean = redact(text)
    for secret in ("EAABsecret123", "ya29.a0AfH6SM", "1//0gabc", "GOCSPX-xyz"):
        assert secret not in clean
    assert "fields=x" in clean and "limit=5" in clean and "act_1" in clean
    assert redact("token s3cr%2Fet and s3cr/et", ["s3cr/et"]) == "token [redacted] and [redacted]"
    assert redact("GET /v1/x?key=AIzaSy0&alt=json") == "GET /v1/x?key=[redacted]&alt=json"
    assert redact("the same key=(2027-01-01, c-1) twice") == "the same key=(2027-01-01, c-1) twice", "not a secret"


# -- 5. a hanging platform: each retry is shown, the source's total time is capped ---------------

def test_hanging_platform_shows_each_retry_and_stops_at_the_cap(home, server):
    data = register([source("ga4", server)])
    for _ in range(6):
        server.stall_next("ga4", 2.0)
    notes: list[str] = []
    sleeps = SleepLog()
    http = Http("ga4", "", timeout=0.2, max_seconds=0.5, backoff=0.001, sleep=sleeps, clock=sleeps.clock)

    with pytest.raises(RetriesExhausted) as err:
        ingest.run_source("ga4", start_of(data), start_of(data), http=http, credentials=CREDS["ga4"],
                          progress=lambda e: e.note and notes.append(e.note))

    message = str(err.value)
    assert "source 'ga4'" in message and "cap of 0.5 s (CAMPAIGNFLOW_INGEST_MAX_MINUTES)" in message
    assert notes and all("no answer" in n and "retry" in n and "waiting" in n for n in notes)
    assert len(notes) == http.stats.retries
    assert runs("ga4")[0]["status"] == "failed"


def test_backoff_that_would_pass_the_cap_stops_the_run(home, server):
    data = register([source("ga4", server)])
    server.fail_next("ga4", 503, {"error": {"code": 503, "message": "unavailable", "status": "UNAVAILABLE"}}, times=6)
    sleeps = SleepLog()
    http = Http("ga4", "", backoff=30.0, max_seconds=60.0, sleep=sleeps, clock=sleeps.clock)
    with pytest.raises(RetriesExhausted, match="would go past a source run's cap of 60 s"):
        ingest.run_source("ga4", start_of(data), start_of(data), http=http, credentials=CREDS["ga4"])
    assert sum(sleeps) <= 60.0


def test_time_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("CAMPAIGNFLOW_INGEST_MAX_MINUTES", raising=False)
    assert max_seconds_from_env() == 600
    monkeypatch.setenv("CAMPAIGNFLOW_INGEST_MAX_MINUTES", "45")
    assert max_seconds_from_env() == 45 * 60
    monkeypatch.setenv("CAMPAIGNFLOW_INGEST_MAX_MINUTES", "soon")
    with pytest.raises(UserError, match="CAMPAIGNFLOW_INGEST_MAX_MINUTES='soon' is not a number of minutes"):
        max_seconds_from_env()


# -- 6. Meta throttling: minutes, not seconds, within the cap -----------------------------------

def throttled(code: int, regain_minutes: float = 0) -> tuple[int, dict, dict]:
    status, body, headers = meta_throttle(code)
    usage = json.loads(headers["x-business-use-case-usage"])
    usage["1234"][0]["estimated_time_to_regain_access"] = regain_minutes
    headers["x-business-use-case-usage"] = json.dumps(usage)
    return status, body, headers


@pytest.mark.parametrize("code", [4, 17, 32, 613, 80000, 80004, 80014])
def test_meta_throttle_honours_estimated_time_to_regain_access(home, server, code):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_row(start, "c-1", "Spring", "a1", 100, 10, 5.0))
    server.fail_next("meta", *throttled(code, regain_minutes=3))
    sleeps = SleepLog()
    result = run("meta", "meta", start, since=start, sleeps=sleeps)
    assert result.rows_written == 1 and sleeps == [180.0]


def test_meta_throttle_without_a_stated_wait_backs_off_in_minutes(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_row(start, "c-1", "Spring", "a1", 100, 10, 5.0))
    server.fail_next("meta", *throttled(17, regain_minutes=0), times=2)
    sleeps = SleepLog()
    run("meta", "meta", start, since=start, sleeps=sleeps)
    assert sleeps == [60.0, 120.0]


def test_meta_throttle_longer_than_the_cap_fails_now_saying_when_to_retry(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.fail_next("meta", *throttled(80004, regain_minutes=30))
    sleeps = SleepLog()
    with pytest.raises(RetriesExhausted) as err:
        run("meta", "meta", start, since=start, sleeps=sleeps)
    assert sleeps == [] and len([r for r in server.requests if r["platform"] == "meta"]) == 1
    message = str(err.value)
    assert "code 80004" in message and "asks to wait 30 min" in message and "can be read again after" in message
    assert "cap of 10 min" in message


def test_meta_ad_account_usage_reset_time_is_honoured(home, server):
    data = register([source("meta", server)])
    start = start_of(data)
    server.meta.append(meta_row(start, "c-1", "Spring", "a1", 100, 10, 5.0))
    status, body, headers = throttled(613)
    headers["x-ad-account-usage"] = json.dumps({"acc_id_util_pct": 100, "reset_time_duration": 240})
    server.fail_next("meta", status, body, headers)
    sleeps = SleepLog()
    run("meta", "meta", start, since=start, sleeps=sleeps)
    assert sleeps == [240.0]


# -- 7. generated malformed API payloads: sane rows, or a named source error; the store untouched --

import math  # noqa: E402
import re  # noqa: E402

from hypothesis import HealthCheck, event, given, settings as hsettings, strategies as st  # noqa: E402

from campaignflow.connectors.base import MAX_VALUE  # noqa: E402

START = dt.date.fromisoformat(str(future_spec()["start"]))
DAY = START.isoformat()

leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30), st.floats(),
                 st.text(max_size=12))
garbage = st.recursive(leaf, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                        max_size=3), max_leaves=10)
numberish = st.one_of(st.integers(0, 10**6).map(str), st.integers(0, 10**6), st.floats(0, 1e6), garbage,
                      st.sampled_from(["", "1e308", "9" * 40, "-5", "12,50", "NaN", "Infinity", "0x1A", " 7 "]))
dateish = st.one_of(st.just(DAY), st.sampled_from(["2999-01-01", "0001-01-01", "2027-02-30", DAY.replace("-", "")]),
                    garbage)
textish = st.one_of(st.sampled_from(["c-1", "Spring", "(not set)"]), st.integers(0, 10**12), garbage,
                    st.just("x" * 5000), st.just("nul\x00byte"))
currencyish = st.one_of(st.just("EUR"), st.sampled_from(["", "eur", "EURO", "€"]), garbage)


def hostile_object(fields: dict, **required) -> st.SearchStrategy:
    """An object whose fields may each be missing; the whole object sometimes replaced by garbage."""
    return st.one_of(st.fixed_dictionaries(required, optional=fields), garbage)


meta_action = hostile_object({"value": numberish},
                             action_type=st.one_of(st.sampled_from(["purchase", "omni_purchase", "lead", "link_click"]),
                                                   garbage))
meta_payload = hostile_object({"paging": st.one_of(garbage, st.fixed_dictionaries(
    {"cursors": st.fixed_dictionaries({"after": textish}), "next": textish}))}, data=st.one_of(
    st.lists(hostile_object({"date_start": dateish, "campaign_id": textish, "campaign_name": textish,
                             "adset_id": textish, "ad_id": textish, "impressions": numberish, "clicks": numberish,
                             "spend": numberish, "account_currency": currencyish,
                             "actions": st.one_of(st.lists(meta_action, max_size=3), garbage),
                             "action_values": st.one_of(st.lists(meta_action, max_size=3), garbage)}), max_size=3),
    garbage))
gads_result = hostile_object({
    "campaign": hostile_object({"id": textish, "name": textish}), "adGroup": hostile_object({"id": textish}),
    "segments": hostile_object({"date": dateish}), "customer": hostile_object({"currencyCode": currencyish}),
    "metrics": hostile_object({"impressions": numberish, "clicks": numberish, "costMicros": numberish,
                               "conversions": numberish, "conversionsValue": numberish})})
gads_payload = st.one_of(st.lists(hostile_object({"results": st.one_of(st.lists(gads_result, max_size=3), garbage),
                                                  "error": garbage}), max_size=3), garbage)
ga4_value = hostile_object({"value": st.one_of(numberish, dateish, textish)})
ga4_payload = hostile_object({
    "rows": st.one_of(st.lists(hostile_object({"dimensionValues": st.one_of(
        st.tuples(hostile_object({"value": dateish}), hostile_object({"value": textish})).map(list), garbage),
        "metricValues": st.one_of(st.lists(ga4_value, min_size=2, max_size=2), garbage)}), max_size=3), garbage),
    "rowCount": numberish, "metadata": hostile_object({"currencyCode": currencyish})},
    dimensionHeaders=st.one_of(st.just([{"name": "date"}, {"name": "sessionCampaignName"}]), garbage),
    metricHeaders=st.one_of(st.just([{"name": "keyEvents"}, {"name": "totalRevenue"}]), garbage))

PROPERTY_SETTINGS = hsettings(max_examples=60, deadline=None, derandomize=True,
                              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_payload(kind: str, server: PlatformServer, payload) -> None:  # noqa: ANN001
    """Serve `payload` as the platform's 200 answer; the run succeeds with sane rows or fails by name."""
    name = kind.replace("_", "-")
    url = settings.get().store_url()
    if not store_row_counts(url).get("campaign"):
        register([source(kind, server)])
    before = store_row_counts(url)
    server.faults[kind].clear()
    server.fail_next(kind, 200, payload)
    try:
        run(name, kind, START, since=START, until=START, max_attempts=1)
    except SourceError as exc:  # MalformedResponse and friends: UserError, printed without a traceback
        assert str(exc).startswith(f"source {name!r}"), str(exc)
        after = store_row_counts(url)
        assert after.pop("ingestionrun") == before.pop("ingestionrun") + 1, "the failed run is recorded"
        assert after == before, "nothing else in the store changed"
        event(f"refused: {exc.__class__.__name__}")
        return
    event("stored")
    for r in rows(source=name):
        assert r["date"] == START
        for k in ("impressions", "clicks"):
            assert r[k] is None or (isinstance(r[k], int) and 0 <= r[k] <= MAX_VALUE), r
        for k in ("spend", "conversions", "conversion_value"):
            assert r[k] is None or (math.isfinite(r[k]) and abs(r[k]) <= MAX_VALUE), r
        assert isinstance(r["platform_campaign"], str) and len(r["platform_campaign"]) <= 1000
        assert re.fullmatch(r"([A-Z]{3})?", r["currency"]), r


@PROPERTY_SETTINGS
@given(payload=meta_payload)
def test_generated_meta_insights_payloads(home, server, payload):
    check_payload("meta", server, payload)


@PROPERTY_SETTINGS
@given(payload=gads_payload)
def test_generated_google_ads_search_stream_payloads(home, server, payload):
    check_payload("google_ads", server, payload)


@PROPERTY_SETTINGS
@given(payload=ga4_payload)
def test_generated_ga4_run_report_payloads(home, server, payload):
    check_payload("ga4", server, payload)
