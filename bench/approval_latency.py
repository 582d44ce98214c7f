"""Seconds from a decision to the waiting flow running again, over N gates on a local Prefect server.

For each gate a flow waits with campaignflow's gate machinery (pause + store watcher);
another thread decides through `decide_and_resume` (the CLI's path) the moment the run is
paused, and we measure until the flow runs again. The baseline, in the same run, is bare
Prefect: `pause_flow_run` resumed by `resume_flow_run`, with the same poll interval.

Run: .venv/bin/python bench/approval_latency.py [--gates 20]   (target: median <= 2 s)
Ends with a JSON line.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ["CAMPAIGNFLOW_HOME"] = tempfile.mkdtemp(prefix="cf-bench-")
os.environ.pop("CAMPAIGNFLOW_DATABASE_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import yaml  # noqa: E402
from sqlmodel import select  # noqa: E402
from prefect import flow  # noqa: E402
from prefect.context import FlowRunContext  # noqa: E402
from prefect.flow_runs import pause_flow_run, resume_flow_run  # noqa: E402

from campaignflow import db, models as m, settings, store  # noqa: E402
from campaignflow.spec import validate_spec_data  # noqa: E402
from conftest import ROOT, future_spec  # noqa: E402
from flows.gates import decide_and_resume, wait_for_gates  # noqa: E402


def run_state(run_id: str) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.type.value


def open_bench_gate(campaign_id: str, i: int) -> int:
    with db.session() as s:
        gate = store.open_gate(s, key=f"{campaign_id}/bench/{i}", campaign_id=campaign_id, kind="goals",
                               title=f"bench gate {i}", approvers=["priya"])
        return gate.id


# Shared with the decider threads; module-level because Prefect copies flow parameters.
RESUMED_AT: dict[int, float] = {}
PAUSED: list[str] = []
BARE_RESUMED_AT: list[float] = []


@flow(name="bench-campaignflow-gates")
def wait_at_gates(campaign_id: str, n: int) -> None:
    for i in range(n):
        gate_id = open_bench_gate(campaign_id, i)
        wait_for_gates([gate_id])
        RESUMED_AT[gate_id] = time.perf_counter()


@flow(name="bench-bare-prefect")
def bare_pauses(n: int) -> None:
    for i in range(n):
        PAUSED.append(str(FlowRunContext.get().flow_run.id))
        pause_flow_run(timeout=600, poll_interval=max(1, int(settings.get().gate_poll)), key=f"bare-{i}")
        BARE_RESUMED_AT.append(time.perf_counter())


def campaignflow_latencies(n: int) -> list[float]:
    data = future_spec()
    spec = validate_spec_data(data)
    with db.session() as s:
        store.register_campaign(s, spec, yaml.safe_dump(data), ROOT)
    decided_at, resumed_at = {}, RESUMED_AT

    def decider():
        for _ in range(n):
            while True:
                with db.session() as s:
                    gate = s.exec(select(m.ApprovalGate).where(m.ApprovalGate.status == "open",
                                                                m.ApprovalGate.flow_run_id.is_not(None))).first()
                if gate is not None and run_state(gate.flow_run_id) == "PAUSED":
                    break
                time.sleep(0.02)
            decided_at[gate.id] = time.perf_counter()
            decide_and_resume(gate.id, "priya", "approve", entry_point="bench")
            while gate.id not in resumed_at:
                time.sleep(0.01)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(decider,), daemon=True)
    thread.start()
    wait_at_gates(spec.id, n)
    thread.join()
    return [resumed_at[g] - decided_at[g] for g in decided_at]


def bare_latencies(n: int) -> list[float]:
    paused, resumed_at, decided_at = PAUSED, BARE_RESUMED_AT, []

    def resumer():
        for i in range(n):
            while len(paused) <= i or run_state(paused[i]) != "PAUSED":
                time.sleep(0.02)
            decided_at.append(time.perf_counter())
            resume_flow_run(paused[i])
            while len(resumed_at) <= i:
                time.sleep(0.01)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(resumer,), daemon=True)
    thread.start()
    bare_pauses(n)
    thread.join()
    return [r - d for r, d in zip(resumed_at, decided_at)]


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"median_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))], 3),
            "max_s": round(ordered[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gates", type=int, default=20)
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    import logging

    logging.getLogger("prefect").setLevel(logging.WARNING)
    with prefect_test_harness(server_startup_timeout=120):
        os.environ["PREFECT_API_URL"] = __import__("prefect.settings", fromlist=["x"]).PREFECT_API_URL.value()
        ours = summary(campaignflow_latencies(args.gates))
        bare = summary(bare_latencies(args.gates))
    print(f"gates: {args.gates}, poll interval {settings.get().gate_poll:g} s")
    print(f"campaignflow decision -> running again: median {ours['median_s']} s, p95 {ours['p95_s']} s, max {ours['max_s']} s")
    print(f"bare Prefect resume  -> running again: median {bare['median_s']} s, p95 {bare['p95_s']} s, max {bare['max_s']} s")
    ratio = round(ours["median_s"] / bare["median_s"], 2) if bare["median_s"] else None
    print(json.dumps({"gates": args.gates, "campaignflow": ours, "bare_prefect": bare, "ratio": ratio,
                      "target_median_s": 2.0, "target_met": ours["median_s"] <= 2.0}))


if __name__ == "__main__":
    main()
