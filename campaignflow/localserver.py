"""The embedded default orchestrator: a local `prefect server` on SQLite under $CAMPAIGNFLOW_HOME.

Started by `campaignflow server start`, or by `run`/`demo` when no
PREFECT_API_URL is configured, so a decision typed in a second terminal can
resume a flow waiting in the first. Plain subprocess management: no Prefect
import here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from campaignflow import settings
from campaignflow.errors import UserError


def _dir() -> Path:
    path = settings.get().home_dir() / "prefect"
    path.mkdir(parents=True, exist_ok=True)
    return path


def api_url() -> str:
    return f"http://127.0.0.1:{settings.get().server_port}/api"


def _pid_file() -> Path:
    return _dir() / "server.pid"


def log_file() -> Path:
    return _dir() / "server.log"


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        return requests.get(f"{url.rstrip('/')}/health", timeout=timeout).ok
    except requests.RequestException:
        return False


def running_pid() -> int | None:
    try:
        pid = int(_pid_file().read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def start(wait_seconds: float = 90.0) -> str:
    """Start the local server if it is not up; return its API URL."""
    url = api_url()
    if healthy(url):
        return url
    if running_pid() is None:
        port = str(settings.get().server_port)
        prefect_bin = Path(sys.executable).with_name("prefect")
        command = [str(prefect_bin), "server", "start", "--host", "127.0.0.1", "--port", port]
        # The server inherits this process's environment (passed through, not read here), with our
        # defaults under it and the settings it must have over it.
        env = {"PREFECT_UI_ENABLED": "true", **os.environ, **prefect_env(), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               # The UI asks /ui-settings where its API is; without these it answers port 4200, whatever --port.
               "PREFECT_UI_API_URL": url, "PREFECT_SERVER_API_PORT": port}
        env.pop("PREFECT_API_URL", None)
        with open(log_file(), "ab") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        _pid_file().write_text(str(proc.pid))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if healthy(url):
            return url
        if running_pid() is None:
            break
        time.sleep(0.5)
    raise UserError(f"the local Prefect server did not start; see {log_file()} "
                    f"(or set PREFECT_API_URL to a Prefect server you run)")


def stop() -> bool:
    pid = running_pid()
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    for _ in range(50):
        if running_pid() is None:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)
    return True


def prefect_env() -> dict[str, str]:
    """Prefect's own files live beside campaignflow's unless the user chose otherwise."""
    return {"PREFECT_HOME": str(settings.get().prefect_home or _dir())}


def configure(autostart: bool = True) -> str | None:
    """Point this process's Prefect client at a server; start the local one if allowed and needed.

    Returns the API URL, or None when no server is configured and `autostart` is False.
    """
    # Prefect's client reads its settings from this process's environment, so that is where we
    # tell it which server and which home to use.
    for key, value in prefect_env().items():
        os.environ.setdefault(key, value)
    url = settings.get().prefect_api_url
    if url:
        return url
    if autostart:
        url = start()
    elif healthy(api_url()):
        url = api_url()
    else:
        return None
    os.environ["PREFECT_API_URL"] = url
    return url


def ui_url(api: str) -> str:
    return api[: -len("/api")] if api.endswith("/api") else api
