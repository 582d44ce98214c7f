"""Reminder sweep: due soon and overdue, cadence on business days, quiet hours, digest, escalation, client SLA."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from campaignflow import db
from campaignflow.notify import service
from campaignflow.notify.channels import ChannelRegistry
from chat_endpoints import ChatServer, notify_spec, open_gate, outbox_rows, register, set_deliverable
from conftest import cli

BERLIN = ZoneInfo("Europe/Berlin")
CHANNELS = {"maria": "maria-chat", "tom": "am-chat", "priya": "priya-chat", "sam": "sam-chat", "jana": "jana-chat"}


@pytest.fixture
def chat():
    with ChatServer() as server:
        yield server


def registry_for(chat: ChatServer) -> ChannelRegistry:
    return ChannelRegistry(channels={name: [chat.url(name.split("-")[0])] for name in set(CHANNELS.values())}
                           | {"team-chat": [chat.url("team")]}, default="team-chat")


def monday() -> dt.date:
    """A Monday a few weeks ahead (the campaign's dates do not matter to reminders)."""
    day = dt.date.today() + dt.timedelta(days=21)
    return day + dt.timedelta(days=(7 - day.weekday()) % 7)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)


def sweep(registry, now):
    return service.run_once(registry, now=now.astimezone(dt.timezone.utc))


def to(chat: ChatServer, who: str) -> list[dict]:
    """Messages that arrived on a person's channel (tom, the account manager, reads am-chat)."""
    path = "/am" if who == "tom" else f"/{who}"
    return [m for p, m in zip(chat.paths, chat.messages()) if p == path]


def test_quiet_hours_hold_reminders_until_morning_and_digest_sends_one_message_per_person(home, chat):
    registry = registry_for(chat)
    mon = monday()
    tue = mon + dt.timedelta(days=1)
    cid = register(notify_spec(
        {"timezone": "Europe/Berlin", "quiet_hours": {"start": "19:00", "end": "08:00"}, "mute": ["gate.waiting"],
         "reminders": {"due_soon_days": 1}},
        channels=CHANNELS))
    gates = [open_gate(cid, f"review-{i}", ["maria"], kind="review", submitted_by="sam", title=f"Review asset {i}",
                       due_at=at(tue, 17)) for i in range(3)]
    for key in ("messaging-brief", "invite-emails"):
        set_deliverable(cid, key, due=tue)

    evening = sweep(registry, at(mon, 21))
    assert evening.sweep.checked == 5 and evening.sweep.held == 5 and evening.sweep.reminded == 0
    early = sweep(registry, at(tue, 7, 30))
    assert early.sweep.reminded == 0 and to(chat, "maria") == [] and to(chat, "sam") == []

    morning = sweep(registry, at(tue, 9))
    assert morning.sweep.reminded == 5
    maria, sam = to(chat, "maria"), to(chat, "sam")
    assert len(maria) == 1 and len(sam) == 1  # one digest each, not five pings
    assert maria[0]["title"] == "3 thing(s) waiting on Maria Lopez"
    for gate_id in gates:
        assert f"campaignflow approve {gate_id} --as maria" in maria[0]["message"]
    assert "due today" in maria[0]["message"]
    assert "Messaging brief (messaging-brief)" in sam[0]["message"] and "Invitation email" in sam[0]["message"]

    sweep(registry, at(tue, 11))  # the same business day: nothing again
    assert len(to(chat, "maria")) == 1 and len(to(chat, "sam")) == 1


def test_without_digest_each_item_is_its_own_message(home, chat):
    registry = registry_for(chat)
    mon = monday()
    cid = register(notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting"],
                                "reminders": {"digest": False}}, channels=CHANNELS))
    for i in range(3):
        open_gate(cid, f"review-{i}", ["maria"], kind="review", submitted_by="sam", due_at=at(mon, 17))
    sweep(registry, at(mon, 10))
    assert len(to(chat, "maria")) == 3
    assert all("due today" in m["title"] for m in to(chat, "maria"))


