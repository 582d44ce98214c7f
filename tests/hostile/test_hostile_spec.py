"""Hostile specs (issue 13, sections 2, 3 and 7): `validate` and `run` refuse each with exit 2, the field or
line and the fix, never a traceback, and the store's row counts unchanged. Also: processes racing on a
fresh store, and property-based specs that must be valid or refused with a message, nothing else."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import ROOT, cli, future_spec, write_spec
from invariants import assert_refused, store_row_counts


@pytest.fixture
def store(home):
    """A SQLite store holding one registered campaign, so "unchanged" has rows to compare."""
    from campaignflow import db, store as st_
    from campaignflow.spec import validate_spec_data

    data = future_spec()
    data["id"] = "already-here"
    with db.session() as s:
        st_.register_campaign(s, validate_spec_data(data), yaml.safe_dump(data))
    db.dispose_all()
    url = f"sqlite:///{home / 'campaignflow.db'}"
    assert store_row_counts(url)["campaign"] == 1
    return url


def refused(store: str, path, *expected: str) -> str:
    """`validate` and `run` both refuse the spec at `path` (exit 2, each text said); the store is unchanged."""
    before = store_row_counts(store)
    for command in ("validate", "run"):
        output = assert_refused(cli(command, str(path)), *expected, exit_codes=(2,))
    assert store_row_counts(store) == before
    return output


def spec_text(**changes) -> str:
    return yaml.safe_dump(future_spec(**changes), sort_keys=False, allow_unicode=True)


def line_of(text: str, needle: str, start: int = 1) -> int:
    """The 1-based number of the first line at or after `start` containing `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if n >= start and needle in line)


# -- section 2: bad specs --------------------------------------------------------------------------

def test_non_utf8_spec_names_the_line(store, tmp_path):
    text = spec_text()
    path = tmp_path / "latin1.yaml"
    path.write_bytes(text.replace("Maria Lopez", "María López").encode("latin-1"))
    refused(store, path, f"line {line_of(text, 'Maria Lopez')}, column", "byte 0xed is not UTF-8 text",
            "save the file as UTF-8")


@pytest.mark.parametrize("nesting, expected", [
    ("[" * 10_000 + "]" * 10_000, "nested too deeply"),  # libyaml's own limit
    ("[" * 60 + "]" * 60, "nested more than 50 levels deep"),
    ("".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "x", "nested more than 50 levels deep"),
])
def test_deep_nesting_is_refused(store, tmp_path, nesting, expected):
    path = tmp_path / "deep.yaml"
    path.write_text(spec_text() + "extra: " + (nesting if nesting.startswith("[") else "\n" + nesting) + "\n")
    refused(store, path, expected, "a spec needs fewer than 10")


def test_impossible_date_names_the_field(store, tmp_path):
    data = future_spec()
    data["goals"][1]["deadline"] = "2027-02-30"
    path = tmp_path / "date.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False).replace("'2027-02-30'", "2027-02-30"))
    refused(store, path, "goals[1].deadline: must be a real date as YYYY-MM-DD", "2027-02-30")


def test_duplicate_keys_are_refused_with_both_lines(store, tmp_path):
    text = spec_text()
    text = text.replace("currency: EUR\n", "currency: EUR\nclient: Someone\ncurrency: USD\n", 1)
    text = text.replace("approvals:\n", "approvals:\n  goals: {approvers: [maria]}\n", 1)
    first, second = line_of(text, "currency: EUR"), line_of(text, "currency: USD")
    approvals = line_of(text, "approvals:")
    goals = [n for n, line in enumerate(text.splitlines(), 1) if n > approvals and line.startswith("  goals:")]
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    output = refused(store, path, f"currency: given twice, on line {first} and line {second}",
                     f"approvals.goals: given twice, on line {goals[0]} and line {goals[1]}",
                     "client: given twice", "keep one")
    assert "3 problem(s)" in output


@pytest.mark.parametrize("where, value, expected", [
    (("goals", 0, "target"), ".nan", "goals[0].target: must be a finite number"),
    (("goals", 1, "baseline"), "-.inf", "goals[1].baseline: must be a finite number"),
    (("budget", 4, "amount"), ".inf", "budget[4].amount: must be a finite number"),
    (("budget", 0, "amount"), "1.0e+308", "budget[0].amount: Input should be less than or equal to 1"),
])
def test_non_finite_numbers_are_refused(store, tmp_path, where, value, expected):
    data = future_spec()
    target = data
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = "PLACEHOLDER"
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False).replace("PLACEHOLDER", value))
    refused(store, path, expected)


def test_a_nul_character_is_refused_before_it_reaches_the_store(store, tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_text(spec_text().replace("name: Maria Lopez", 'name: "Maria\\0Lopez"'))
    refused(store, path, "people[0].name: contains a NUL character")


def test_a_spec_over_the_size_limit_is_refused_before_reading(store, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(spec_text() + "# padding\n" * 120_000)
    refused(store, path, "bytes is more than the limit of 1,000,000 bytes (1 MB)")


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["approvals"].update(goals={"approvers": ["maria"]}),
     ["approvals.goals.approvers: can never be approved: maria submits the goals", "maria is the only approver"]),
    (lambda d: d["approvals"].update(budget={"approvers": ["campaign_manager", "cmo"], "policy": "all"}),
     ["approvals.budget.approvers: can never be approved: maria submits the budget", "policy `all` needs maria"]),
    (lambda d: d["approvals"].update(goals={"approvers": ["maria", "cmo", "finance"], "policy": "quorum", "quorum": 3}),
     ["approvals.goals.approvers:", "quorum 3 cannot be reached without maria"]),
    (lambda d: d["approvals"].update(budget={"routing": [{"up_to": 1000, "approvers": ["cmo"]},
                                                         {"approvers": ["campaign_manager"]}]}),
     ["approvals.budget.routing[1].approvers: can never be approved", "maria is the only approver"]),
    (lambda d: d["approvals"].update(goals={"stages": [{"name": "internal", "approvers": ["maria", "tom"], "policy": "all"},
                                                       {"name": "client", "approvers": ["cmo"]}]}),
     ["approvals.goals.stages[0].approvers: can never be approved", "policy `all` needs maria"]),
    (lambda d: d["deliverables"][0].update(reviewers=[["maria"], ["copywriter"]]),  # sam, the copywriter, owns it
     ["deliverables[0].reviewers[1]: review round 2 of messaging-brief can never be approved: sam owns it",
      "sam is the only approver"]),
    (lambda d: d["deliverables"][1].update(reviewers=[["lea", "maria"]]),  # reviews default to policy all
     ["deliverables[1].reviewers[0]: review round 1 of landing-page", "policy `all` needs lea"]),
], ids=["only-approver", "all", "quorum", "routing-tier", "stage", "review-owner-only", "review-all"])
def test_a_gate_that_can_never_close_is_refused(store, tmp_path, change, expected):
    data = future_spec()
    data["approvals"]["defaults"] = {"due_days": 2, "on_timeout": "escalate", "escalate_to": ["leadership"]}
    change(data)  # escalation does not count: the gate must close on its own approvers
    refused(store, write_spec(tmp_path / "stuck.yaml", data), *expected)


def test_the_submitter_as_one_approver_among_enough_is_valid(home, tmp_path):
    data = future_spec()
    data["approvals"]["goals"] = {"approvers": ["maria", "cmo", "finance"], "policy": "quorum", "quorum": 2}
    data["approvals"]["budget"] = {"approvers": ["maria", "cmo"], "policy": "all", "primary": "priya"}
    result = cli("validate", str(write_spec(tmp_path / "ok.yaml", data)))
    assert result.returncode == 0, result.stderr


# -- section 3: concurrent first use of a fresh store ------------------------------------------------

def _race(env: dict[str, str], processes: int = 5) -> None:
    import os

    code = "from campaignflow import db; db.engine(); print('ok')"
    children = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(processes)]
    results = [(child.wait(120), *child.communicate()) for child in children]
    for code_, out, err in results:
        assert code_ == 0 and out.strip() == "ok", err


def _at_head(url: str) -> bool:
    from sqlalchemy import create_engine, text

    from campaignflow.db import SCHEMA_HEAD

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text("select version_num from alembic_version"))} == {SCHEMA_HEAD}
    finally:
        engine.dispose()


def test_processes_racing_on_a_fresh_sqlite_store_all_start(home):
    _race({"CAMPAIGNFLOW_HOME": str(home)})
    assert _at_head(f"sqlite:///{home / 'campaignflow.db'}")


def test_processes_racing_on_a_fresh_postgres_store_all_start(pg_url):
    _race({"CAMPAIGNFLOW_DATABASE_URL": pg_url})
    assert _at_head(pg_url)


# -- section 7: property-based specs ------------------------------------------------------------------

BASE = future_spec()
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.dates().map(str), st.sampled_from(["2027-02-30", "maria", "cmo", "all", "quorum", "", "-1", "1e308"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=8)


def _paths(node, prefix=()):
    """Every path into the spec, for a mutation to land on."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated_specs(draw) -> dict:
    """The example spec with a few values replaced by values of any type, or removed."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return data


def _dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# YAML that a dumped dict never contains: non-finite and huge numbers, impossible dates, bad explicit
# tags, aliases, NUL escapes, deep or unclosed nesting.
RAW_VALUES = [".nan", ".inf", "-.inf", "1.0e+308", "9" * 5000, "2027-02-30", "2027-13-01", "!!int abc", "!!bool maybe",
              "!!timestamp soon", "&a [*a]", '"a\\0b"', "[" * 80 + "]" * 80, "[" * 2000, "{", "~", "*undefined",
              "!!python/object:os.system ls", "|\n  text", "'unclosed"]


@st.composite
def mangled_texts(draw) -> str:
    """YAML text of a mutated spec, then cut, spliced with random text or a raw YAML value, or a line twice."""
    text = _dump(draw(mutated_specs()))
    lines = text.splitlines(keepends=True)
    how = draw(st.sampled_from(["cut", "splice", "duplicate", "raw", "raw", "as is"]))
    at = draw(st.integers(0, len(lines)))
    keyed = [i for i, line in enumerate(lines) if ": " in line]
    if how == "raw" and keyed:
        i = draw(st.sampled_from(keyed))
        lines[i] = lines[i][:lines[i].index(": ") + 2] + draw(st.sampled_from(RAW_VALUES)) + "\n"
        return "".join(lines)
    if how == "cut":
        return "".join(lines[:at])
    if how == "splice":
        return "".join(lines[:at]) + draw(st.text(max_size=60)) + "".join(lines[at:])
    if how == "duplicate" and lines:
        line = lines[min(at, len(lines) - 1)]
        return "".join(lines[:at] + [line] + lines[at:])
    return text


def _valid_or_refused(text: str) -> None:
    """The invariant: a spec, or SpecInvalid/UserError with a message; any other exception fails the test."""
    from campaignflow.errors import UserError
    from campaignflow.spec import spec_hash, validate_spec_text

    try:
        spec = validate_spec_text(text, "generated.yaml")
    except UserError as exc:
        assert str(exc).strip() and "Traceback" not in str(exc)
        return
    dumped = spec.model_dump(mode="json")  # what registration stores and hashes
    spec_hash(dumped)
    assert all(math.isfinite(line.amount) for line in spec.budget) and math.isfinite(spec.budget_total())


@settings(max_examples=150, deadline=None)
@given(mutated_specs())
def test_mutated_specs_are_valid_or_refused(data):
    _valid_or_refused(_dump(data))


@settings(max_examples=150, deadline=None)
@given(mangled_texts())
def test_mangled_spec_texts_are_valid_or_refused(text):
    _valid_or_refused(text)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_random_text_is_valid_or_refused(text):
    _valid_or_refused(text)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mangled_texts())
def test_the_cli_refuses_generated_bad_specs_cleanly(store, tmp_path, text):
    from campaignflow.errors import UserError
    from campaignflow.spec import validate_spec_text

    try:
        validate_spec_text(text, "generated.yaml")
        valid = True
    except UserError:
        valid = False
    assume(not valid)  # a valid spec would start a real lifecycle run
    path = tmp_path / "generated.yaml"
    path.write_text(text, encoding="utf-8")
    refused(store, path)
