"""State changes become chat and email messages, delivered through apprise to real local endpoints, exactly once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from campaignflow import db
from campaignflow.approvals import decide
from campaignflow.notify import service
from campaignflow.notify.channels import ChannelRegistry
from campaignflow.notify.rules import fan_out
from chat_endpoints import ChatServer, MailServer, notify_spec, open_gate, outbox_rows, register, set_deliverable
from conftest import ROOT, cli

UTC = dt.timezone.utc


@pytest.fixture
def chat():
    with ChatServer() as server:
        yield server


@pytest.fixture
def mail():
    with MailServer() as server:
        yield server


def registry_for(chat: ChatServer, mail: MailServer | None = None) -> ChannelRegistry:
    channels = {"maria-chat": [chat.url("maria")], "am-chat": [chat.url("am")], "team-chat": [chat.url("team")]}
    if mail is not None:
        channels["priya-mail"] = [mail.url("priya@northwind.example")]
    return ChannelRegistry(channels=channels, default="team-chat")


def campaign(url: str | None = None) -> str:
    return register(notify_spec(channels={"maria": "maria-chat", "tom": "am-chat", "priya": "priya-mail"}), url)


def test_gate_waiting_and_decision_reach_chat_and_email(home, chat, mail):
    registry = registry_for(chat, mail)
    cid = campaign()
    gate_id = open_gate(cid, "goals", ["priya"])
    report = service.run_once(registry, reminders=False)
    assert report.delivery.sent == len(outbox_rows()) > 0
    # priya reads email: the approval request arrives in her inbox through SMTP
    assert mail.subjects() == ["[Northwind Q1 2027 webinar launch] waiting for your approval: Approve goals"]
    assert f"campaignflow approve {gate_id} --as HANDLE" in mail.bodies()[0]
    assert mail.envelopes[0][1] == ["priya@northwind.example"]

    with db.session(write=True) as s:
        decide(s, gate_id, "priya", "request_changes", "Make the registrations target 700")
    service.run_once(registry, reminders=False)
    closed = [m for m in chat.messages() if "changes requested" in m["title"]]
    assert len(closed) == 1  # maria (the submitter and campaign manager) hears it once, on her channel
    assert "priya: Make the registrations target 700" in closed[0]["message"]
    assert "/maria" in chat.paths[chat.titles().index(closed[0]["title"])]


def test_fan_out_never_doubles_even_from_the_start_of_the_log(home, chat):
    registry = registry_for(chat)
    cid = campaign()
    open_gate(cid, "goals", ["priya", "felix"])
    with db.session(write=True) as s:
        first = fan_out(s, registry)
    with db.session(write=True) as s:
        again = fan_out(s, registry)
        from campaignflow.models_notify import NotifyCursor

        s.get(NotifyCursor, "audit").last_event_id = 0  # as if the cursor had been lost
    with db.session(write=True) as s:
        replay = fan_out(s, registry)
    assert first > 0 and again == 0 and replay == 0
    keys = [r.dedupe_key for r in outbox_rows()]
    assert len(keys) == len(set(keys))


def test_endpoint_down_for_a_while_then_up_every_message_arrives_exactly_once(home, chat, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_NOTIFY_BACKOFF", "0")
    registry = registry_for(chat)
    cid = campaign()
    for i in range(5):
        open_gate(cid, f"asset-{i}", ["maria"], kind="review", submitted_by="sam")
    service.queue_events(registry)
    expected = len(outbox_rows())
    assert expected >= 5

    chat.failing_status = 503  # overloaded
    for _ in range(3):
        report = service.run_once(registry, reminders=False)
        assert report.delivery.sent == 0
    chat.failing_status = None
    chat.stop()  # then nothing listening at all
    report = service.run_once(registry, reminders=False)
    assert report.delivery.sent == 0 and report.delivery.retrying > 0
    pending = outbox_rows()
    assert {r.status for r in pending} == {"pending"}
    heads: dict = {}
    for r in pending:
        heads.setdefault((r.channel, r.target), r)
    assert all(h.attempts >= 1 and h.last_error for h in heads.values())
    # later messages on the same channel wait their turn: chat is read in order
    assert all(r.attempts == 0 for r in pending if r.id not in {h.id for h in heads.values()})

    chat.start()  # back up, same port
    for _ in range(4):
        service.run_once(registry, reminders=False)
    assert chat.refused > 0
    counts = Counter(m["title"] + m["message"] for m in chat.messages())
    assert len(chat.messages()) == expected
    assert max(counts.values()) == 1
    assert {r.status for r in outbox_rows()} == {"sent"}


def test_after_the_last_attempt_a_message_is_dead_with_its_reason_and_retry_delivers_it(home, chat, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_NOTIFY_BACKOFF", "0")
    monkeypatch.setenv("CAMPAIGNFLOW_NOTIFY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_MARIA_CHAT", chat.url("maria"))
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_AM_CHAT", chat.url("am"))
    cid = register(notify_spec(channels={"maria": "maria-chat", "tom": "am-chat"}))
    open_gate(cid, "review", ["maria"], kind="review", submitted_by="sam")
    chat.failing_status = 500
    for _ in range(2):
        assert cli("sweep").returncode == 0
    dead = cli("outbox", "list", "--status", "dead")
    assert dead.returncode == 0, dead.stderr
    assert "dead" in dead.stdout and "gave up after 2 attempts" in dead.stdout
    assert "error=500" in dead.stdout
    assert chat.messages() == []

    chat.failing_status = None
    retried = cli("outbox", "retry")
    assert retried.returncode == 0, retried.stderr
    assert "back in the queue" in retried.stdout and "sent" in retried.stdout
    assert len(chat.messages()) == 1
    assert cli("sweep").returncode == 0
    assert len(chat.messages()) == 1  # nothing twice
    listing = cli("outbox", "list", "--json")
    import json

    assert json.loads(listing.stdout)["counts"] == {"sent": 1}


CHILD = textwrap.dedent("""
    import sys, time
    from campaignflow.notify import service
    from campaignflow.notify.channels import load_local
    from campaignflow.notify.delivery import deliver_due
    registry = load_local()
    queued = service.queue_events(registry)
    print(f"queued {queued}", flush=True)
    if sys.argv[1] == "before-send":
        time.sleep(120)  # stands for the moment between committing the outbox rows and sending them
    else:
        deliver_due(registry, workers=1)  # the endpoint hangs: killed while apprise is sending