def test_events_in_quiet_hours_wait_for_the_morning(home, chat):
    registry = registry_for(chat)
    mon = monday()
    cid = register(notify_spec({"timezone": "Europe/Berlin", "quiet_hours": {"start": "19:00", "end": "08:00"},
                                "mute": ["reminder"]}, channels=CHANNELS))
    open_gate(cid, "goals", ["priya"])
    sweep(registry, at(mon, 22))
    assert to(chat, "priya") == []
    row = next(r for r in outbox_rows() if r.kind == "gate.waiting")
    assert row.status == "pending"
    held_until = row.next_attempt_at if row.next_attempt_at.tzinfo else row.next_attempt_at.replace(tzinfo=dt.timezone.utc)
    assert held_until.astimezone(BERLIN) == at(mon + dt.timedelta(days=1), 8)
    sweep(registry, at(mon + dt.timedelta(days=1), 8, 1))
    assert [m["title"] for m in to(chat, "priya")] == [
        "[Northwind Q1 2027 webinar launch] waiting for your approval: Approve goals"]


def test_escalation_after_n_reminders_skips_weekends_and_holidays(home, chat):
    registry = registry_for(chat)
    mon = monday()
    wed = mon + dt.timedelta(days=2)
    data = notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting"],
                        "reminders": {"escalate_after": 2, "every_days": 1}}, channels=CHANNELS)
    data["holidays"] = [str(wed)]
    cid = register(data)
    gate_id = open_gate(cid, "goals", ["priya"], due_at=at(mon, 17))

    seen: dict[str, list[int]] = {"priya": [], "tom": [], "maria": []}
    for offset in range(1, 9):  # Tuesday .. the next Tuesday, at 10:00 each day
        day = mon + dt.timedelta(days=offset)
        sweep(registry, at(day, 10))
        sweep(registry, at(day, 15))  # a second sweep the same day never repeats a reminder
        for who in seen:
            seen[who].append(len([m for m in to(chat, who) if "waiting on" in m["title"]]))
    # days:          Tue Wed(holiday) Thu Fri Sat Sun Mon Tue
    assert seen["priya"] == [1, 1, 2, 3, 3, 3, 4, 5]
    assert seen["tom"] == [0, 0, 0, 1, 1, 1, 2, 3]    # after 2 reminders: the account manager
    assert seen["maria"] == [0, 0, 0, 0, 0, 0, 0, 1]  # after 4: the campaign manager
    escalation = to(chat, "tom")[0]["message"]
    assert "ESCALATED after 3 reminders" in escalation and "Priya Shah" in escalation
    assert "please chase Priya Shah" in escalation
    with db.session() as s:
        from sqlmodel import select

        from campaignflow import models as m

        actions = [e.detail for e in s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "reminder.escalated"))]
    assert [(a["level"], a["to"]) for a in actions] == [(1, ["tom"]), (2, ["tom", "maria"])]
    assert gate_id


def test_client_sla_breach_notifies_the_account_manager_and_shows_in_status(home, chat, monkeypatch):
    registry = registry_for(chat)
    mon = monday()
    cid = register(notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting", "reminder", "gate.approved"],
                                "sla": {"client_review_days": 2, "publish_days": 3}}, channels=CHANNELS))
    open_gate(cid, "review/landing-page/r2v1", ["jana", "priya"], kind="review", submitted_by="lea",
              subject="landing-page", title="Final review: Webinar landing page", opened_at=at(mon, 10))
    approved = open_gate(cid, "review/invite-emails/r2v1", ["jana"], kind="review", submitted_by="sam",
                         subject="invite-emails", opened_at=at(mon, 9))
    from campaignflow import models as m

    with db.session() as s:
        gate = s.get(m.ApprovalGate, approved)
        gate.status, gate.closed_at = "approved", at(mon, 12).astimezone(dt.timezone.utc)
        s.add(gate)
    set_deliverable(cid, "invite-emails", status="approved")

    wed = mon + dt.timedelta(days=2)
    assert sweep(registry, at(wed, 9, 30)).sweep.breaches == 0  # due Wednesday 10:00
    report = sweep(registry, at(wed, 11))
    assert report.sweep.breaches == 1
    tom = to(chat, "tom")
    assert [x["title"] for x in tom] == ["[Northwind Q1 2027 webinar launch] client SLA breached: client review turnaround"]
    assert "Jana Novak" in tom[0]["message"] and "1 hour(s) late" in tom[0]["message"]
    assert sweep(registry, at(wed, 15)).sweep.breaches == 0  # recorded once

    fri = mon + dt.timedelta(days=4)
    assert sweep(registry, at(fri, 13)).sweep.breaches == 1  # approved Monday 12:00, not published in 3 days
    assert "publish after approval" in to(chat, "tom")[-1]["title"]

    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    row = next(r for r in json.loads(status.stdout) if r["campaign"] == cid)
    assert sorted(b["rule"] for b in row["sla_breaches"]) == ["client_review", "publish"]
    detail = json.loads(cli("status", cid, "--json").stdout)
    assert {b["subject"] for b in detail["sla_breaches"]} == {f"{cid}/review/landing-page/r2v1", "invite-emails"}


