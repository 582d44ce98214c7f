"""Serve the ingest-metrics flow: one deployment per metric source, each on its own cron schedule.

The sources are those the registered campaigns name (`measurement.sources`);
each deployment runs on the source's `schedule:` (default 06:00 UTC daily,
or $CAMPAIGNFLOW_INGEST_CRON). The platform limits are created up front.

    python -m deployments.ingest            # serve all sources here (Ctrl-C stops)
    python -m deployments.ingest --list     # show what would be served
"""

from __future__ import annotations

import sys

def source_deployments():  # -> list[RunnerDeployment]
    from campaignflow import db, ingest, settings
    from flows.ingest_metrics import ingest_metrics

    default = settings.get().ingest_cron
    with db.session() as s:
        configs = ingest.source_names(s)
    return [ingest_metrics.to_deployment(
        name=f"ingest-{name}", cron=config.schedule or default, parameters={"source": name, "trigger": "schedule"},
        tags=["ingest", config.kind], description=f"{config.kind} {config.account or config.path}: "
                                                 f"campaigns {', '.join(config.campaigns)}")
        for name, config in configs.items()]


def main(argv: list[str]) -> None:
    from prefect import serve

    from tasks.ingest import ensure_platform_limits

    deployments = source_deployments()
    if not deployments:
        print("no registered campaign names a metric source; nothing to serve")
        return
    for d in deployments:
        print(f"{d.name}: cron {d.schedules[0].schedule.cron}  {d.description}")
    if "--list" in argv:
        return
    for kind in sorted({tag for d in deployments for tag in d.tags if tag != "ingest"}):
        ensure_platform_limits(kind)
    serve(*deployments)


if __name__ == "__main__":
    main(sys.argv[1:])
