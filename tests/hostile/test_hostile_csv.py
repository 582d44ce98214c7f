"""Hostile input for metric ingestion (issue 13, sections 2, 6 and 7): CSV exports a user or an attacker could
write, sources declared two ways, and the small untruths the CLI used to tell. Each bad input is refused with
a message naming the row and the column, never a traceback; the stored rows and the cursor stay as they were
and the failed run is recorded."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from campaignflow import db, ingest, metrics
from campaignflow import models as m
from campaignflow.errors import SpecInvalid, UserError
from conftest import cli, future_spec, write_spec
from ingest_helpers import API_PATH, cursor, meta_source, register, rows, run, runs, start_of
from invariants import assert_refused, store_row_counts
from platform_servers import TOKEN, PlatformServer, days, meta_row

HEADER = "date,campaign,ad_group,ad,impressions,clicks,spend,conversions,conversion_value,currency\n"


def sqlite_url(home) -> str:  # noqa: ANN001
    return f"sqlite:///{home / 'campaignflow.db'}"


def csv_campaign(tmp_path, **source) -> dt.date:  # noqa: ANN001
    """A campaign whose spec sits in tmp_path/spec with one CSV source `li` reading exports/ below it."""
    folder = tmp_path / "spec"
    (folder / "exports").mkdir(parents=True, exist_ok=True)
    data = register([{"name": "li", "kind": "csv", "path": "exports", "account": "li-main", **source}],
                    spec_dir=folder)
    return start_of(data)


def export(tmp_path, text: str | bytes, name: str = "week1.csv") -> None:  # noqa: ANN001
    path = tmp_path / "spec" / "exports" / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def good_rows(start: dt.date, n: int = 3) -> str:
    return "".join(f"{d},Spring,g1,a1,100,5,12.5,1,20,EUR\n" for d in days(start, n))


def refused_without_change(url: str, expected: tuple[str, ...], call) -> str:  # noqa: ANN001
    """`call` raises a UserError saying each expected text; the store is the same but for one failed run."""
    before = store_row_counts(url)
    with pytest.raises(UserError) as err:
        call()
    after = store_row_counts(url)
    assert after.pop("ingestionrun") == before.pop("ingestionrun", 0) + 1, "the failed run is recorded"
    assert after == before
    message = str(err.value)
    for text in expected:
        assert text in message, message
    return message


# -- section 2: a CSV metric file ----------------------------------------------------------------

def test_an_empty_export_is_refused(home, tmp_path):
    start = csv_campaign(tmp_path)
    export(tmp_path, HEADER + good_rows(start))
    ingest.run_source("li")
    export(tmp_path, "", "week2.csv")
    refused_without_change(sqlite_url(home), ("week2.csv is empty",), lambda: ingest.run_source("li"))
    assert runs("li")[0]["status"] == "failed" and "week2.csv is empty" in runs("li")[0]["error"]


@pytest.mark.parametrize("column,value", [("impressions", "99999999999999999999"), ("clicks", "3000000000"),
                                          ("impressions", "1e400")])
def test_a_count_too_large_for_the_store_is_refused(store_url, tmp_path, column, value):
    start = csv_campaign(tmp_path)
    cells = {"impressions": "100", "clicks": "5", column: value}
    export(tmp_path, HEADER + f"{start},Spring,g1,a1,{cells['impressions']},{cells['clicks']},1,0,0,EUR\n")
    refused_without_change(store_url, ("week1.csv line 2", column), lambda: ingest.run_source("li"))


@pytest.mark.parametrize("column", ["spend", "conversion_value", "conversions"])
def test_1e308_is_refused_so_kpis_never_overflow(store_url, tmp_path, column):
    start = csv_campaign(tmp_path)
    cells = {"spend": "1", "conversions": "0", "conversion_value": "0", column: "1e308"}
    text = HEADER + "".join(f"{d},Spring,g1,a1,1,1,{cells['spend']},{cells['conversions']},"
                            f"{cells['conversion_value']},EUR\n" for d in days(start, 2))
    export(tmp_path, text)
    refused_without_change(store_url, ("week1.csv line 2", f"{column} is larger than"), lambda: ingest.run_source("li"))
    with db.session() as s:  # and the report still adds up
        assert metrics.campaign_report(s, "acme-spring")["to_date"]["spend"] == 0


@pytest.mark.parametrize("cell,column", [(4, "impressions"), (5, "clicks"), (6, "spend"), (8, "conversion_value")])
def test_negative_numbers_are_refused(home, tmp_path, cell, column):
    start = csv_campaign(tmp_path)
    values = [str(start), "Spring", "g1", "a1", "100", "5", "12.5", "1", "20", "EUR"]
    values[cell] = "-" + values[cell]
    export(tmp_path, HEADER + ",".join(values) + "\n")
    refused_without_change(sqlite_url(home), ("week1.csv line 2", f"{column} is negative"),
                           lambda: ingest.run_source("li"))


@pytest.mark.parametrize("line,expected", [
    ("{d},Spring,g1,a1,,5,12.5,1,20,EUR", "column 'impressions' is blank"),
    ("{d},Spring,g1,a1,100,,12.5,1,20,EUR", "column 'clicks' is blank"),
    ("{d},Spring,g1,a1,100,5,,1,20,EUR", "column 'spend' is blank"),
    ("{d},,g1,a1,100,5,12.5,1,20,EUR", "column 'campaign' is blank"),
    (",Spring,g1,a1,100,5,12.5,1,20,EUR", "column 'date' is blank"),
    ("{d},Spring,g1,a1,100,5", "has 6 field(s) where the header has 10"),
    ("{d},Spring,g1,a1,100,5,12.5,1,20,EUR,extra", "has 11 field(s) where the header has 10"),
])
def test_blank_required_cells_and_short_rows_are_not_read_as_zero(home, tmp_path, line, expected):
    start = csv_campaign(tmp_path)
    export(tmp_path, HEADER + good_rows(start, 1) + line.format(d=start + dt.timedelta(days=1)) + "\n")
    refused_without_change(sqlite_url(home), ("week1.csv line 3", expected), lambda: ingest.run_source("li"))


def test_blank_conversion_cells_are_stored_as_unknown_not_zero(store_url, tmp_path):
    start = csv_campaign(tmp_path)
    export(tmp_path, HEADER + "".join(f"{d},Spring,g1,a1,100,5,12.5,,,EUR\n" for d in days(start, 3)))
    result = ingest.run_source("li", url=store_url)
    assert result.rows_written == 3
    stored = rows(url=store_url, source="li")
    assert [(r["impressions"], r["conversions"], r["conversion_value"]) for r in stored] == [(100, None, None)] * 3
    with db.session(store_url) as s:
        report = metrics.campaign_report(s, "acme-spring")
    assert report["to_date"]["impressions"] == 300 and report["to_date"]["spend"] == 37.5
    assert report["to_date"]["conversions"] is None and report["to_date"]["cpa"] is None, "unknown, not 0"
    # Known conversions of a later export count; the blank days stay unknown rather than 0.
    export(tmp_path, HEADER + f"{start + dt.timedelta(days=3)},Spring,g1,a1,100,5,12.5,2,40,EUR\n", "week2.csv")
    ingest.run_source("li", url=store_url)
    with db.session(store_url) as s:
        report = metrics.campaign_report(s, "acme-spring")
    assert report["to_date"]["conversions"] == 2 and report["to_date"]["cpa"] == 25.0


def test_kpis_say_conversions_not_reported_when_an_export_leaves_them_blank(home, tmp_path):
    start = csv_campaign(tmp_path)
    export(tmp_path, HEADER + "".join(f"{d},Spring,g1,a1,100,5,12.5,,,EUR\n" for d in days(start, 3)))
    ingest.run_source("li")
    shown = cli("kpis", "acme-spring")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert "conversions not reported" in shown.stdout and "300 impressions" in shown.stdout, shown.stdout


@pytest.mark.parametrize("day", ["0001-01-01", "2999-01-01"])
def test_dates_absurdly_far_from_the_campaign_are_refused_and_the_cursor_stays(home, tmp_path, day):
    start = csv_campaign(tmp_path)
    export(tmp_path, HEADER + good_rows(start))
    ingest.run_source("li")
    assert cursor("li", "li-main") == start + dt.timedelta(days=2)
    export(tmp_path, HEADER + f"{day},Spring,g1,a1,1,1,1,0,0,EUR\n", "week2.csv")
    message = refused_without_change(sqlite_url(home), ("week2.csv line 2", f"the date {day} is outside",
                                                        "a year before the earliest start"),
                                     lambda: ingest.run_source("li"))
    assert str(start - dt.timedelta(days=365)) in message
    assert cursor("li", "li-main") == start + dt.timedelta(days=2)


def test_a_backfill_window_far_from_the_campaign_is_refused(home, tmp_path):
    start = csv_campaign(tmp_path)
    export(tmp_path, HEADER + good_rows(start))
    with pytest.raises(UserError, match="--until 2999-01-01 is outside the days source 'li' may have rows for"):
        ingest.run_source("li", start, dt.date(2999, 1, 1))


def test_the_same_key_twice_is_refused_naming_both_lines(home, tmp_path):
    start = csv_campaign(tmp_path)
    text = HEADER + good_rows(start, 3) + f"{start},Spring,g1,a1,999,9,9,0,0,EUR\n"
    export(tmp_path, text)
    refused_without_change(sqlite_url(home), ("week1.csv line 5 repeats the row of week1.csv line 2",),
                           lambda: ingest.run_source("li"))
    export(tmp_path, HEADER + good_rows(start, 3))
    export(tmp_path, HEADER + good_rows(start + dt.timedelta(days=2), 1), "week2.csv")  # overlapping exports
    refused_without_change(sqlite_url(home), ("week2.csv line 2 repeats the row of week1.csv line 4",),
                           lambda: ingest.run_source("li"))


def test_the_summary_counts_rows_stored_not_rows_read(home):
    with PlatformServer(meta_page_size=4) as server:
        data = register([{"name": "meta", "kind": "meta", "account": "act_1234",
                          "base_url": server.url + API_PATH["meta"]}])
        start = start_of(data)
        server.meta += [meta_row(start, "c-1", "Spring", f"a{i}", 100, 10, 5.0) for i in range(5)]
        server.meta.append(meta_row(start, "c-1", "Spring", "a0", 100, 10, 7.0))  # a platform's paging repeat
        result = run("meta", "meta", start, since=start)
    assert result.rows_fetched == 6 and result.rows_written == 5 == len(rows())
    assert runs("meta")[0]["rows_written"] == 5


def test_a_path_outside_the_spec_folder_is_refused_at_validation(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:SECRET-HASH:19000:0:99999:7:::\n")
    folder = tmp_path / "spec"
    folder.mkdir()
    for path in (str(secret), "/etc/shadow", "../secret.txt", "exports/../../secret.txt"):
        data = future_spec()
        data["measurement"] = {"sources": [{"name": "li", "kind": "csv", "path": path, "account": "x"}]}
        result = cli("validate", str(write_spec(folder / "spec.yaml", data)))
        output = assert_refused(result, "measurement.sources[0].path", "outside the spec's folder")
        assert "SECRET" not in output


def test_a_symlink_out_of_the_spec_folder_is_refused_at_registration_and_at_read_time(home, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text(HEADER + "root:SECRET-HASH:19000:0:99999:7:::\n")
    folder = tmp_path / "spec"
    (folder / "exports").mkdir(parents=True)
    (folder / "link.csv").symlink_to(secret)
    data = future_spec()
    data["measurement"] = {"sources": [{"name": "li", "kind": "csv", "path": "link.csv", "account": "x"}]}
    result = cli("run", str(write_spec(folder / "spec.yaml", data)))
    output = assert_refused(result, "`path` 'link.csv' leads outside the spec's folder")
    assert "SECRET" not in output and store_row_counts(sqlite_url(home)).get("campaign", 0) == 0

    start = csv_campaign(tmp_path)  # a folder source whose export is a link out of the folder, made later
    (tmp_path / "spec" / "exports" / "week1.csv").symlink_to(secret)
    message = refused_without_change(sqlite_url(home), ("week1.csv links outside the spec's folder",),
                                     lambda: ingest.run_source("li"))
    assert "SECRET" not in message and start


def test_errors_never_repeat_the_file_content(home, tmp_path):
    csv_campaign(tmp_path)
    export(tmp_path, "root:SECRET-HASH:19000:0:99999:7:::\nroot2:SECRET2\n")
    message = refused_without_change(sqlite_url(home), ("week1.csv has no column(s) date",),
                                     lambda: ingest.run_source("li"))
    assert "SECRET" not in message
    export(tmp_path, HEADER + "SECRET-DAY,Spring,g1,a1,SECRET-NUMBER,1,1,0,0,EUR\n")
    message = refused_without_change(sqlite_url(home), ("week1.csv line 2: column 'date' is not a date",),
                                     lambda: ingest.run_source("li"))
    assert "SECRET" not in message


# -- section 6: a source shared by two campaigns with different settings -------------------------

SHARED = {"meta": {"account": "act_1234", "base_url": "http://127.0.0.1:9/v25.0"},
          "csv": {"account": "act_1234", "path": "exports"},
          "ga4": {"account": "312345678", "base_url": "http://127.0.0.1:9/v1beta"}}


@pytest.mark.parametrize("kind,field,one,other", [
    ("meta", "lookback_days", 3, 7), ("meta", "schedule", "0 6 * * *", "30 5 * * *"),
    ("meta", "conversion_actions", ["purchase"], ["lead"]), ("csv", "columns", {"spend": "Cost"}, {"spend": "Amount"}),
    ("ga4", "metrics", {"keyEvents": "conversions"}, {"sessions": "clicks", "keyEvents": "conversions"}),
])
def test_a_source_shared_with_different_settings_is_refused_at_registration(home, kind, field, one, other):
    base = {"name": "shared", "kind": kind, **SHARED[kind]}
    register([{**base, field: one}], campaign_id="alpha")
    before = store_row_counts(sqlite_url(home))
    with pytest.raises(UserError, match=f"campaigns 'alpha' and 'beta' both name source 'shared' but with a "
                                        f"different `{field}`"):
        register([{**base, field: other}], campaign_id="beta")
    assert store_row_counts(sqlite_url(home)) == before
    register([{**base, field: one}], campaign_id="gamma")  # the same settings are fine


def test_one_relative_csv_path_in_two_folders_is_two_sources(home, tmp_path):
    register([{"name": "li", "kind": "csv", "path": "exports", "account": "x"}], campaign_id="alpha",
             spec_dir=tmp_path / "a")
    with pytest.raises(UserError, match="different `path`"):
        register([{"name": "li", "kind": "csv", "path": "exports", "account": "x"}], campaign_id="beta",
                 spec_dir=tmp_path / "b")


# -- section 6: smaller things that misled users --------------------------------------------------

@pytest.fixture
def server():
    with PlatformServer(meta_page_size=5) as srv:
        yield srv



def test_data_through_is_the_last_day_with_data_not_the_cursor(home, server):
    data = register([meta_source(server, "meta")])
    start = start_of(data)
    server.meta += [meta_row(d, "c-1", "Spring", "a1", 100, 5, 10.0) for d in days(start, 3)]
    run("meta", "meta", start + dt.timedelta(days=9), since=start)
    assert cursor("meta", "act_1234") == start + dt.timedelta(days=9)
    with db.session() as s:
        report = metrics.campaign_report(s, "acme-spring")
    assert report["sources"][0]["data_through"] == str(start + dt.timedelta(days=2))
    shown = cli("kpis", "acme-spring")
    assert f"data through {start + dt.timedelta(days=2)}" in shown.stdout, shown.stdout + shown.stderr


def test_a_failed_backfill_does_not_promise_the_next_run_continues_it(home, server):
    data = register([meta_source(server, "meta")])
    start = start_of(data)
    server.fail_next("meta", 503, {"error": {"message": "unavailable", "code": 2}}, times=3)
    until = start + dt.timedelta(days=2)
    with pytest.raises(UserError) as err:
        run("meta", "meta", until, since=start, until=until, max_attempts=3)
    message = str(err.value)
    assert "next run continues" not in message
    assert f"run `campaignflow ingest meta --since {start} --until {until}` again" in message
    assert "next run continues" not in runs("meta")[0]["error"]


def test_a_failed_run_from_the_cursor_says_the_next_run_continues_it(home, server):
    data = register([meta_source(server, "meta")])
    start = start_of(data)
    server.fail_next("meta", 503, {"error": {"message": "unavailable", "code": 2}}, times=3)
    with pytest.raises(UserError) as err:
        run("meta", "meta", start + dt.timedelta(days=2), max_attempts=3)
    message = str(err.value)
    assert message.count("the next run continues from the same cursor") == 1, message
    assert "backfill" not in message and "--since" not in message
    assert "the next run continues from the same cursor" in runs("meta")[0]["error"]


@pytest.mark.parametrize("kind,account,url,expected", [
    ("meta", "act_1", "https://graph.facebook.com", "https://graph.facebook.com/v25.0"),
    ("google_ads", "123-456-7890", "https://googleads.googleapis.com/", "https://googleads.googleapis.com/v21"),
    ("ga4", "1", "http://proxy.local/analytics", "https://analyticsdata.googleapis.com/v1beta"),
])
def test_a_base_url_without_the_api_version_is_refused_at_validation(kind, account, url, expected):
    data = future_spec()
    data["measurement"] = {"sources": [{"name": "x", "kind": kind, "account": account, "base_url": url}]}
    from campaignflow.spec import validate_spec_data

    with pytest.raises(SpecInvalid) as err:
        validate_spec_data(data)
    assert any(p.startswith("measurement.sources[0].base_url:") and "no API version" in p and expected in p
               for p in err.value.problems), err.value.problems
    data["measurement"]["sources"][0]["base_url"] = "http://proxy.local/meta/v25.0"
    validate_spec_data(data)


@pytest.mark.prefect
def test_a_missing_credentials_block_falls_back_to_the_environment(prefect_api, home, server, monkeypatch):
    from blocks.platform_credentials import load_credentials
    from flows.ingest_metrics import ingest_metrics

    data = register([meta_source(server, "meta", credentials="no-such-block")])
    start = start_of(data)
    server.meta += [meta_row(d, "c-1", "Spring", "a1", 100, 5, 10.0) for d in days(start, 2)]
    monkeypatch.delenv("CAMPAIGNFLOW_META_ACCESS_TOKEN", raising=False)
    with db.session() as s:
        config = ingest.source_config(s, "meta")
    with pytest.raises(UserError, match="no Meta Ads Credentials block named 'no-such-block'.*"
                                        "CAMPAIGNFLOW_META_ACCESS_TOKEN"):
        load_credentials(config)
    monkeypatch.setenv("CAMPAIGNFLOW_META_ACCESS_TOKEN", TOKEN)
    result = ingest_metrics("meta", since=start, until=start + dt.timedelta(days=1), trigger="test")
    assert result["rows_written"] == 2


def test_the_unmapped_line_counts_this_runs_rows(home, server):
    data = register([meta_source(server, "meta")])
    start = start_of(data)
    server.meta += [meta_row(d, "c-9", "Someone else's", "z1", 10, 1, 1.0) for d in days(start, 5)]
    env = {"CAMPAIGNFLOW_META_ACCESS_TOKEN": TOKEN}
    first = cli("ingest", "meta", "--local", "--since", str(start), "--until", str(start + dt.timedelta(days=2)), env=env)
    assert first.returncode == 0, first.stderr
    later = cli("ingest", "meta", "--local", "--since", str(start + dt.timedelta(days=3)),
                "--until", str(start + dt.timedelta(days=4)), env=env)
    assert later.returncode == 0, later.stderr
    assert "2 rows belong to no campaign" in later.stdout
    listed = next(line for line in later.stdout.splitlines() if line.strip().startswith("c-9"))
    assert listed.split()[-2] == "2", later.stdout  # not the 5 stored rows of c-9


# -- section 7: generated exports through the real CSV ingestion ----------------------------------

NUMBERS = st.one_of(st.integers(-10, 10**6).map(str), st.integers(-(10**30), 10**30).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(
                        ["", " ", "nan", "inf", "-inf", "1e308", "-0", "1_000", "0x10", "1,5", "١٢"]),
                    st.text(max_size=6))
DATES = st.one_of(st.sampled_from(["0001-01-01", "2999-01-01", "2027-02-30", "", "20270201", "2027-1-5"]),
                  st.dates().map(str), st.text(max_size=10))
TEXT = st.text(max_size=8)


@st.composite
def exports(draw) -> bytes:
    """A CSV export: random bytes, random text, or rows of the right shape with hostile cells."""
    shape = draw(st.sampled_from(["bytes", "text", "rows"]))
    if shape == "bytes":
        return draw(st.binary(max_size=300))
    if shape == "text":
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    columns = ["date", "campaign", "ad_group", "ad", "impressions", "clicks", "spend", "conversions",
               "conversion_value", "currency"]
    header = draw(st.lists(st.sampled_from(columns), min_size=0, max_size=12)) if draw(st.booleans()) else columns
    lines = [",".join(header)]
    base = dt.date.today() + dt.timedelta(days=60)
    for _ in range(draw(st.integers(0, 6))):
        cells = [draw(st.one_of(st.just(str(base + dt.timedelta(days=draw(st.integers(-3, 3))))), DATES)),
                 draw(st.sampled_from(["Spring", "Other", ""])), draw(st.sampled_from(["g1", ""])),
                 draw(st.sampled_from(["a1", "a2"])),
                 *(draw(st.one_of(st.integers(0, 1000).map(str), NUMBERS)) for _ in range(5)),
                 draw(st.sampled_from(["EUR", "", "USD"]))]
        cut = draw(st.integers(0, len(cells) + 2))
        lines.append(",".join((cells + ["x", "y"])[:cut]))
        if draw(st.integers(0, 5)) == 0:
            lines.append(lines[-1])  # the same key twice
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def assert_sane(stored: list[dict]) -> None:
    for r in stored:
        for name in ingest.MEASURES:
            value = r[name]
            assert math.isfinite(value) and 0 <= value <= ingest.MAX_VALUE[name], r
        assert r["platform_campaign"], r


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(content=exports())
def test_generated_exports_are_stored_sanely_or_refused_with_a_message(home, tmp_path, content):
    if not (tmp_path / "spec").exists():
        csv_campaign(tmp_path)
    export(tmp_path, content)
    url = sqlite_url(home)
    before = store_row_counts(url)
    try:
        result = ingest.run_source("li")
    except UserError as exc:
        assert str(exc).strip()
        after = store_row_counts(url)
        assert after.pop("ingestionrun") == before.pop("ingestionrun", 0) + 1
        assert after == before
    else:
        assert result.rows_written == result.rows_fetched
        assert_sane(rows(source="li"))
    with db.session() as s:
        assert s.exec(select(m.MetricDaily)).all() is not None


@pytest.mark.parametrize("content,expected", [
    (b"", "week1.csv is empty"),
    (b"\xff\xfe\x00garbage\x00\n", "week1.csv is not UTF-8 text"),
    (HEADER.encode() + b"{d},Spring,g1,a1,-5,1,1,0,0,EUR\n", "impressions is negative"),
    (HEADER.encode() + b"{d},Spring,g1,a1,5,1,inf,0,0,EUR\n", "spend is not a finite number"),
    (HEADER.encode() + b"{d},Spring,g1,a1,5,1,1,0,0,EUR\n{d},Spring,g1,a1,5,1,1,0,0,EUR\n", "repeats the row of"),
])
def test_the_cli_refuses_bad_exports_with_exit_1_and_no_traceback(home, tmp_path, content, expected):
    start = csv_campaign(tmp_path)
    export(tmp_path, content.replace(b"{d}", str(start).encode()))
    before = store_row_counts(sqlite_url(home))
    result = cli("ingest", "li", "--local")
    assert_refused(result, expected, exit_codes=(1,))
    after = store_row_counts(sqlite_url(home))
    assert after.pop("ingestionrun") == before.pop("ingestionrun", 0) + 1 and after == before
