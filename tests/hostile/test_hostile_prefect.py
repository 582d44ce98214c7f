"""The Prefect half of the default install, tried as a new user, an operator and an attacker would (issue 13).

One local Prefect server for the module, started the way campaignflow starts it (`campaignflow server
start`, UI on), reached by the real CLI in child processes and by a real headless Chromium.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlmodel import select

from campaignflow import claims, db, models as m
from conftest import ROOT, Terminal, cli, future_spec, write_spec
from invariants import assert_refused, store_row_counts

pytestmark = pytest.mark.prefect
CAMPAIGN = "northwind-webinar-2027q1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def local_server(tmp_path_factory):
    """`campaignflow server start` on a free port in a temporary home; yields the env that reaches it."""
    port = free_port()
    env = {"CAMPAIGNFLOW_HOME": str(tmp_path_factory.mktemp("server-home")), "CAMPAIGNFLOW_SERVER_PORT": str(port),
           "PREFECT_UI_ENABLED": "true", "PREFECT_API_URL": ""}
    started = cli("server", "start", env=env, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield {**env, "api": f"http://127.0.0.1:{port}/api", "ui": f"http://127.0.0.1:{port}"}
    finally:
        cli("server", "stop", env=env)


def client_env(server: dict) -> dict:
    """A campaignflow process using the test's own store and the module's Prefect server."""
    return {"PREFECT_API_URL": server["api"], "CAMPAIGNFLOW_SERVER_PORT": server["CAMPAIGNFLOW_SERVER_PORT"]}


def flow_run(server: dict, run_id: str) -> dict:
    return requests.get(f"{server['api']}/flow_runs/{run_id}", timeout=10).json()




def approve_all(campaign_id: str, stop: threading.Event) -> None:
    """Approvers answering every gate through the core decision door (the waiting run's watcher resumes it)."""
    from campaignflow.approvals import decide, pending_for

    while not stop.wait(0.3):
        with db.session() as s:
            pending = [(g, left) for g, left in pending_for(s) if g.campaign_id == campaign_id]
        for gate, left in pending:
            with db.session(write=True) as s:
                decide(s, gate.id, left[0], "approve", entry_point="test")


# -- the local server: its UI reaches its API, Prefect's own CLI works against it, a browser sees the runs --

def test_the_local_servers_ui_asks_its_own_api(local_server):
    settings = requests.get(f"{local_server['ui']}/ui-settings", timeout=10).json()
    assert settings["api_url"] == local_server["api"]  # was http://127.0.0.1:4200/api whatever the port


@pytest.mark.parametrize("command", [("work-pool", "ls"), ("deployment", "ls"), ("flow-run", "ls")])
def test_prefects_own_cli_works_against_the_local_server(local_server, command):
    from importlib.metadata import version

    assert version("fastapi").startswith("0.150."), "FastAPI 0.151+ answers 422 to the Prefect 3.8.8 client"
    prefect = Path(sys.executable).with_name("prefect")
    result = subprocess.run([str(prefect), *command], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PREFECT_API_URL": local_server["api"]})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "422" not in result.stdout + result.stderr


def test_the_demo_shows_in_the_prefect_ui_in_a_real_browser(local_server, browser):
    """The README's promise: run the demo, open the printed address, see the run (no 'Can't connect')."""
    demo = cli("demo", "--pause", "0.1", env={k: v for k, v in local_server.items() if k.isupper()}, timeout=400)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    for noise in ("Traceback", "Failed to initialize plugins", "CancelledError"):  # Prefect's, not the user's concern
        assert noise not in demo.stdout + demo.stderr, demo.stdout + demo.stderr
    address = re.search(r"Prefect UI: (\S+/runs)", demo.stdout).group(1)
    assert address == f"{local_server['ui']}/runs"
    run_name = re.search(r"Demo campaign (\S+):", demo.stdout).group(1)
    page = browser.new_page()
    try:
        page.goto(address, wait_until="domcontentloaded", timeout=60_000)
        page.get_by_text(run_name).first.wait_for(timeout=90_000)
        assert "Can't connect to Server API" not in page.content()
    finally:
        page.close()


# -- a waiting run never expires; a killed run is seen, said, and recovered by one command ---------------

def test_a_killed_run_is_reported_recovered_once_and_never_doubled(home, tmp_path, local_server):
    env = {**client_env(local_server), "CAMPAIGNFLOW_GATE_TIMEOUT": "2"}  # the setting that used to fail runs
    spec_path = write_spec(tmp_path / "webinar.yaml", future_spec())
    first = Terminal("run", str(spec_path), env=env)
    second = None
    try:
        first.wait_for("waiting at gate #1")
        with db.session() as s:
            run_id = s.get(m.Campaign, CAMPAIGN).run_holder
        # Prefect never expires the wait: lateness is the store's rule (due dates, on_timeout).
        deadline = time.monotonic() + 60
        while (paused := flow_run(local_server, run_id)["state"])["type"] != "PAUSED":  # "waiting" is said first
            assert time.monotonic() < deadline, paused
            time.sleep(0.3)
        expiry = paused["state_details"]["pause_timeout"]
        assert expiry is None or dt.datetime.fromisoformat(expiry).year > dt.date.today().year + 50

        # A second `run` of the same campaign says who holds it and starts nothing.
        refused = cli("run", str(spec_path), env=env)
        assert_refused(refused, "already has its lifecycle run", run_id, f"pid {first.proc.pid}")
        runs = requests.post(f"{local_server['api']}/flow_runs/filter", timeout=10,
                             json={"flow_runs": {"name": {"any_": [CAMPAIGN]}}}).json()
        assert [r["id"] for r in runs] == [run_id]
        assert f"carries it in pid {first.proc.pid}" in cli("status", CAMPAIGN, env=env).stdout

        first.kill()
        detail = cli("status", CAMPAIGN, env=env).stdout
        assert "lost its process" in detail and f"campaignflow recover {CAMPAIGN}" in detail, detail
        overview = cli("status", env=env).stdout
        assert f"{CAMPAIGN}: its run {run_id} lost its process" in overview, overview
        approved = cli("approve", "1", "--as", "priya", env=env)
        assert approved.returncode == 0, approved.stderr
        assert "no run is waiting for this campaign" in approved.stdout and "resumes now" not in approved.stdout
        assert f"`campaignflow recover {CAMPAIGN}` continues it" in approved.stdout

        second = Terminal("recover", CAMPAIGN, env=env)
        second.wait_for("marked crashed")
        assert flow_run(local_server, run_id)["state"]["type"] == "CRASHED"
        stop = threading.Event()
        approver = threading.Thread(target=approve_all, args=(CAMPAIGN, stop), daemon=True)
        approver.start()
        try:
            assert second.proc.wait(240) == 0, second.text
        finally:
            stop.set()
        assert "is completed." in second.text and "[1/7] goals: 2 goal(s) approved" in second.text
    finally:
        first.kill()
        if second:
            second.kill()
    with db.session() as s:
        completed = [e.subject for e in s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "step.completed"))]
        campaign = s.get(m.Campaign, CAMPAIGN)
    assert sorted(completed) == sorted(m.STEPS)  # each step once: the team heard "goals approved" once
    assert campaign.run_holder is None  # released at the end


