"""Hostile input for the web app, the JSON API, the link-signing key and the approval rules (issue 13,
sections 2, 3, 4 and 7), through a real uvicorn server, real child processes and the real CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse

import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlmodel import select

from campaignflow import approvals, db, lifecycle, models as m, settings, store
from campaignflow.errors import UserError
from campaignflow.signing import KeyUnusable, sign
from campaignflow.spec import validate_spec_data
from conftest import ROOT, cli, future_spec, serve_web
from invariants import assert_refused, store_row_counts

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MEGABYTE_COMMENT = "x" * 1_048_576
# The CLI without a Prefect server: none configured, and none at the local server's port.
NO_PREFECT = {"PREFECT_API_URL": "", "CAMPAIGNFLOW_SERVER_PORT": "9"}


# -- a real server, and a client that can send what `requests` would tidy up --------------------

@pytest.fixture
def server(store_url, monkeypatch):
    """`campaignflow.app.web:app` under uvicorn on a free loopback port, with the JSON API on; yields its base URL."""
    monkeypatch.setenv("CAMPAIGNFLOW_API_TOKEN", TOKEN)
    with serve_web(monkeypatch) as base:
        yield base


def raw(base: str, method: str, path: str, body: bytes = b"", headers: list[tuple[str, bytes]] = ()) -> tuple[int, str]:
    """One request with headers sent byte for byte; returns (status, body text)."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def assert_4xx_with_message(status: int, text: str, *expected: str) -> None:
    assert 400 <= status < 500, f"{status}: {text[:500]}"
    assert text.strip(), "a refusal without a message"
    assert "Internal Server Error" not in text and "Traceback" not in text
    for words in expected:
        assert words in text, f"{words!r} not in {text[:500]!r}"


def register(data: dict | None = None) -> str:
    data = data or future_spec()
    spec = validate_spec_data(data)
    with db.session() as s:
        store.register_campaign(s, spec, yaml.safe_dump(data), ROOT)
    return spec.id


def plan_gate(campaign_id: str, kind: str) -> m.ApprovalGate:
    with db.session() as s:
        return lifecycle.next_plan_gate(s, campaign_id, kind)


@pytest.fixture
def budget_gate(store_url) -> m.ApprovalGate:
    """The example's budget gate: approvers priya and felix, policy all."""
    return plan_gate(register(), "budget")


# -- 2. odd tokens, headers and gate ids: a 4xx with a message, never a 500 ----------------------

@pytest.mark.parametrize("authorization", [
    "Bearer s3cret-tokén".encode(),  # UTF-8 bytes
    b"Bearer \xff\xfe\xfd",  # latin-1 range, not UTF-8
    "Bearer 🔑".encode(),
])
def test_a_non_ascii_authorization_header_gets_401(store_url, server, budget_gate, authorization):
    before = store_row_counts(store_url)
    status, text = raw(server, "GET", "/api/approvals", headers=[("Authorization", authorization)])
    assert (status, json.loads(text)["detail"]) == (401, "missing or wrong bearer token")
    body = json.dumps({"person": "priya", "decision": "approve"}).encode()
    status, text = raw(server, "POST", f"/api/gates/{budget_gate.id}/decisions", body,
                       [("Authorization", authorization), ("Content-Type", b"application/json")])
    assert status == 401, text
    assert store_row_counts(store_url) == before


