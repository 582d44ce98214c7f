"""Serve the campaign lifecycle as a deployment.

Runs of a deployment wait at approval gates *suspended*: the process exits
and no worker is held while people think (for days if need be). A decision
resumes the run; it starts again from the top, skips the completed steps
and carries on from the gate.

Serve it on any machine that reaches the Prefect API and the campaign store
(same PREFECT_API_URL and CAMPAIGNFLOW_DATABASE_URL as the deciders):

    python -m deployments.lifecycle              # deployment campaign-lifecycle/lifecycle
    campaignflow run SPEC --deployed             # start a campaign on it

Runs are picked up every PREFECT_RUNNER_POLL_FREQUENCY seconds (Prefect's
default 10; 2 makes resumes feel immediate).
"""

from __future__ import annotations

from campaignflow import settings
from flows.lifecycle import campaign_lifecycle

DEPLOYMENT = "campaign-lifecycle/lifecycle"


def main() -> None:
    campaign_lifecycle.serve(name="lifecycle", limit=settings.get().run_limit)


if __name__ == "__main__":
    main()