""")


@pytest.mark.parametrize("moment", ["before-send", "while-sending"])
def test_process_killed_between_enqueue_and_send_delivers_once_on_the_next_sweep(home, chat, monkeypatch, moment):
    hang = ChatServer().start() if moment == "while-sending" else None
    target = hang or chat
    if hang:
        hang.failing_status = None
        _make_hanging(hang)
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_MARIA_CHAT", target.url("maria") + ("?rto=60" if hang else ""))
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_AM_CHAT", target.url("am") + ("?rto=60" if hang else ""))
    cid = register(notify_spec(channels={"maria": "maria-chat", "tom": "am-chat"}))
    open_gate(cid, "review", ["maria"], kind="review", submitted_by="sam")

    child = subprocess.Popen([sys.executable, "-c", CHILD, moment], cwd=ROOT, env=dict(os.environ),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = child.stdout.readline()
    assert line.startswith("queued ") and int(line.split()[1]) > 0, child.stderr.read()
    if hang:
        hang.wait_for_request()  # apprise is mid-send
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    rows = outbox_rows()
    assert rows and {r.status for r in rows} == ({"pending"} if not hang else {"sending"})

    if hang:
        hang.stop()
        monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_MARIA_CHAT", chat.url("maria"))
        monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_AM_CHAT", chat.url("am"))
        # The dead process's claim holds until its lease runs out; a sweep after that takes the rows over.
        early = cli("sweep")
        assert early.returncode == 0 and chat.messages() == []
        later = (dt.datetime.now(UTC) + dt.timedelta(minutes=11)).isoformat()
        swept = cli("sweep", "--at", later)
    else:
        swept = cli("sweep")
    assert swept.returncode == 0, swept.stderr
    assert len(chat.messages()) == len(rows)
    assert cli("sweep").returncode == 0
    assert len(chat.messages()) == len(rows)
    assert {r.status for r in outbox_rows()} == {"sent"}


def _make_hanging(server: ChatServer) -> None:
    """Replace the server's handler with one that accepts a request and never answers it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    server.stop()
    seen = threading.Event()
    release = threading.Event()

    class Hang(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.set()
            release.wait(60)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", server.port), Hang)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    def stop():
        release.set()
        httpd.shutdown()
        httpd.server_close()

    server.stop = stop
    server.wait_for_request = lambda: seen.wait(30) or pytest.fail("the child never started sending")


def test_outbox_and_claims_work_on_postgres_too(store_url, chat, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_NOTIFY_BACKOFF", "0")
    os.makedirs(os.environ["CAMPAIGNFLOW_HOME"], exist_ok=True)
    registry = registry_for(chat)
    cid = campaign(store_url)
    gate_id = open_gate(cid, "goals", ["maria"], submitted_by="sam", url=store_url)
    chat.failing_status = 503
    service.run_once(registry, reminders=False, url=store_url)
    chat.failing_status = None
    with db.session(store_url, write=True) as s:
        decide(s, gate_id, "maria", "approve")
    service.run_once(registry, reminders=False, url=store_url)
    service.run_once(registry, reminders=False, url=store_url)
    arrived = list(zip(chat.paths, chat.titles()))
    assert len(arrived) == len(set(arrived)) == len(outbox_rows(store_url))
    # the submitter (sam, on the default team channel) and the campaign manager (maria) each hear it once
    assert sorted(p for p, t in arrived if "approved:" in t) == ["/maria", "/team"]


def test_a_team_overrides_a_template_and_a_broken_one_falls_back_to_the_default(home, chat, tmp_path, caplog):
    folder = tmp_path / "our-templates"
    folder.mkdir()
    (folder / "gate.waiting.j2").write_text(
        "Please decide: {{ gate.title }}\n{% for p in recipients %}@{{ p.handle }} {% endfor %}see {{ links.run or 'the CLI' }}")
    (folder / "gate.approved.j2").write_text("{{ gate.no_such_field.upper() }}\n")
    registry = registry_for(chat)
    data = notify_spec({"templates": "our-templates"}, channels={"maria": "maria-chat", "priya": "maria-chat"})
    cid = register(data, spec_dir=str(tmp_path))  # the folder is named relative to the spec's own folder
    gate_id = open_gate(cid, "goals", ["priya"])
    service.run_once(registry, reminders=False)
    assert chat.messages()[0]["title"] == "Please decide: Approve goals"
    assert chat.messages()[0]["message"] == "@priya see the CLI"
    with db.session(write=True) as s:
        decide(s, gate_id, "priya", "approve")
    service.run_once(registry, reminders=False)
    assert chat.titles()[-1] == "[Northwind Q1 2027 webinar launch] approved: Approve goals"
    assert "gate.approved.j2" in caplog.text and "the default template was used" in caplog.text


def test_a_team_template_may_include_the_default_links_but_not_replace_them(tmp_path):
    from campaignflow.notify.templates import render

    (tmp_path / "_links.j2").write_text("not the links")
    (tmp_path / "gate.approved.j2").write_text('Approved: {{ gate.title }}\nyes{% include "_links.j2" %}')
    context = {"gate": {"title": "Goals"}, "recipients": [], "links": {"run": "http://ui/runs/1", "approve": {}}}
    assert render("gate.approved", context, str(tmp_path)) == ("Approved: Goals", "yes\nRun: http://ui/runs/1")


def test_escalations_and_timeouts_from_the_approvals_area_reach_the_people_they_name(home, chat):
    from campaignflow.store import audit

    registry = registry_for(chat)
    cid = campaign()
    gate_id = open_gate(cid, "budget", ["felix"], kind="budget")
    with db.session() as s:
        audit(s, cid, "gate.escalated", f"{cid}/budget", to=["tom"], level=1, gate_id=gate_id)
        audit(s, cid, "gate.timed_out", f"{cid}/budget", outcome="approve", gate_id=gate_id)
    service.run_once(registry, reminders=False)
    to_tom = [m["title"] for p, m in zip(chat.paths, chat.messages()) if p == "/am"]
    assert "[Northwind Q1 2027 webinar launch] escalated: Approve budget" in to_tom
    assert "[Northwind Q1 2027 webinar launch] timed out: Approve budget" in to_tom


def test_a_failed_step_tells_the_campaign_and_account_managers(home, chat):
    registry = registry_for(chat)
    cid = campaign()
    service.record_step_failure(cid, "measurement", "ConnectorError: the Meta API refused the token")
    service.run_once(registry, reminders=False)
    arrived = {(p, m["title"]) for p, m in zip(chat.paths, chat.messages())}
    title = "[Northwind Q1 2027 webinar launch] step measurement FAILED"
    assert arrived == {("/maria", title), ("/am", title)}
    assert "the Meta API refused the token" in chat.messages()[0]["message"]


def test_a_message_whose_template_cannot_render_goes_out_plain_and_holds_up_nothing(home, chat, caplog):
    from campaignflow.store import audit

    registry = registry_for(chat)
    cid = campaign()
    with db.session() as s:  # an event that names no gate, for a template that shows the gate
        audit(s, cid, "gate.timed_out", f"{cid}/budget", outcome="approve")
    service.record_step_failure(cid, "measurement", "ConnectorError: the Meta API refused the token")
    service.run_once(registry, reminders=False)
    to_tom = [m["title"] for p, m in zip(chat.paths, chat.messages()) if p == "/am"]
    assert to_tom == [f"[Northwind Q1 2027 webinar launch] gate.timed_out: {cid}/budget",
                      "[Northwind Q1 2027 webinar launch] step measurement FAILED"]
    assert "template gate.timed_out.j2 does not render" in caplog.text


def plan_approved(campaign_id: str) -> None:
    """The goals and budget gates closed as approved, written directly (no audit, so no messages): work may be done."""
    from campaignflow import models as m

    with db.session() as s:
        for kind in ("goals", "budget"):
            s.add(m.ApprovalGate(key=f"{campaign_id}/{kind}/v1", campaign_id=campaign_id, kind=kind,
                                 title=f"Approve {kind}", approvers=["priya"], status="approved"))


def test_a_finished_deliverable_tells_the_managers_and_whoever_can_start_now(home, chat):
    channels = {h: f"{h}-chat" for h in ("maria", "tom", "lea", "sam", "omar")}
    registry = ChannelRegistry(channels={c: [chat.url(h)] for h, c in channels.items()})
    data = notify_spec(channels=channels)
    invites = next(d for d in data["deliverables"] if d["key"] == "invite-emails")
    invites["depends_on"] = ["messaging-brief", "landing-page"]  # waits on two
    cid = register(data)
    plan_approved(cid)
    set_deliverable(cid, "messaging-brief", status="approved")

    done = cli("done", cid, "messaging-brief", "--as", "sam")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["messaging-brief is done.",
                                        "landing-page (lea) has everything it waits on and can start now."]
    service.run_once(registry, reminders=False)
    arrived = sorted((p, m["title"]) for p, m in zip(chat.paths, chat.messages()))
    name = "[Northwind Q1 2027 webinar launch]"
    assert arrived == [("/lea", f"{name} you can start: Webinar landing page"),
                       ("/maria", f"{name} done: Messaging brief"), ("/tom", f"{name} done: Messaging brief")]
    to_lea = next(m["message"] for p, m in zip(chat.paths, chat.messages()) if p == "/lea")
    assert f"campaignflow done {cid} landing-page --as lea" in to_lea

    # Saying it again changes nothing and tells nobody twice.
    again = cli("done", cid, "messaging-brief", "--as", "sam")
    assert again.returncode == 0 and again.stdout.strip() == "messaging-brief is done."
    service.run_once(registry, reminders=False)
    assert len(chat.messages()) == 3

    # Once the landing page is done too, the invitations (both of their inputs done) and the ads can start.
    set_deliverable(cid, "landing-page", status="approved")
    assert cli("done", cid, "landing-page", "--as", "lea").returncode == 0
    service.run_once(registry, reminders=False)
    started = sorted((p, m["title"]) for p, m in zip(chat.paths[3:], chat.messages()[3:]) if "you can start" in m["title"])
    assert started == [("/omar", f"{name} you can start: LinkedIn sponsored content (4 variants)"),
                       ("/sam", f"{name} you can start: Invitation email sequence (3 emails)")]


def test_a_deliverable_that_cannot_be_marked_done_changes_nothing_and_says_why(home, chat):
    cid = register(notify_spec())
    result = cli("done", cid, "landing-page", "--as", "lea")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "landing-page is still planned: its reviews must approve it before it is done" in result.stderr
    result = cli("done", cid, "no-such-thing", "--as", "lea")
    assert f"campaign {cid} has no deliverable 'no-such-thing'" in result.stderr
    service.run_once(ChannelRegistry(channels={"team-chat": [chat.url()]}, default="team-chat"), reminders=False)
    assert not [m for m in chat.messages() if "done:" in m["title"] or "you can start" in m["title"]]


def test_every_message_kind_a_spec_can_mute_has_a_default_template():
    from campaignflow.notify.templates import DEFAULTS
    from campaignflow.spec import MESSAGE_KINDS

    templates = {file.stem for file in DEFAULTS.glob("*.j2") if not file.name.startswith("_")}  # "_x": partials
    assert templates - {"digest"} == set(MESSAGE_KINDS)  # a digest is how `reminder` messages go out together