def test_a_non_ascii_api_token_on_the_server_is_compared_byte_for_byte(server, budget_gate, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_API_TOKEN", "pässwörd")
    status, _ = raw(server, "GET", "/api/approvals", headers=[("Authorization", "Bearer pässwörd".encode())])
    assert status == 200
    status, _ = raw(server, "GET", "/api/approvals", headers=[("Authorization", "Bearer pässwörd".encode("latin-1"))])
    assert status == 401


@pytest.mark.parametrize("token", ["é.é", "😀.😀", "ä" * 30 + "." + "ö" * 43, "a.b.c", "..", "\u0000.x"])
def test_a_non_ascii_or_malformed_link_token_is_refused_with_a_page(server, budget_gate, token):
    path = "/decide/" + urllib.parse.quote(token, safe="")
    for method in ("GET", "POST"):
        status, text = raw(server, method, path)
        assert_4xx_with_message(status, text, "Link refused")
    with db.session() as s:
        assert store.gate_decisions(s, budget_gate.id) == [] and s.exec(select(m.UsedLink)).all() == []


@pytest.mark.parametrize("gate", ["99999999999999999999", "2147483648", str(2**63), "²", "٣", "-1", "1e9"])
def test_a_gate_id_that_names_no_gate_is_404_on_the_api(store_url, server, budget_gate, gate):
    before = store_row_counts(store_url)
    response = requests.post(f"{server}/api/gates/{urllib.parse.quote(gate)}/decisions",
                             json={"person": "priya", "decision": "approve"}, headers=AUTH, timeout=30)
    assert response.status_code == 404, response.text
    assert "there is no gate" in response.json()["detail"]
    assert store_row_counts(store_url) == before


@pytest.mark.parametrize("gate", ["99999999999999999999", "²", "x" * 5000])
def test_a_gate_id_that_names_no_gate_is_a_clear_cli_error(home, gate):
    register()
    before = store_row_counts(f"sqlite:///{home / 'campaignflow.db'}")
    for command in (["approve", gate, "--as", "priya"], ["reject", gate, "--as", "priya", "--comment", "no"]):
        assert_refused(cli(*command, env=NO_PREFECT), "there is no gate")
    assert store_row_counts(f"sqlite:///{home / 'campaignflow.db'}") == before


@pytest.mark.parametrize("body", [b"[[-Infinity]]", b'{"person": Infinity, "decision": "approve"}', b"NaN", b"{"])
def test_a_json_body_json_cannot_carry_back_is_a_422_naming_the_field(store_url, server, budget_gate, body):
    """Found by the property test below: FastAPI's 422 echoed the input and failed (500) on -Infinity."""
    before = store_row_counts(store_url)
    status, text = raw(server, "POST", f"/api/gates/{budget_gate.id}/decisions", body,
                       [("Authorization", f"Bearer {TOKEN}".encode()), ("Content-Type", b"application/json")])
    assert_4xx_with_message(status, text, "body")
    assert store_row_counts(store_url) == before


# -- 2. stated limits for comments and request bodies -------------------------------------------

def test_a_megabyte_comment_is_refused_by_the_one_door_naming_the_limit(budget_gate):
    with pytest.raises(UserError, match="the comment is 1,048,576 characters; the limit is 4,000"):
        with db.session(write=True) as s:
            approvals.decide(s, budget_gate.id, "priya", "reject", MEGABYTE_COMMENT)
    with pytest.raises(UserError, match="the comment contains a NUL character"):
        with db.session(write=True) as s:
            approvals.decide(s, budget_gate.id, "priya", "reject", "no\x00")
    with db.session() as s:
        assert store.gate_decisions(s, budget_gate.id) == []
    with pytest.raises(UserError, match="--reason is 4,001 characters; the limit is 4,000"):
        with db.session(write=True) as s:
            approvals.delegate(s, "priya", "felix", dt.date.today(), dt.date.today(), "r" * 4001)


def test_a_comment_over_the_limit_is_refused_on_the_cli(home):
    gate = plan_gate(register(), "budget")
    url = f"sqlite:///{home / 'campaignflow.db'}"
    before = store_row_counts(url)
    result = cli("reject", str(gate.id), "--as", "priya", "--comment", "y" * 5000, env=NO_PREFECT)
    assert_refused(result, "the comment is 5,000 characters; the limit is 4,000")
    assert store_row_counts(url) == before


def test_a_comment_over_the_limit_is_refused_on_the_page_and_the_api(store_url, server, budget_gate):

    before = store_row_counts(store_url)
    page = requests.post(f"{server}/decide/{sign(budget_gate.id, 'priya', 'reject')}",
                         data={"comment": "z" * 4001}, timeout=30)
    assert_4xx_with_message(page.status_code, page.text, "4,001 characters; the limit is 4,000")
    api = requests.post(f"{server}/api/gates/{budget_gate.id}/decisions", headers=AUTH, timeout=30,
                        json={"person": "priya", "decision": "reject", "comment": "z" * 4001})
    assert_4xx_with_message(api.status_code, api.text, "4,001 characters; the limit is 4,000")
    assert store_row_counts(store_url) == before


def test_a_request_body_over_the_limit_gets_413_declared_or_streamed(store_url, server, budget_gate):

    before = store_row_counts(store_url)
    api = f"{server}/api/gates/{budget_gate.id}/decisions"
    declared = requests.post(api, headers=AUTH, timeout=30,
                             json={"person": "priya", "decision": "reject", "comment": MEGABYTE_COMMENT})
    assert declared.status_code == 413 and "the limit is 65,536" in declared.json()["detail"]
    form = requests.post(f"{server}/decide/{sign(budget_gate.id, 'priya', 'reject')}",
                         data={"comment": MEGABYTE_COMMENT}, timeout=30)
    assert form.status_code == 413 and "the limit is 65,536" in form.text

    def chunks():  # no Content-Length: the body is counted as it streams in
        yield b'{"person": "priya", "decision": "reject", "comment": "'
        for _ in range(64):
            yield b"w" * 16384
        yield b'"}'

    streamed = requests.post(api, data=chunks(), timeout=30, headers={**AUTH, "Content-Type": "application/json"})
    assert streamed.status_code == 413 and "the limit is 65,536" in streamed.json()["detail"]
    assert store_row_counts(store_url) == before


# -- 3. the link-signing key ----------------------------------------------------------------------

KEY_PROBE = """
import hashlib, os, sys, time
from pathlib import Path
from campaignflow.signing import secret, sign, verify
base, rounds, parent = Path(sys.argv[1]), int(sys.argv[2]), os.getppid()
for n in range(rounds):  # each round a fresh home, all processes let go at once
    os.environ["CAMPAIGNFLOW_HOME"] = str(base / f"home-{n}")
    (base / f"ready-{n}-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (base / f"go-{n}").exists():
        if os.getppid() != parent or time.monotonic() > deadline:
            sys.exit("the test is gone")
        os.sched_yield()
    key = secret()
    verify(sign(1, "priya"))
    print(n, len(key), hashlib.sha256(key).hexdigest(), flush=True)
"""


def test_twelve_processes_on_a_fresh_home_sign_with_one_complete_key(tmp_path):
    """Twelve processes start on a fresh home at the same instant, in many rounds (one race is too easily won)."""
    count, rounds = 12, 60
    env = {k: v for k, v in os.environ.items() if k != "CAMPAIGNFLOW_SECRET"}
    processes = [subprocess.Popen([sys.executable, "-c", KEY_PROBE, str(tmp_path), str(rounds)], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        for n in range(rounds):  # a barrier: every process waits at the start line, then all go together
            while len(list(tmp_path.glob(f"ready-{n}-*"))) < count and all(p.poll() is None for p in processes):
                time.sleep(0.005)
            (tmp_path / f"go-{n}").touch()
        answers = [p.communicate(timeout=120) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert all(p.returncode == 0 for p in processes), [err for _, err in answers]
    for n in range(rounds):
        home = tmp_path / f"home-{n}"
        said = {line for out, _ in answers for line in out.splitlines() if line.startswith(f"{n} ")}
        on_disk = (home / "link-secret").read_text().strip().encode()
        assert len(on_disk) > 32
        assert said == {f"{n} {len(on_disk)} {hashlib.sha256(on_disk).hexdigest()}"}, said
        assert (home / "link-secret").stat().st_mode & 0o777 == 0o600
        assert [p.name for p in home.iterdir() if "link-secret" in p.name] == ["link-secret"]  # no temporary left


def test_an_empty_key_file_is_refused_for_signing_and_checking(server, budget_gate, monkeypatch):
    link = sign(budget_gate.id, "priya")
    monkeypatch.delenv("CAMPAIGNFLOW_SECRET")
    (settings.get().home_dir() / "link-secret").write_text("\n")
    with pytest.raises(KeyUnusable, match="link-signing key .* is empty, so links could be forged"):
        sign(budget_gate.id, "priya")
    for response in (requests.get(f"{server}/decide/{link}", timeout=30),
                     requests.post(f"{server}/decide/{link}", timeout=30)):
        assert response.status_code == 503 and "is empty, so links could be forged" in response.text
    with db.session() as s:
        assert store.gate_decisions(s, budget_gate.id) == []


# -- 4. approvals say and do the right thing -------------------------------------------------------

def test_a_stand_in_who_is_also_an_approver_decides_for_both_seats(budget_gate):
    today = dt.date.today()
    with db.session(write=True) as s:
        approvals.delegate(s, "priya", "felix", today - dt.timedelta(days=1), today + dt.timedelta(days=3), "away")
    with db.session(write=True) as s:
        result = approvals.decide(s, budget_gate.id, "felix", "approve", "fine")
    assert (result.status, result.seats) == ("approved", ("priya", "felix"))
    with db.session() as s:
        decisions = {(d.person, d.decided_by) for d in store.gate_decisions(s, budget_gate.id)}
        events = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "decision.recorded")).all()
    assert decisions == {("felix", ""), ("priya", "felix")}
    assert sorted((e.actor, e.detail.get("on_behalf_of", "")) for e in events) == [("felix", ""), ("felix", "priya")]
    with db.session(write=True) as s:  # the same click again records nothing more
        again = approvals.decide(s, budget_gate.id, "felix", "approve", "fine")
    assert not again.recorded and "felix already approved gate" in again.already


def test_the_cli_says_whom_a_stand_in_decided_for(home):
    gate = plan_gate(register(), "budget")
    assert cli("delegate", "--as", "priya", "--to", "felix", "--from", str(dt.date.today()),
               "--until", str(dt.date.today())).returncode == 0
    result = cli("approve", str(gate.id), "--as", "felix", env=NO_PREFECT)
    assert result.returncode == 0, result.stderr
    assert f"felix approved gate #{gate.id}" in result.stdout and "also for priya (standing in)" in result.stdout
    assert "the gate is approved" in result.stdout


def test_a_second_link_for_a_decision_on_record_says_nothing_new_was_recorded(server, budget_gate):
    first = requests.post(f"{server}/decide/{sign(budget_gate.id, 'priya')}", timeout=30)
    assert first.status_code == 200 and "is recorded" in first.text
    second = f"{server}/decide/{sign(budget_gate.id, 'priya')}"  # a fresh link, e.g. from a reminder
    shown = requests.get(second, timeout=30)
    assert shown.status_code == 409 and f"priya already approved gate #{budget_gate.id}" in shown.text
    assert "Approve</button>" not in shown.text and "Still waiting on felix" in shown.text
    posted = requests.post(second, timeout=30)
    assert "is recorded" not in posted.text
    assert f"Nothing new was recorded: priya already approved gate #{budget_gate.id} at " in posted.text

    assert requests.post(f"{server}/decide/{sign(budget_gate.id, 'felix')}", timeout=30).status_code == 200
    closed = requests.get(f"{server}/decide/{sign(budget_gate.id, 'priya', 'reject')}", timeout=30)
    assert closed.status_code == 409 and "already closed: <b>approved by priya, felix at " in closed.text
    late = requests.post(f"{server}/decide/{sign(budget_gate.id, 'priya')}", timeout=30)
    assert "is recorded" not in late.text and "Nothing new was recorded" in late.text and "the gate is approved by" in late.text
    with db.session() as s:
        assert len(store.gate_decisions(s, budget_gate.id)) == 2


def test_done_is_refused_while_the_campaign_waits_at_its_goals_gate(home):
    cid = register()
    goals = plan_gate(cid, "goals")
    url = f"sqlite:///{home / 'campaignflow.db'}"
    before = store_row_counts(url)
    refused = cli("done", cid, "media-buying", "--as", "omar")
    assert_refused(refused, "media-buying cannot be done yet",
                   f"the campaign waits at its goals gate #{goals.id} (on priya)",
                   "the campaign has not reached its budget gate yet",
                   "it depends on linkedin-ads, which is planned", "--force")
    assert_refused(cli("done", cid, "media-buying", "--as", "omar", "--force"),
                   "only a campaign or account manager (maria, tom) may force media-buying done; omar is not one")
    assert store_row_counts(url) == before

    forced = cli("done", cid, "media-buying", "--as", "tom", "--force")
    assert forced.returncode == 0 and "media-buying is done" in forced.stdout, forced.stderr
    with db.session() as s:
        event = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "deliverable.done")).one()
    assert event.actor == "tom" and "it depends on linkedin-ads, which is planned" in event.detail["forced_past"]


