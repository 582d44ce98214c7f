"""`campaignflow validate` and `run` on bad specs: every problem named, exit 2, no traceback, store unchanged."""

from __future__ import annotations

import copy
import datetime as dt
import json
import sqlite3

import pytest

from conftest import EXAMPLES, cli, future_spec, write_spec


def _store_rows(home) -> dict[str, int]:
    db = home / "campaignflow.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table' and name != 'alembic_version'")]
        return {t: conn.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}


def _check_refused(home, tmp_path, data, *expected: str) -> str:
    path = write_spec(tmp_path / "bad.yaml", data)
    before = _store_rows(home)
    for command in ("validate", "run"):
        result = cli(command, str(path))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        for text in expected:
            assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"
        assert "Nothing was written" in result.stderr
    assert _store_rows(home) == before
    return result.stderr


def mutate(**path_values):
    data = future_spec()
    for path, value in path_values.items():
        target = data
        parts = path.split("__")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = parts[-1]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return data


DELETE = object()


def test_examples_are_valid(home):
    for example in EXAMPLES.glob("*.yaml"):
        result = cli("validate", str(example))
        assert result.returncode == 0, result.stderr
        assert "valid" in result.stdout


CASES = {
    "missing field": (mutate(name=DELETE), ["name: is required"]),
    "unknown field": (mutate(budgett=[]), ["budgett: is not a known field"]),
    "wrong type": (mutate(deliverables__0__duration_days="three"), ["deliverables[0].duration_days: Input should be a valid integer"]),
    "negative amount": (mutate(budget__1__amount=-50), ["budget[1].amount: must be a positive amount greater than 0"]),
    "zero amount": (mutate(budget__0__amount=0), ["budget[0].amount: must be a positive amount greater than 0"]),
    "unknown owner": (mutate(deliverables__2__owner="nobody"), ["deliverables[2].owner: 'nobody' is not a person in `people`"]),
    "unknown role": (mutate(approvals__budget__approvers=["cmo", "cfo"]),
                     ["approvals.budget.approvers[1]: 'cfo' is neither a person in `people` nor a role anyone holds"]),
    "unknown reviewer": (mutate(deliverables__0__reviewers=[["maria"], ["ghost"]]),
                         ["deliverables[0].reviewers[1][0]: 'ghost' is neither a person"]),
    "unknown dependency": (mutate(deliverables__3__depends_on=["landing"]),
                           ["deliverables[3].depends_on[0]: 'landing' is not a deliverable"]),
    "empty reviewer list": (mutate(deliverables__1__reviewers=[["maria"], []]),
                            ["deliverables[1].reviewers[1]: is empty; name at least one person or role"]),
    "empty approvers": (mutate(approvals__goals__approvers=[]), ["approvals.goals.approvers: is empty"]),
    "bad currency": (mutate(currency="euro"), ["currency: must be a 3-letter currency code"]),
    "unknown kpi": (mutate(goals__0__kpi="happiness"), ["goals[0].kpi: 'happiness' is not a KPI campaignflow measures"]),
    "cron out of range": (mutate(measurement__sources__0__schedule="99 * * * *"),
                          ["measurement.sources[0].schedule: '99 * * * *' is not a cron expression (bad minute)"]),
    "cron of 3 fields": (mutate(measurement__sources__0__schedule="0 6 *"),
                         ["schedule: '0 6 *' is not a cron expression (3 fields instead of 5)", "e.g. '0 6 * * *'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec_is_refused_with_its_path(home, tmp_path, case):
    data, expected = CASES[case]
    _check_refused(home, tmp_path, data, *expected)


def test_dependency_cycle_is_named(home, tmp_path):
    data = future_spec()
    data["deliverables"][0]["depends_on"] = ["linkedin-ads"]  # brief -> ads -> landing -> brief
    err = _check_refused(home, tmp_path, data, "dependency cycle")
    assert "messaging-brief -> linkedin-ads -> landing-page -> messaging-brief" in err


def test_dates_in_the_past_or_before_start(home, tmp_path):
    data = future_spec()
    yesterday = dt.date.today() - dt.timedelta(days=1)
    data["goals"][0]["deadline"] = str(yesterday)
    data["goals"][1]["deadline"] = data["start"]
    _check_refused(home, tmp_path, data, f"goals[0].deadline: {yesterday} is in the past",
                   f"goals[1].deadline: {data['start']} is not after the campaign start")
    data = future_spec()
    data["start"] = str(yesterday)
    _check_refused(home, tmp_path, data, f"start: {yesterday} is in the past")
    data = future_spec()
    data["end"] = data["start"]
    _check_refused(home, tmp_path, data, "end: ", "is not after start")


def test_duplicate_names(home, tmp_path):
    data = future_spec()
    data["deliverables"].append(copy.deepcopy(data["deliverables"][0]))
    data["people"].append(copy.deepcopy(data["people"][1]))
    _check_refused(home, tmp_path, data, "deliverables[5].key: duplicate name 'messaging-brief'",
                   "people[8].handle: duplicate name 'tom'")


def test_all_problems_reported_at_once(home, tmp_path):
    data = future_spec()
    data["deliverables"][2]["owner"] = "nobody"
    data["deliverables"][3]["depends_on"] = ["landing"]
    data["approvals"]["budget"]["approvers"] = ["cfo"]
    err = _check_refused(home, tmp_path, data, "3 problem(s)")
    assert err.count("\n  ") == 3


def test_structural_problems_reported_together(home, tmp_path):
    data = future_spec()
    data["budget"][0]["amount"] = -1
    data["goals"][0]["target"] = "lots"
    del data["audience"]
    _check_refused(home, tmp_path, data, "budget[0].amount", "goals[0].target", "audience: is required")


def test_not_yaml_and_not_a_file(home, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\nname: [unclosed\n")
    result = cli("validate", str(path))
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "Traceback" not in result.stderr
    result = cli("validate", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    path.write_text("- just\n- a list\n")
    result = cli("validate", str(path))
    assert result.returncode == 2 and "must be a YAML mapping" in result.stderr


def test_spec_schema_is_json_schema(home):
    result = cli("spec", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "campaignflow campaign spec"
    assert {"goals", "deliverables", "budget", "approvals"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
