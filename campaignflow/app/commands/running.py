"""Running a campaign's lifecycle flow, here or on the deployment; and asking Prefect whether a campaign's run
still lives (the store's claim says who holds a campaign; Prefect says whether that run is alive)."""

from __future__ import annotations

import logging
import sys
import time

from campaignflow import localserver, settings


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
    if not settings.get().prefect_api_url and autostart and not localserver.healthy(localserver.api_url()):
        console.print(f"Starting the local Prefect server at {localserver.ui_url(localserver.api_url())} "
                      f"(first start takes ~15 s; stop it with `campaignflow server stop`)")
    return localserver.configure(autostart=autostart)


def require_prefect(console) -> str:
    """A reachable Prefect API (the local server is started when none is configured), or a clear error."""
    from campaignflow.errors import UserError

    api = connect_prefect(console)
    if not localserver.healthy(api, timeout=5):
        raise UserError(f"the Prefect API at {api} (PREFECT_API_URL) is not reachable; start it, point "
                        f"PREFECT_API_URL at a running Prefect server, or unset it to use the local one "
                        f"(`campaignflow server start`)")
    return api


def require_deployment(console) -> None:
    """The served lifecycle deployment exists on a reachable Prefect API, or a clear error."""
    require_prefect(console)
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    from campaignflow.errors import UserError
    from deployments.lifecycle import DEPLOYMENT

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(DEPLOYMENT)
    except ObjectNotFound:
        raise UserError(f"no deployment {DEPLOYMENT} on the Prefect server at {settings.get().prefect_api_url}; "
                        "serve it first with `python -m deployments.lifecycle`") from None


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


# -- does the run that holds a campaign still live? ---------------------------------------------------

def _prefect_states(run_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """(state type, state name) of each run Prefect knows; None when no Prefect API answers."""
    if not run_ids:
        return {}
    api = settings.get().prefect_api_url
    if not api or not localserver.healthy(api):
        return None
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)))
    except Exception:  # noqa: BLE001  the server went away between the two calls
        return None
    return {str(r.id): (r.state.type.value, r.state.name) for r in runs if r.state}


def run_health(campaign_id: str | None = None) -> dict:
    """campaign id -> claims.RunHealth for every campaign (or one), from the store's claim and Prefect."""
    from campaignflow import claims, db

    with db.session() as s:
        holders = claims.holders(s, campaign_id)
    states = _prefect_states([h.run_id for h in holders if h.run_id])
    return {h.campaign_id: claims.run_health(h, (states or {}).get(h.run_id), prefect_reachable=states is not None)
            for h in holders}


def _mark_crashed(run_id: str, why: str) -> None:
    """Prefect's run is over: its process is gone (it would otherwise show Running or Paused forever)."""
    from prefect import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, state=Crashed(message=why), force=True)


def take_over(campaign_id: str, console) -> None:
    """Before a run starts: refuse when a live run holds the campaign; end an orphaned run's claim."""
    from campaignflow import claims, db
    from campaignflow.errors import UserError

    health = run_health(campaign_id)[campaign_id]
    if health.state in ("holding", "waiting-suspended", "unknown"):
        raise UserError(f"campaign {campaign_id} already has its lifecycle run: {health.text}. One run per "
                        f"campaign; `campaignflow status {campaign_id}` follows it")
    if health.state != "orphaned":
        return
    orphan = health.holder
    why = f"recovered by campaignflow on {claims.this_process()[0]}: {health.says}"
    states = _prefect_states([orphan.run_id]) or {}
    crashed = states.get(orphan.run_id, ("",))[0] in claims.PREFECT_LIVE_STATES
    if crashed:
        _mark_crashed(orphan.run_id, why)
    with db.session(write=True) as s:
        claims.release(s, campaign_id, orphan.run_id, why=why)
    console.print(f"Run {orphan.run_id} no longer carried the campaign ({health.says})"
                  f"{'; it is marked crashed in Prefect' if crashed else ''}. The campaign continues in a new run.")


def continue_campaign(campaign_id: str, console, deployed: bool = False) -> str | None:
    """Carry a registered campaign on (here, or on the deployment): the one way `run` and `recover` start a
    lifecycle run. Returns the campaign's status at the end of a run here (None when deployed)."""
    from campaignflow.errors import UserError

    take_over(campaign_id, console)
    if deployed:
        run_deployed(campaign_id, console)
        return None
    result = run_lifecycle(campaign_id, console)
    if result == "held":  # another run claimed it a moment before this one
        raise UserError(f"campaign {campaign_id} was claimed by another run at the same moment; "
                        f"`campaignflow status {campaign_id}` follows it")
    return result


def what_happens_next(result, resumed: bool) -> str:
    """After a decision closed a gate: the truth about which run (if any) carries the campaign on."""
    closed = f"the gate is {result.status.replace('_', ' ')}"
    health = run_health(result.campaign_id)[result.campaign_id]
    if health.state == "holding":
        return f"{closed}; the waiting run {health.holder.run_id} " + (
            "resumes now" if resumed else "goes on within seconds")
    if health.state == "waiting-suspended":
        return f"{closed}; the suspended deployed run {health.holder.run_id} resumes when a worker picks it up"
    if health.state in ("finished", "unknown"):
        return f"{closed}; {health.text}"
    return f"{closed}; no run is waiting for this campaign ({health.says}): {health.todo}"