def test_sweep_is_set_based_and_idempotent_on_sqlite_and_postgres(store_url, chat):
    import os

    os.makedirs(os.environ["CAMPAIGNFLOW_HOME"], exist_ok=True)
    registry = registry_for(chat)
    mon = monday()
    cid = register(notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting"],
                                "reminders": {"escalate_after": 1}}, channels=CHANNELS), store_url)
    for i in range(4):
        open_gate(cid, f"review-{i}", ["maria"], kind="review", submitted_by="sam", due_at=at(mon, 12), url=store_url)
    set_deliverable(cid, "messaging-brief", due=mon, url=store_url)
    first = service.run_once(registry, now=at(mon, 14).astimezone(dt.timezone.utc), url=store_url)
    again = service.run_once(registry, now=at(mon, 16).astimezone(dt.timezone.utc), url=store_url)
    assert first.sweep.reminded == 5 and again.sweep.reminded == 0
    nxt = service.run_once(registry, now=at(mon + dt.timedelta(days=1), 10).astimezone(dt.timezone.utc), url=store_url)
    assert nxt.sweep.reminded == 5 and nxt.sweep.escalated == 5  # the second reminder goes to tom as well
    assert len(to(chat, "maria")) == 2 and len(to(chat, "sam")) == 2 and len(to(chat, "tom")) == 1
    assert "5 thing(s) waiting on Tom Becker" == to(chat, "tom")[0]["title"]


def test_each_team_is_reminded_in_its_own_time_zone_and_calendar(home, chat):
    registry = registry_for(chat)
    mon = monday()
    cid = register(notify_spec({
        "timezone": "Europe/Berlin", "mute": ["gate.waiting"], "quiet_hours": {"start": "20:00", "end": "08:00"},
        "teams": [{"name": "agency", "members": ["maria", "tom", "sam"]},
                  {"name": "client", "members": ["priya", "jana", "felix"], "timezone": "America/New_York",
                   "holidays": [str(mon + dt.timedelta(days=1))]}],
    }, channels=CHANNELS))
    open_gate(cid, "review-agency", ["maria"], kind="review", submitted_by="sam", due_at=at(mon, 12))
    open_gate(cid, "review-client", ["priya"], kind="review", submitted_by="sam", due_at=at(mon, 12))
    sweep(registry, at(mon, 9))  # 03:00 in New York: the client sleeps
    assert len(to(chat, "maria")) == 1 and to(chat, "priya") == []
    sweep(registry, at(mon, 15))  # 09:00 in New York
    assert len(to(chat, "priya")) == 1
    sweep(registry, at(mon + dt.timedelta(days=1), 15))  # the client team's holiday
    assert len(to(chat, "priya")) == 1 and len(to(chat, "maria")) == 2


def test_a_digest_lists_overdue_first_then_by_due_date_and_counts_the_rest(home, chat):
    registry = registry_for(chat)
    mon = monday()
    wed = mon + dt.timedelta(days=2)
    cid = register(notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting"],
                                "reminders": {"due_soon_days": 2}}, channels=CHANNELS))
    for i in range(50):
        open_gate(cid, f"later-{i}", ["maria"], kind="review", submitted_by="sam", title=f"Later {i}",
                  due_at=at(wed, 12))
    for key, title, due_at in (("tomorrow", "Due tomorrow", at(mon + dt.timedelta(days=1), 23, 30)),
                               ("today", "Due tonight", at(mon, 23, 30)),
                               ("late", "Late since last week", at(mon - dt.timedelta(days=5), 12)),
                               ("spring", "Late since spring", at(mon - dt.timedelta(days=200), 0, 30))):
        open_gate(cid, key, ["maria"], kind="review", submitted_by="sam", title=title, due_at=due_at)
    sweep(registry, at(mon, 10))

    [digest] = to(chat, "maria")
    assert digest["title"] == "54 thing(s) waiting on Maria Lopez"
    lines = [line for line in digest["message"].splitlines() if line.startswith("- ")]
    assert len(lines) == 50
    # Dates are Berlin days, however far back (00:30 in Berlin is the day before in UTC).
    assert lines[0].endswith(f"Late since spring: overdue, due {mon - dt.timedelta(days=200)}")
    assert lines[1].endswith(f"Late since last week: overdue, due {mon - dt.timedelta(days=5)}")
    assert lines[2].endswith(f"Due tonight: due today, due {mon}")
    assert lines[3].endswith(f"Due tomorrow: due soon, due {mon + dt.timedelta(days=1)}")
    assert all(": due soon, due " + str(wed) in line for line in lines[4:])
    assert "... and 4 more" in digest["message"]


