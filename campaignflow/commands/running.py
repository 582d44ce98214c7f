"""Running a campaign's lifecycle flow in this process, with its progress on the console."""

from __future__ import annotations

import logging
import os
import sys
import time

from campaignflow import localserver


def quiet_prefect_console() -> None:
    """Keep Prefect's INFO lines (they still reach the Prefect API and UI) off the user's console."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.WARNING)
    # An ephemeral server shutting down prints CancelledError noise; it is not the user's concern.
    logging.getLogger("prefect.server").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn").setLevel(logging.CRITICAL)


def show_progress(console) -> None:
    class ConsoleHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            console.print(f"{stamp}  {record.getMessage()}", highlight=False, markup=False, soft_wrap=True)

    log = logging.getLogger("campaignflow.progress")
    log.handlers[:] = [ConsoleHandler()]
    log.setLevel(logging.INFO)
    log.propagate = False


def connect_prefect(console, autostart: bool = True) -> str | None:
    if not os.environ.get("PREFECT_API_URL") and autostart and not localserver.healthy(localserver.api_url()):
        console.print(f"Starting the local Prefect server at {localserver.ui_url(localserver.api_url())} "
                      f"(first start takes ~15 s; stop it with `campaignflow server stop`)")
    return localserver.configure(autostart=autostart)


def run_lifecycle(campaign_id: str, console) -> str:
    """Run (or continue) the campaign's lifecycle flow here; returns the campaign's final status."""
    api = connect_prefect(console)
    console.print(f"Prefect UI: {localserver.ui_url(api)}/runs  (flow `campaign-lifecycle`, run `{campaign_id}`)")
    from flows.lifecycle import campaign_lifecycle

    quiet_prefect_console()
    show_progress(console)
    sys.stdout.flush()
    return campaign_lifecycle(campaign_id)


def run_deployed(campaign_id: str, console) -> None:
    """Start the campaign on the served lifecycle deployment and return at once."""
    connect_prefect(console)
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from campaignflow.errors import UserError
    from campaignflow.links import run_link
    from deployments.lifecycle import DEPLOYMENT

    try:
        run = run_deployment(DEPLOYMENT, parameters={"campaign_id": campaign_id}, timeout=0,
                             flow_run_name=campaign_id)
    except ObjectNotFound:
        raise UserError(f"no deployment {DEPLOYMENT} on this Prefect server; serve it first with "
                        "`python -m deployments.lifecycle`") from None
    console.print(f"Started on {DEPLOYMENT}: {run_link(str(run.id))}")
    console.print(f"Follow it with `campaignflow status {campaign_id}`; gates wait suspended, holding no worker.")