def test_two_runs_started_at_once_make_one_lifecycle_run(home, tmp_path, local_server):
    db.engine()  # a store that exists (concurrent first use is another item's test)
    spec_path = write_spec(tmp_path / "webinar.yaml", future_spec())
    runs = [Terminal("run", str(spec_path), env=client_env(local_server)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 180
        while not any("waiting at gate #1" in r.text for r in runs):
            assert time.monotonic() < deadline, "\n---\n".join(r.text for r in runs)
            time.sleep(0.3)
        waiting = next(r for r in runs if "waiting at gate #1" in r.text)
        other = next(r for r in runs if r is not waiting)
        assert other.proc.wait(120) == 1, other.text
        assert "Traceback" not in other.text
        assert "already has its lifecycle run" in other.text or "claimed by another run" in other.text
        with db.session() as s:
            attempts = s.exec(select(m.StepRun.attempts).where(m.StepRun.step == "goals")).one()
        assert attempts == 1
    finally:
        for r in runs:
            r.kill()


# -- Prefect unreachable, or no deployment: said before anything is registered --------------------------

@pytest.mark.parametrize("deployed", [True, False])
def test_an_unreachable_prefect_api_is_named_before_registering(home, tmp_path, deployed):
    url = f"http://127.0.0.1:{free_port()}/api"
    spec_path = write_spec(tmp_path / "webinar.yaml", future_spec())
    store = f"sqlite:///{home / 'campaignflow.db'}"
    before = store_row_counts(store)
    result = cli("run", str(spec_path), *(["--deployed"] if deployed else []), env={"PREFECT_API_URL": url})
    assert_refused(result, url, "not reachable", "campaignflow server start", "PREFECT_API_URL")
    assert "ConnectError" not in result.stderr
    assert store_row_counts(store) == before


def test_a_missing_deployment_is_named_before_registering(home, tmp_path, local_server):
    spec_path = write_spec(tmp_path / "webinar.yaml", future_spec())
    db.engine()
    before = store_row_counts(f"sqlite:///{home / 'campaignflow.db'}")
    result = cli("run", str(spec_path), "--deployed", env=client_env(local_server))
    assert_refused(result, "no deployment campaign-lifecycle/lifecycle", "python -m deployments.lifecycle")
    assert store_row_counts(f"sqlite:///{home / 'campaignflow.db'}") == before


# -- the store's claim: atomic on SQLite and PostgreSQL, and the rule for a live run ---------------------

def _registered(data=None) -> str:
    import yaml

    from campaignflow import store
    from campaignflow.spec import validate_spec_data

    data = data or future_spec()
    with db.session() as s:
        store.register_campaign(s, validate_spec_data(data), yaml.safe_dump(data), ROOT)
    return data["id"]


def _at_once(n: int, fn) -> list:
    barrier, results = threading.Barrier(n), [None] * n

    def one(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # noqa: BLE001  collected: the test says which
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_registration_of_one_spec_is_one_campaign(store_url, tmp_path):
    from campaignflow.app.commands.campaigns import _register

    db.engine()
    spec_path = write_spec(tmp_path / "webinar.yaml", future_spec())
    results = _at_once(6, lambda i: _register(spec_path))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(created for _, created in results) == [False] * 5 + [True]
    with db.session() as s:
        assert len(s.exec(select(m.Campaign)).all()) == 1


def test_one_claim_wins_among_concurrent_runs(store_url):
    campaign_id = _registered()

    def claim(i):
        with db.session(write=True) as s:
            return claims.claim(s, campaign_id, f"run-{i}", "host-a", 1000 + i)

    results = _at_once(6, claim)
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert {r for r in results if r is not None} == {f"run-{winners[0]}"}
    with db.session(write=True) as s:
        assert claims.claim(s, campaign_id, f"run-{winners[0]}", "host-a", 1) is None  # its own: kept
        assert not claims.release(s, campaign_id, "someone-else")
        later = m.utcnow() + dt.timedelta(seconds=claims.LEASE_SECONDS + 1)
        assert claims.claim(s, campaign_id, "run-late", "host-b", 7, now=later) is None  # lease expired: taken


def _holder(lease_in: float | None = 30, **fields) -> claims.Holder:
    """A holder whose lease ends `lease_in` seconds from now (None: no process, a suspended deployed run)."""
    lease = None if lease_in is None else m.utcnow() + dt.timedelta(seconds=lease_in)
    base = dict(campaign_id="c", status="running", step="budget", run_id="r1", host="elsewhere", pid=42,
                lease_until=lease)
    return claims.Holder(**{**base, **fields})


SUSPENDED = dict(lease_in=None, host="", pid=None)


@pytest.mark.parametrize("holder, prefect, reachable, state", [
    ({}, ("PAUSED", "Paused"), True, "holding"),
    (dict(lease_in=-1), ("PAUSED", "Paused"), True, "orphaned"),
    (dict(host=socket.gethostname(), pid=2 ** 22 + 12345), ("RUNNING", "Running"), True, "orphaned"),
    ({}, ("CANCELLED", "Cancelled"), True, "orphaned"),
    (SUSPENDED, ("PAUSED", "Suspended"), True, "waiting-suspended"),
    (SUSPENDED, ("FAILED", "Failed"), True, "orphaned"),
    (SUSPENDED, None, True, "orphaned"),
    (SUSPENDED, None, False, "unknown"),
    (dict(lease_in=None, run_id=None), None, True, "none"),
    (dict(lease_in=None, run_id=None, status="completed"), None, True, "finished"),
])
def test_where_the_store_and_prefect_disagree_status_says_so(holder, prefect, reachable, state):
    health = claims.run_health(_holder(**holder), prefect, prefect_reachable=reachable)
    assert health.state == state
    assert ("campaignflow recover c" in health.text) == (state in ("orphaned", "none"))
