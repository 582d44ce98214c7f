"""`approvals --json` and `status --json` with 100 campaigns and 1,000 open gates.

Builds the store through the real core (register_campaign, open_gate, decide), then times
the real CLI commands as a user would run them. Baseline in the same run: `campaignflow
--help` (process start and imports, no store work). PostgreSQL too when reachable.

Run: .venv/bin/python bench/approval_scale.py   (target: each <= 1 s)
Ends with a JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CAMPAIGNS, GATES_PER_CAMPAIGN, RUNS = 100, 10, 5


def build_store(env: dict) -> None:
    os.environ.update(env)
    import yaml

    from campaignflow import approvals, db, store
    from campaignflow.spec import validate_spec_data
    from conftest import ROOT, future_spec

    base = future_spec()
    for c in range(CAMPAIGNS):
        data = {**base, "id": f"campaign-{c:03d}", "name": f"Campaign {c}"}
        spec = validate_spec_data(data)
        with db.session() as s:
            store.register_campaign(s, spec, yaml.safe_dump(data), ROOT)
            for g in range(GATES_PER_CAMPAIGN):
                gate = store.open_gate(s, key=f"{spec.id}/bench/{g}", campaign_id=spec.id, kind="review",
                                       title=f"Review {g}", approvers=["maria", "jana"], policy="all")
                if g % 2:
                    approvals.decide(s, gate.id, "maria", "approve")  # half the gates are partly decided
    db.dispose_all()


def timed(args: list[str], env: dict) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(RUNS):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "campaignflow", *args], env=env, capture_output=True,
                             text=True, check=True).stdout
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def measure(label: str, env: dict) -> dict:
    build_store(env)
    env = {**os.environ, **env}
    help_s, _ = timed(["--help"], env)
    approvals_s, out = timed(["approvals", "--json"], env)
    assert len(json.loads(out)) == CAMPAIGNS * GATES_PER_CAMPAIGN
    status_s, out = timed(["status", "--json"], env)
    assert len(json.loads(out)) == CAMPAIGNS
    for_s, out = timed(["approvals", "--for", "jana", "--json"], env)
    print(f"{label}: --help {help_s:.3f} s | approvals --json {approvals_s:.3f} s | status --json {status_s:.3f} s "
          f"| approvals --for jana {for_s:.3f} s")
    return {"help_s": round(help_s, 3), "approvals_s": round(approvals_s, 3), "status_s": round(status_s, 3),
            "approvals_for_s": round(for_s, 3), "ratio_approvals": round(approvals_s / help_s, 2),
            "ratio_status": round(status_s / help_s, 2)}


def postgres_env() -> dict | None:
    try:
        import psycopg

        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        name = f"cf_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return {"CAMPAIGNFLOW_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"}
    except Exception:  # noqa: BLE001
        return None


def main() -> None:
    home = tempfile.mkdtemp(prefix="cf-scale-")
    results = {"campaigns": CAMPAIGNS, "open_gates": CAMPAIGNS * GATES_PER_CAMPAIGN,
               "sqlite": measure("sqlite", {"CAMPAIGNFLOW_HOME": home})}
    pg = postgres_env()
    if pg:
        results["postgresql"] = measure("postgresql", {"CAMPAIGNFLOW_HOME": home, **pg})
    worst = max(v for r in results.values() if isinstance(r, dict) for k, v in r.items()
                if k in ("approvals_s", "status_s"))
    results.update(ratio=results["sqlite"]["ratio_approvals"], target_s=1.0, target_met=worst <= 1.0)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
