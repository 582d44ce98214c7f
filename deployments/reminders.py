"""Serve the reminder sweep on an interval (a long-running process; Ctrl-C stops it).

    python -m deployments.reminders                 # every 15 minutes
    python -m deployments.reminders --every 5       # every 5 minutes

Or with a work pool (deployments on many machines):

    prefect deploy flows/reminder_sweep.py:reminder_sweep -n reminder-sweep --interval 900 -p YOUR_POOL

The sweep is idempotent: two runs at once, or a run after a crash, never
double a message (dedupe keys and claimed outbox rows).
"""

from __future__ import annotations

import argparse
import datetime as dt

from flows.reminder_sweep import reminder_sweep

DEPLOYMENT_NAME = "reminder-sweep"


def deployment(every_minutes: float = 15):
    return reminder_sweep.to_deployment(name=DEPLOYMENT_NAME, interval=dt.timedelta(minutes=every_minutes),
                                        description="Reminders, escalations, client SLA checks and outbox delivery.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=15, help="minutes between sweeps (default 15)")
    args = parser.parse_args()
    if args.every <= 0:
        parser.error("--every must be a positive number of minutes")
    from prefect import serve

    serve(deployment(args.every))


if __name__ == "__main__":
    main()
