"""Hostile notifications (issue 13, section 5): one bad message never blocks a channel, a template runs no
code, and a personal decision link reaches nobody but its person.

Every message really goes through apprise to a local endpoint that the test reads back."""

from __future__ import annotations

import pytest

from campaignflow import db
from campaignflow import models as m
from campaignflow.notify import service
from campaignflow.notify.channels import ChannelRegistry
from campaignflow.store import audit
from chat_endpoints import ChatServer, notify_spec, open_gate, outbox_rows, register
from conftest import cli

ONE_MB = 1_000_000
RUN_ID = "7c0ffee0-0000-4000-8000-000000000013"


@pytest.fixture
def chat():
    with ChatServer() as server:
        yield server


def channels(chat: ChatServer) -> ChannelRegistry:
    return ChannelRegistry(channels={"maria-chat": [chat.url("maria")], "team-chat": [chat.url("team")]},
                           default="team-chat")


def managers_campaign() -> str:
    """A campaign whose manager, maria, reads her own channel; the run has a Prefect link."""
    cid = register(notify_spec(channels={"maria": "maria-chat"}))
    with db.session() as s:
        s.get(m.Campaign, cid).flow_run_id = RUN_ID
    return cid


def huge_then_small(cid: str, size: int) -> None:
    """A message of `size` characters (as a 1 MB review comment makes one) and, after it, an ordinary one,
    both to maria's channel."""
    with db.session() as s:
        audit(s, cid, "step.completed", "budget", summary="lorem ipsum " * (size // 12))
    open_gate(cid, "review-after", ["maria"], kind="review", title="Approve the landing page", submitted_by="sam")


# -- 1. size limits, permanent refusals, and nothing waits behind a dead message -------------------

def test_a_1mb_message_is_cut_to_the_services_limit_with_its_links_and_the_next_message_follows(home, chat, monkeypatch):
    monkeypatch.setenv("PREFECT_UI_URL", "http://prefect.example")
    chat.max_body = 64_000  # the service takes more than apprise's declared 32,768 characters for json://
    cid = managers_campaign()
    huge_then_small(cid, ONE_MB)
    report = service.run_once(channels(chat), reminders=False)

    assert report.delivery.dead == report.delivery.retrying == 0, report.delivery.problems
    to_maria = [msg for path, msg in zip(chat.paths, chat.messages()) if path == "/maria"]
    assert [msg["title"] for msg in to_maria] == ["[Northwind Q1 2027 webinar launch] step budget completed",
                                                  "[Northwind Q1 2027 webinar launch] waiting for your approval: "
                                                  "Approve the landing page"]
    big = to_maria[0]["message"]
    first_row = next(r for r in outbox_rows() if r.kind == "step.completed")
    assert len(big) <= 32_768
    assert f"shortened to fit this channel; the whole message: campaignflow outbox show {first_row.id}" in big
    assert big.rstrip().endswith(f"http://prefect.example/runs/flow-run/{RUN_ID}")  # the run link survives the cut
    assert len(first_row.body) > ONE_MB - 12  # the outbox keeps the whole text


def test_a_message_the_service_refuses_for_good_is_dead_at_once_and_holds_up_nothing(home, chat):
    chat.max_body = 3_000  # smaller than apprise knows of: the service answers 413 Payload Too Large
    cid = managers_campaign()
    huge_then_small(cid, 10_000)
    report = service.run_once(channels(chat), reminders=False)

    refused = next(r for r in outbox_rows() if r.kind == "step.completed")
    assert refused.status == "dead" and refused.attempts == 1
    assert "HTTP 413" in refused.last_error and "not retried" in refused.last_error
    # the approver's "waiting on you" behind it went out in the same pass
    assert chat.titles() == ["[Northwind Q1 2027 webinar launch] waiting for your approval: Approve the landing page"]
    assert report.delivery.dead == 1 and report.delivery.retrying == 0

    shown = cli("outbox", "show", str(refused.id))
    assert shown.returncode == 0, shown.stderr
    assert "lorem ipsum " * 800 in shown.stdout and "HTTP 413" in shown.stdout


@pytest.mark.parametrize("status", [408, 429, 503])
def test_a_service_that_asks_to_come_back_later_gets_the_message_again(home, chat, status):
    chat.failing_status = status
    cid = managers_campaign()
    open_gate(cid, "review-after", ["maria"], kind="review", submitted_by="sam")
    service.run_once(channels(chat), reminders=False)
    assert {r.status for r in outbox_rows()} == {"pending"}
    assert f"error={status}" in outbox_rows()[0].last_error


def test_outbox_show_refuses_a_message_that_does_not_exist(home):
    from invariants import assert_refused

    assert_refused(cli("outbox", "show", "999"), "there is no outbox message 999")


# -- 2. templates: a sandbox, and only from the spec's own folder ------------------------------------

RUN_CODE = "{{ cycler.__init__.__globals__.os.popen('touch %s; id').read() }}\nowned"


def test_a_team_template_cannot_run_code_and_the_message_still_goes_out(home, chat, tmp_path, caplog):
    marker = tmp_path / "ran-code"
    spec_dir = tmp_path / "campaign"
    (spec_dir / "notify-templates").mkdir(parents=True)
    (spec_dir / "notify-templates" / "gate.waiting.j2").write_text(RUN_CODE % marker)
    cid = register(notify_spec({"templates": "notify-templates"}, channels={"maria": "maria-chat"}),
                   spec_dir=str(spec_dir))
    open_gate(cid, "review", ["maria"], kind="review", title="Approve the landing page", submitted_by="sam")
    service.run_once(channels(chat), reminders=False)

    assert not marker.exists(), "the template ran a shell command"
    assert chat.titles() == ["[Northwind Q1 2027 webinar launch] waiting for your approval: Approve the landing page"]
    assert "uid=" not in chat.messages()[0]["message"]
    assert "gate.waiting.j2" in caplog.text and "the default template was used" in caplog.text


@pytest.mark.parametrize("folder", ["/etc", "../shared-templates", "notify/../../elsewhere", "~/templates"])
def test_a_templates_folder_outside_the_spec_folder_is_refused_naming_the_field(home, tmp_path, folder):
    from invariants import assert_refused
    from conftest import write_spec

    path = write_spec(tmp_path / "campaign.yaml", notify_spec({"templates": folder}))
    assert_refused(cli("validate", str(path)), "notifications.templates", "leads out of the spec's folder",
                   exit_codes=(2,))


def test_a_templates_folder_or_file_that_links_out_of_the_spec_folder_is_not_read(home, chat, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "gate.waiting.j2").write_text("secret from outside\n{{ gate.title }}")
    spec_dir = tmp_path / "campaign"
    spec_dir.mkdir()
    (spec_dir / "linked-folder").symlink_to(outside, target_is_directory=True)
    (spec_dir / "own").mkdir()
    (spec_dir / "own" / "gate.waiting.j2").symlink_to(outside / "gate.waiting.j2")
    for folder in ("linked-folder", "own"):
        cid = register(notify_spec({"templates": folder}, channels={"maria": "maria-chat"}, id=f"c-{folder}"),
                       spec_dir=str(spec_dir))
        open_gate(cid, "review", ["maria"], kind="review", submitted_by="sam")
    service.run_once(channels(chat), reminders=False)
    assert len(chat.titles()) == 2
    assert not any("secret from outside" in t for t in chat.titles())


def test_a_campaign_stored_before_the_folder_rule_keeps_its_messages_with_the_default_templates(home, chat, tmp_path):
    import yaml

    cid = register(notify_spec(channels={"maria": "maria-chat"}))
    with db.session() as s:  # as an older version stored it: an absolute templates folder
        campaign = s.get(m.Campaign, cid)
        campaign.spec_text = yaml.safe_dump(notify_spec({"templates": str(tmp_path)}, channels={"maria": "maria-chat"}))
        campaign.spec_hash = "stored-before"
    open_gate(cid, "review", ["maria"], kind="review", title="Approve the landing page", submitted_by="sam")
    service.run_once(channels(chat), reminders=False)
    assert chat.titles() == ["[Northwind Q1 2027 webinar launch] waiting for your approval: Approve the landing page"]


# -- 3. a personal decision link reaches its person's own channel and nothing else ------------------

WEB = "http://decide.example"


def decision_links_in(text: str) -> list[tuple[str, str]]:
    """(person, decision) of every signed link in a text."""
    import re

    from campaignflow.signing import verify

    return [(c.person, c.decision) for c in (verify(t) for t in re.findall(re.escape(WEB) + r"/decide/([^\s)]+)", text))]


def on(chat: ChatServer, path: str) -> str:
    return "\n".join(msg["title"] + "\n" + msg["message"] for p, msg in zip(chat.paths, chat.messages()) if p == path)


def test_a_shared_channel_gets_the_request_without_anyones_link_and_a_personal_one_only_its_own(home, chat, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_WEB_URL", WEB)
    # maria reads her own channel; priya and felix read the team's (the default); omar and lea share one
    registry = ChannelRegistry(channels={"maria-chat": [chat.url("maria")], "team-chat": [chat.url("team")],
                                         "design-chat": [chat.url("design")]}, default="team-chat")
    cid = register(notify_spec(channels={"maria": "maria-chat", "omar": "design-chat", "lea": "design-chat"}))
    gate_id = open_gate(cid, "budget", ["maria", "priya", "felix", "omar", "lea"], kind="budget")
    service.run_once(registry, reminders=False)

    team, design, own = on(chat, "/team"), on(chat, "/design"), on(chat, "/maria")
    assert "waiting for your approval" in team and f"campaignflow approve {gate_id} --as HANDLE" in team
    assert "one-click decision links go only to each approver's own channel" in team
    assert decision_links_in(team) == [] and decision_links_in(design) == []
    assert decision_links_in(own) == [("maria", "approve"), ("maria", "request_changes")]


def test_a_reminder_digest_on_a_shared_channel_carries_no_link(home, chat, monkeypatch):
    import datetime as dt

    monkeypatch.setenv("CAMPAIGNFLOW_WEB_URL", WEB)
    registry = channels(chat)
    cid = register(notify_spec({"mute": ["gate.waiting"]}, channels={"maria": "maria-chat"}))
    day = dt.date.today() + dt.timedelta(days=21)
    wednesday = dt.datetime.combine(day + dt.timedelta(days=(2 - day.weekday()) % 7), dt.time(10), dt.timezone.utc)
    open_gate(cid, "budget", ["maria", "priya"], kind="budget", due_at=wednesday - dt.timedelta(days=1),
              opened_at=wednesday - dt.timedelta(days=5))
    service.run_once(registry, now=wednesday)

    team, own = on(chat, "/team"), on(chat, "/maria")
    assert "overdue" in team and "campaignflow approve" in team and decision_links_in(team) == []
    assert "overdue" in own and decision_links_in(own) == [("maria", "approve")]


def test_the_prefect_resume_form_lists_no_signed_links(home, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_WEB_URL", WEB)
    from flows.gates import _form_text

    gate = m.ApprovalGate(id=7, key="c/budget", campaign_id="c", kind="budget", title="Approve the budget",
                          description="Media and production", approvers=["priya", "felix"], policy="all")
    text = _form_text([(gate, ["priya", "felix"])])
    assert "Waiting on: **priya, felix**" in text and "campaignflow approve 7 --as PERSON" in text
    assert "/decide/" not in text
