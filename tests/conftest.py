"""Shared fixtures: a fresh store per test (SQLite file; PostgreSQL when reachable), one Prefect harness per session."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "campaignflow" / "examples"
PG_ADMIN_URL = os.environ.get("CAMPAIGNFLOW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> str | None:
    """None when PostgreSQL is reachable, else the reason to skip."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=2):
            return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_ADMIN_URL} ({exc.__class__.__name__})"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An isolated $CAMPAIGNFLOW_HOME with a SQLite store."""
    from campaignflow import db

    monkeypatch.setenv("CAMPAIGNFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CAMPAIGNFLOW_DATABASE_URL", raising=False)
    yield tmp_path / "home"
    db.dispose_all()


@pytest.fixture
def pg_url(monkeypatch):
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    reason = postgres_available()
    if reason:
        if os.environ.get("CAMPAIGNFLOW_REQUIRE_PG"):
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg

    name = f"cf_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    monkeypatch.setenv("CAMPAIGNFLOW_DATABASE_URL", url)
    yield url
    from campaignflow import db

    db.dispose_all()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, home):
    """Run the test once on SQLite and once on PostgreSQL (skipped when not reachable)."""
    if request.param == "sqlite":
        return f"sqlite:///{home / 'campaignflow.db'}"
    return request.getfixturevalue("pg_url")


def example_data(name: str = "b2b-webinar") -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def future_spec(name: str = "b2b-webinar", **changes) -> dict:
    """An example spec moved so it starts next month, whatever today is."""
    data = example_data(name)
    shift = (dt.date.today().replace(day=1) + dt.timedelta(days=40)) - dt.date.fromisoformat(str(data["start"]))
    for key in ("start", "end"):
        data[key] = str(dt.date.fromisoformat(str(data[key])) + shift)
    data["holidays"] = [str(dt.date.fromisoformat(str(h)) + shift) for h in data.get("holidays", [])]
    for goal in data["goals"]:
        goal["deadline"] = str(dt.date.fromisoformat(str(goal["deadline"])) + shift)
    for source in data.get("measurement", {}).get("sources", []):
        if "path" in source:  # a CSV path stays inside the spec's folder: relative to ROOT, the tests' folder
            source["path"] = str((EXAMPLES / source["path"]).relative_to(ROOT))
    data.update(changes)
    return data


def write_spec(path: Path, data: dict) -> Path:
    """Write the spec, with a copy of the example exports its CSV sources name, next to it."""
    import shutil

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for source in data.get("measurement", {}).get("sources", []):
        export = ROOT / str(source.get("path", ""))
        if source.get("path") and export.is_file() and not (path.parent / source["path"]).exists():
            (path.parent / source["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(export, path.parent / source["path"])
    return path


def cli(*args: str, env: dict | None = None, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real `campaignflow` command in a child process."""
    return subprocess.run([sys.executable, "-m", "campaignflow", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, input=input, cwd=ROOT)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One real Prefect server for the whole session; yields its API URL.

    With PostgreSQL reachable (always in CI) it is `prefect server start` on a fresh PostgreSQL
    database, the scale-out configuration, which also stays up under load where the SQLite test
    harness can lock up. Otherwise Prefect's test harness (SQLite).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if postgres_available() is None:
        yield from _prefect_server_on_postgres(tmp_path_factory.mktemp("prefect"))
        return
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        yield url
        os.environ.pop("PREFECT_API_URL", None)


def _prefect_server_on_postgres(home: Path):
    import signal
    import socket
    import time

    import prefect.context
    import psycopg
    import requests
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = f"cf_prefect_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_DATABASE_CONNECTION_URL":
               PG_ADMIN_URL.rsplit("/", 1)[0].replace("+psycopg", "+asyncpg") + f"/{name}"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the Prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.3)
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings(updates={PREFECT_API_URL: url}):
            # Threads and contexts copied before this point must see the same server.
            with prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
                yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    """A real headless Chromium (Debian's package) driven by playwright; skipped with the reason when absent.

    One per test, not per session: playwright's sync API keeps an asyncio loop running in the main thread
    while it is open, and Prefect's sync calls in later tests would then hand back unawaited coroutines.
    """
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[test]')"
    if reason:
        if os.environ.get("CAMPAIGNFLOW_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


class Terminal:
    """A `campaignflow` command running in its own process (as in a second terminal), its output collected
    line by line as it comes."""

    def __init__(self, *args: str, env: dict | None = None):
        import threading

        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "campaignflow", *args], cwd=ROOT,
                                     env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.text:
                return
            if self.proc.poll() is not None and text not in self.text:
                time.sleep(0.5)  # the last lines may still be on their way
                if text in self.text:
                    return
                raise AssertionError(f"process ended before {text!r}:\n{self.text}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear in {timeout}s:\n{self.text}")

    def kill(self) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def finish(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)


@contextmanager
def serve_web(monkeypatch) -> Iterator[str]:
    """`campaignflow.app.web:app` under uvicorn on a free loopback port, in a daemon thread; yields its base URL,
    which is also set as CAMPAIGNFLOW_WEB_URL (so links point at it), and stops the server afterwards."""
    import socket
    import threading
    import time

    import uvicorn

    monkeypatch.setenv("CAMPAIGNFLOW_SECRET", "test-secret-key")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from campaignflow.app.web import app

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("CAMPAIGNFLOW_WEB_URL", base)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(5)
