"""Channel URLs are secrets: they never appear in logs, CLI output, error messages, the store or Prefect artifacts."""

from __future__ import annotations

import logging

import pytest
import yaml
from sqlmodel import select

from campaignflow import db, models as m
from campaignflow.models_notify import OutboxMessage
from campaignflow.notify import service
from campaignflow.notify.channels import load_local
from chat_endpoints import free_port, notify_spec, open_gate, register
from conftest import cli

TOKEN = "T0KEN4711xyzSECRET"
PASSWORD = "Geheim-Pa55w0rd-99"
MAIL_PASSWORD = "SmtpPa55-Sekret-42"
SECRETS = (TOKEN, PASSWORD, MAIL_PASSWORD)


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a channel secret leaked into {where}:\n{text}"


@pytest.fixture
def secret_channels(home, monkeypatch):
    """Channels whose URLs hold a token and passwords, pointing at endpoints that are down."""
    monkeypatch.setenv("CAMPAIGNFLOW_NOTIFY_BACKOFF", "0")
    monkeypatch.setenv("CAMPAIGNFLOW_NOTIFY_MAX_ATTEMPTS", "2")
    home.mkdir(parents=True, exist_ok=True)
    chat_port, mail_port = free_port(), free_port()  # nothing listens on either
    (home / "channels.yaml").write_text(yaml.safe_dump({
        "channels": {
            "team-chat": f"json://bot:{PASSWORD}@127.0.0.1:{chat_port}/hooks/{TOKEN}",
            "priya-mail": [f"mailto://campaignflow:{MAIL_PASSWORD}@127.0.0.1:{mail_port}"
                           f"?to=priya@northwind.example&mode=insecure&smtp=127.0.0.1"],
        },
        "people": {"priya": "priya-mail"},
        "default": "team-chat",
    }))
    cid = register(notify_spec({}))
    open_gate(cid, "goals", ["priya", "felix"])
    return {"campaign": cid, "chat_port": chat_port, "mail_port": mail_port}


def test_secrets_stay_out_of_cli_output_errors_logs_and_the_store(secret_channels, caplog):
    outputs = []
    for args in (("channels", "list"), ("channels", "list", "--json"), ("channels", "test", "team-chat"),
                 ("channels", "test", "priya-mail"), ("sweep",), ("sweep",), ("outbox", "list"),
                 ("outbox", "list", "--json"), ("outbox", "retry"), ("status", "--json")):
        result = cli(*args)
        outputs.append((args, result))
        assert "Traceback" not in result.stderr, result.stderr
        assert_clean(result.stdout + result.stderr, f"`campaignflow {' '.join(args)}`")
    test_chat = dict((a, r) for a, r in outputs)[("channels", "test", "team-chat")]
    assert test_chat.returncode == 1 and "did NOT arrive" in test_chat.stdout
    assert "json://bot:****@127.0.0.1" in test_chat.stdout  # masked, yet recognisable
    listing = dict((a, r) for a, r in outputs)[("outbox", "list")]
    assert "dead" in listing.stdout and "why:" in listing.stdout

    # In-process, with every logger at DEBUG: apprise's own request logging included.
    caplog.set_level(logging.DEBUG)
    for name in ("apprise", "campaignflow", ""):
        logging.getLogger(name).setLevel(logging.DEBUG)
    registry = load_local()
    with db.session(write=True) as s:
        from campaignflow.notify import outbox

        outbox.retry(s)
    report = service.run_once(registry)
    assert report.delivery.sent == 0 and report.delivery.problems
    assert_clean(caplog.text, "the log")
    assert_clean("\n".join(report.delivery.problems), "delivery problems")

    with db.session() as s:
        stored = [f"{r.title} {r.body} {r.last_error} {r.channel} {r.recipient}" for r in s.exec(select(OutboxMessage))]
        stored += [f"{e.action} {e.subject} {e.detail}" for e in s.exec(select(m.AuditEvent))]
    assert stored
    assert_clean("\n".join(stored), "the store")


def test_a_malformed_channel_url_is_refused_without_echoing_it(home, monkeypatch):
    home.mkdir(parents=True, exist_ok=True)
    (home / "channels.yaml").write_text(yaml.safe_dump({"channels": {"team-chat": f"slack:/{TOKEN}/B000/{PASSWORD}"}}))
    result = cli("channels", "list")
    assert result.returncode == 1
    assert "channels.team-chat[0]: is not an apprise URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert_clean(result.stdout + result.stderr, "the error message")

    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_TEAM_CHAT", f"not a url {TOKEN}")
    (home / "channels.yaml").unlink()
    result = cli("sweep")
    assert result.returncode == 1 and "CAMPAIGNFLOW_CHANNEL_TEAM_CHAT" in result.stderr
    assert_clean(result.stdout + result.stderr, "the error message")


@pytest.mark.prefect
def test_secrets_stay_out_of_prefect_logs_and_artifacts(secret_channels, prefect_api):
    from flows.reminder_sweep import reminder_sweep

    state = reminder_sweep(return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert summary["retrying"] + summary["dead"] > 0  # the endpoints are down: failures were logged
    run_id = state.state_details.flow_run_id

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # the run's logs reach the server in batches

    import requests

    rid = str(run_id)
    logs = requests.post(f"{prefect_api}/logs/filter", timeout=30,
                         json={"logs": {"flow_run_id": {"any_": [rid]}}, "limit": 200, "offset": 0}).json()
    artifacts = requests.post(f"{prefect_api}/artifacts/filter", timeout=30,
                              json={"artifacts": {"flow_run_id": {"any_": [rid]}}, "limit": 50, "offset": 0,
                                    "sort": "CREATED_DESC"}).json()
    text = "\n".join(log["message"] for log in logs)
    assert "delivery:" in text
    assert_clean(text, "the Prefect run logs")
    assert artifacts
    assert any("Reminder sweep" in str(a["data"]) for a in artifacts)
    assert_clean("\n".join(str(a["data"]) + str(a["description"]) for a in artifacts), "the Prefect artifacts")


def test_a_masked_url_hides_its_secret_parts_but_keeps_where_it_goes():
    from campaignflow.notify.channels import masked

    # A webhook whose only secret is its path: the host and port still say which endpoint it is.
    shown = masked(f"json://hooks.example.com:8443/services/{TOKEN}")
    assert shown.startswith("json://hooks.example.com:8443/") and TOKEN not in shown
    shown = masked(f"mailtos://campaignflow:{MAIL_PASSWORD}@smtp.example.com?to=priya@northwind.example")
    assert "smtp.example.com" in shown and MAIL_PASSWORD not in shown