def test_two_approvers_handing_over_to_the_same_person_remind_them_once(home, chat):
    registry = registry_for(chat)
    mon = monday()
    cid = register(notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting"]}, channels=CHANNELS))
    gate_id = open_gate(cid, "budget", ["priya", "felix"], due_at=at(mon, 17))
    away = cli("delegate", "--as", "felix", "--to", "priya", "--from", str(mon - dt.timedelta(days=1)),
               "--until", str(mon + dt.timedelta(days=7)))
    assert away.returncode == 0, away.stderr

    sweep(registry, at(mon, 10))
    digest, handover = to(chat, "priya")  # the sweep queues its reminders before the events since the last pass
    assert handover["title"] == "[Northwind Q1 2027 webinar launch] Felix Wong hands their approvals to you"
    assert f"away from {mon - dt.timedelta(days=1)} to {mon + dt.timedelta(days=7)}" in handover["message"]
    assert "campaignflow approvals --for priya" in handover["message"]
    assert digest["title"] == "1 thing(s) waiting on Priya Shah"
    assert digest["message"].count(f"campaignflow approve {gate_id} --as priya") == 1


def test_an_overdue_deliverable_escalates_under_its_own_key(home, chat):
    registry = registry_for(chat)
    mon = monday()
    tue = mon + dt.timedelta(days=1)
    cid = register(notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting"],
                                "reminders": {"escalate_after": 1, "every_days": 1}}, channels=CHANNELS))
    set_deliverable(cid, "messaging-brief", due=mon - dt.timedelta(days=3))

    first = sweep(registry, at(mon, 10))
    assert (first.sweep.reminded, first.sweep.escalated) == (1, 0) and to(chat, "tom") == []
    second = sweep(registry, at(tue, 10))
    assert (second.sweep.reminded, second.sweep.escalated) == (1, 1)
    [tom] = to(chat, "tom")
    assert "Messaging brief (messaging-brief): overdue" in tom["message"]
    assert "ESCALATED after 2 reminders" in tom["message"] and "please check in with Sam" in tom["message"]
    with db.session() as s:
        from sqlmodel import select

        from campaignflow import models as m

        [event] = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "reminder.escalated")).all()
    assert event.subject == "messaging-brief" and event.detail["to"] == ["tom"]


def rules_on(today: dt.date):
    """A campaign's rules at 10:00 in Berlin: due soon 1 business day ahead, reminded every business day,
    escalated to tom after 2 reminders and to maria as well after 4, gates due 2 business days after opening."""
    from campaignflow.notify.reminders import CampaignRules
    from campaignflow.timeline import shift_business_days

    no_holidays: frozenset[dt.date] = frozenset()
    return CampaignRules(at(today, 10).astimezone(dt.timezone.utc), BERLIN, no_holidays, today,
                         shift_business_days(today, 1, no_holidays), shift_business_days(today, -1, no_holidays),
                         2, 2, (("tom",), ("tom", "maria")))


def item(due_on=None, due_at=None, opened_at=None, reminders=0, last=None, level=0, waiting=("priya",)):
    from campaignflow.notify.reminders import Count, OpenItem

    return OpenItem("gate", 1, "c", "goals", "Approve goals", waiting, due_on, due_at, opened_at,
                    Count(reminders, last, level))