# -- 7. property-based: whatever arrives, a 4xx with a message and an unchanged store ------------

HYPOTHESIS = hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Header values as bytes that http.client will send (no CR, LF or NUL); the server may refuse the rest.
header_bytes = st.binary(max_size=80).map(lambda b: b.translate(None, b"\r\n\x00"))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=12)
gate_refs = st.one_of(st.integers(min_value=-(2**80), max_value=2**80).map(str), st.text(min_size=1, max_size=60),
                      st.sampled_from(["99999999999999999999", "2147483648", "0", "-0", "NaN", "1.5", "#7", "²"]))


@HYPOTHESIS
@given(authorization=header_bytes, token=st.text(max_size=80))
def test_any_authorization_header_or_link_token_is_a_4xx(store_url, server, budget_gate, authorization, token):

    before = store_row_counts(store_url)
    status, text = raw(server, "GET", "/api/approvals", headers=[("Authorization", b"Bearer " + authorization)])
    assert_4xx_with_message(status, text)
    status, text = raw(server, "POST", "/decide/" + urllib.parse.quote(token, safe=""), b"comment=hi",
                       [("Content-Type", b"application/x-www-form-urlencoded")])
    assert_4xx_with_message(status, text)
    assert store_row_counts(store_url) == before


@HYPOTHESIS
@given(gate=gate_refs, body=json_values)
def test_any_gate_id_and_json_body_is_a_4xx(store_url, server, budget_gate, gate, body):

    before = store_row_counts(store_url)
    path = f"/api/gates/{urllib.parse.quote(gate, safe='')}/decisions"
    for payload in (body, {"person": body if isinstance(body, str) else "nobody", "decision": "approve",
                           "comment": body if isinstance(body, str) else ""}):
        status, text = raw(server, "POST", path, json.dumps(payload).encode(),
                           [("Authorization", f"Bearer {TOKEN}".encode()), ("Content-Type", b"application/json")])
        assert_4xx_with_message(status, text)
    assert store_row_counts(store_url) == before


@HYPOTHESIS
@given(fields=st.dictionaries(st.text(max_size=10), st.text(max_size=300), max_size=4),
       content_type=st.sampled_from([b"application/x-www-form-urlencoded", b"multipart/form-data",
                                     b"multipart/form-data; boundary=x", b"text/plain", b"application/json"]),
       decision=st.sampled_from(["approve", "reject", "request_changes"]))
def test_any_form_post_to_a_link_that_cannot_decide_is_a_4xx(store_url, server, budget_gate, fields, content_type, decision):

    before = store_row_counts(store_url)
    link = "/decide/" + sign(budget_gate.id, "tom", decision)  # genuine, but tom is no approver
    status, text = raw(server, "POST", link, urllib.parse.urlencode(fields).encode(), [("Content-Type", content_type)])
    assert_4xx_with_message(status, text)
    assert store_row_counts(store_url) == before
