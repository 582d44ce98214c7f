"""Links people can click: the Prefect run, and a gate's one-click approval page.

One home for URL shapes, so chat messages, artifacts and the CLI agree.
"""

from __future__ import annotations

from campaignflow import settings


def prefect_ui_url() -> str | None:
    """The Prefect UI base URL: PREFECT_UI_URL, else derived from PREFECT_API_URL."""
    config = settings.get()
    if config.prefect_ui_url:
        return config.prefect_ui_url.rstrip("/")
    api = config.prefect_api_url
    if api:
        return api.rstrip("/").removesuffix("/api")
    return None


def run_link(flow_run_id: str | None) -> str | None:
    base = prefect_ui_url()
    return f"{base}/runs/flow-run/{flow_run_id}" if base and flow_run_id else None


def web_url() -> str | None:
    """Where `campaignflow web` is reachable for the people who click: $CAMPAIGNFLOW_WEB_URL."""
    url = settings.get().web_url
    return url.rstrip("/") if url else None


def approval_link(gate_id: int, person: str, decision: str = "approve") -> str | None:
    """A signed one-click decision link for `person` on a gate; None when no web URL is configured."""
    base = web_url()
    if not base:
        return None
    from campaignflow.signing import sign

    return f"{base}/decide/{sign(gate_id, person, decision)}"
