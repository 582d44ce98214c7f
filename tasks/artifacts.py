"""Markdown artifacts: each lifecycle step leaves a page a person can read in the Prefect UI."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from campaignflow.lifecycle import StepReport


def artifact_key(campaign_id: str, step: str) -> str:
    # Prefect artifact keys allow lowercase letters, digits and dashes only.
    return re.sub(r"[^a-z0-9-]", "-", f"{campaign_id}-{step}".lower())


@task(name="publish-step-report", cache_policy=NO_CACHE)
def publish_step_report(campaign_id: str, step: str, report: StepReport) -> None:
    create_markdown_artifact(key=artifact_key(campaign_id, step), markdown=report.markdown, description=report.summary)
