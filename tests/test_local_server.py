"""`campaignflow server start|status|stop`: the embedded Prefect server, really started and stopped."""

from __future__ import annotations

import socket

from conftest import cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_start_status_stop(home, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    env = {"CAMPAIGNFLOW_SERVER_PORT": str(free_port()), "PREFECT_UI_ENABLED": "false"}
    down = cli("server", "status", env=env)
    assert down.returncode == 1 and "Local server: not running" in down.stdout
    try:
        started = cli("server", "start", env=env, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"Running: UI http://127.0.0.1:{env['CAMPAIGNFLOW_SERVER_PORT']}" in started.stdout
        assert (home / "prefect" / "server.log").exists()
        up = cli("server", "status", env=env)
        assert up.returncode == 0 and "running at" in up.stdout
        again = cli("server", "start", env=env)
        assert again.returncode == 0 and "Already running" in again.stdout
    finally:
        stopped = cli("server", "stop", env=env)
    assert stopped.returncode == 0 and "Stopped." in stopped.stdout
    assert cli("server", "status", env=env).returncode == 1
    assert "not running" in cli("server", "stop", env=env).stdout
