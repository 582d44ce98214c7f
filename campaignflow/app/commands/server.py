"""server start | stop | status: the local Prefect server (the embedded default)."""

from __future__ import annotations

import typer

from campaignflow.app.commands import app, console

server_app = typer.Typer(help="The local Prefect server on SQLite under $CAMPAIGNFLOW_HOME.", no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start() -> None:
    """Start the local Prefect server (no-op when it is up)."""
    from campaignflow import localserver

    out = console()
    if localserver.healthy(localserver.api_url()):
        out.print(f"Already running: {localserver.ui_url(localserver.api_url())}")
        return
    out.print("Starting the local Prefect server (first start takes ~15 s)...")
    url = localserver.start()
    out.print(f"Running: UI {localserver.ui_url(url)}, API {url}. Log: {localserver.log_file()}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server."""
    from campaignflow import localserver

    console().print("Stopped." if localserver.stop() else "The local Prefect server is not running.")


@server_app.command("status")
def server_status() -> None:
    """Say whether the local Prefect server is up, and where."""
    from campaignflow import localserver, settings

    out = console()
    url = settings.get().prefect_api_url
    if url:
        out.print(f"PREFECT_API_URL is set: {url} ({'reachable' if localserver.healthy(url) else 'NOT reachable'})")
    up = localserver.healthy(localserver.api_url())
    out.print(f"Local server: {'running at ' + localserver.ui_url(localserver.api_url()) if up else 'not running'}")
    if not up:
        raise typer.Exit(1)