def test_the_rule_due_state_cadence_escalation_and_reachability():
    from campaignflow.notify.reminders import decide

    mon = monday()
    tue, wed, fri = (mon + dt.timedelta(days=n) for n in (1, 2, 4))
    rules, anyone = rules_on(tue), lambda handle: True
    assert decide(item(due_on=tue + dt.timedelta(days=2)), rules, anyone) is None
    assert decide(item(due_on=wed), rules, anyone).state == "due soon"
    assert decide(item(due_on=tue), rules, anyone).state == "due today"
    assert decide(item(due_on=mon), rules, anyone).state == "overdue"
    # A due moment is overdue the moment it passes, and its day is the campaign's day (00:30 in Berlin).
    assert decide(item(due_at=at(tue, 9).astimezone(dt.timezone.utc)), rules, anyone).state == "overdue"
    assert decide(item(due_at=at(wed, 0, 30).astimezone(dt.timezone.utc)), rules, anyone).due == wed
    # Without a due moment a gate is due `gate_turnaround_days` business days after it opened: Fri -> Tue.
    assert decide(item(opened_at=at(fri - dt.timedelta(days=7), 12)), rules, anyone).due == tue

    first = decide(item(due_on=mon), rules, anyone)
    assert first.told == ("priya",) and first.count.reminders == 1 and first.escalated == ()
    assert decide(item(due_on=mon, reminders=1, last=tue), rules, anyone).told == ()  # once a business day
    third = decide(item(due_on=mon, reminders=2, last=mon), rules, anyone)
    assert third.told == ("priya", "tom") and third.escalated == ("tom",) and third.count.level == 1
    fifth = decide(item(due_on=mon, reminders=4, last=mon, level=1), rules, anyone)
    assert fifth.escalated == ("tom", "maria") and fifth.count.level == 2

    asleep = decide(item(due_on=mon), rules, lambda handle: False)
    assert asleep.held and asleep.told == () and asleep.count is None  # waits for the next sweep, uncounted
    assert decide(item(due_on=mon, reminders=2, last=mon), rules, lambda handle: handle == "tom").told == ("tom",)


def test_reminder_counts_survive_the_move_to_per_kind_tables(store_url):
    import os

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, inspect, text

    from campaignflow import db

    os.makedirs(os.environ["CAMPAIGNFLOW_HOME"], exist_ok=True)
    eng = create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        for revision in ("0002", "0003", "0004"):  # the store as the last release left it
            command.upgrade(cfg, revision)
        conn.execute(text("INSERT INTO reminderstate VALUES ('gate', 7, 'c', 3, '2027-01-04', 1), "
                          "('deliverable', 7, 'c', 1, '2027-01-05', 0)"))
    db.migrate(eng)
    with eng.connect() as conn:
        def rows(table: str, key: str) -> list[tuple]:
            return [tuple(r) for r in conn.execute(text(
                f"SELECT {key}, reminders, CAST(last_reminded_on AS VARCHAR(10)), level FROM {table}"))]

        assert rows("gatereminder", "gate_id") == [(7, 3, "2027-01-04", 1)]
        assert rows("deliverablereminder", "deliverable_id") == [(7, 1, "2027-01-05", 0)]
        assert not inspect(conn).has_table("reminderstate")
    eng.dispose()


def test_a_campaign_with_notifications_switched_off_is_left_out_of_the_sweep(home, chat):
    registry = registry_for(chat)
    mon = monday()
    loud = register(notify_spec({"timezone": "Europe/Berlin", "mute": ["gate.waiting"]}, channels=CHANNELS))
    quiet = register(notify_spec({"enabled": False}, channels=CHANNELS, id="northwind-quiet") | {"name": "Quiet launch"})
    for cid in (loud, quiet):
        open_gate(cid, "review", ["maria"], kind="review", submitted_by="sam", due_at=at(mon, 17))
        set_deliverable(cid, "messaging-brief", due=mon)

    report = sweep(registry, at(mon, 10))
    assert report.sweep.reminded == 2
    maria, sam = to(chat, "maria"), to(chat, "sam")
    assert len(maria) == 1 and len(sam) == 1
    assert "Quiet launch" not in maria[0]["message"] + sam[0]["message"]
    assert "[Northwind Q1 2027 webinar launch]" in maria[0]["message"]


@pytest.mark.parametrize("start, n, expected", [
    (dt.date(2027, 1, 15), 1, dt.date(2027, 1, 19)),   # Friday + 1: over the weekend and Monday's holiday
    (dt.date(2027, 1, 15), 0, dt.date(2027, 1, 15)),
    (dt.date(2027, 1, 19), -1, dt.date(2027, 1, 15)),  # Tuesday - 1: back over the holiday and the weekend
    (dt.date(2027, 1, 16), 2, dt.date(2027, 1, 20)),   # from a Saturday
    (dt.date(2027, 1, 20), -3, dt.date(2027, 1, 14)),
])
def test_business_day_steps_skip_weekends_and_holidays_both_ways(start, n, expected):
    from campaignflow.timeline import shift_business_days

    assert shift_business_days(start, n, frozenset({dt.date(2027, 1, 18)})) == expected
