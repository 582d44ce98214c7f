"""A deployed lifecycle run waits at its gates suspended (no process held) and resumes on a decision."""

from __future__ import annotations

import contextvars
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from prefect import get_client
from sqlmodel import select

from campaignflow import db, models as m
from conftest import ROOT, cli, future_spec, write_spec
from test_lifecycle_flow import approve_everything

pytestmark = pytest.mark.prefect


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def run_state(run_id: str) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.name


def test_deployed_run_suspends_at_gates_and_resumes(home, tmp_path, prefect_api):
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    served = subprocess.Popen([sys.executable, "-m", "deployments.lifecycle"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        spec_path = write_spec(tmp_path / "webinar.yaml", future_spec())
        started = wait_until(lambda: (r := cli("run", str(spec_path), "--deployed")).returncode == 0 and r, 60,
                             "the deployment to be served")
        assert "Started on campaign-lifecycle/lifecycle" in started.stdout

        def suspended_goals_gate():
            with db.session() as s:
                gate = s.exec(select(m.ApprovalGate).where(m.ApprovalGate.kind == "goals")).first()
            return gate if gate and gate.flow_run_id and run_state(gate.flow_run_id) == "Suspended" else None

        gate = wait_until(suspended_goals_gate, 120, "the run to suspend at the goals gate")
        with get_client(sync_client=True) as client:
            suspended = client.read_flow_run(gate.flow_run_id).state
        assert suspended.state_details.pause_timeout is None  # it waits as long as people take, never expires
        status = cli("status", "northwind-webinar-2027q1")
        assert f"deployed run {gate.flow_run_id} holds it" in status.stdout, status.stdout
        approved = cli("approve", str(gate.id), "--as", "priya")
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert (f"the suspended deployed run {gate.flow_run_id} resumes when a worker picks it up"
                in approved.stdout), approved.stdout

        stop = threading.Event()
        approver = threading.Thread(target=contextvars.copy_context().run,
                                    args=(approve_everything, "northwind-webinar-2027q1", stop))
        approver.start()
        try:
            def completed():
                with db.session() as s:
                    return s.get(m.Campaign, "northwind-webinar-2027q1").status == "completed"

            wait_until(completed, 240, "the deployed campaign to complete")
        finally:
            stop.set()
            approver.join()
        with db.session() as s:
            gates = s.exec(select(m.ApprovalGate)).all()
            assert len({g.flow_run_id for g in gates if g.flow_run_id}) == 1  # one run, suspended and resumed
            assert sorted({g.kind for g in gates}) == ["budget", "goals", "review"]
            assert s.get(m.Campaign, "northwind-webinar-2027q1").run_holder is None  # released at the end
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        served.wait(30)
