"""The notification commands and spec section: plain answers, and a clear error (never a traceback) for bad input."""

from __future__ import annotations

import pytest
import yaml

from chat_endpoints import ChatServer, notify_spec, open_gate, outbox_rows, register, write_spec_file
from conftest import cli


@pytest.fixture
def chat():
    with ChatServer() as server:
        yield server


def no_traceback(result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def test_channels_test_says_plainly_whether_the_message_arrived(home, chat, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_TEAM_CHAT", chat.url("team"))
    ok = cli("channels", "test", "team-chat", "--message", "hello from the test")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("arrived: team-chat target 1 of 1")
    assert [m["message"] for m in chat.messages()] == ["hello from the test"]

    chat.failing_status = 404
    bad = cli("channels", "test", "team-chat")
    assert bad.returncode == 1 and bad.stdout.startswith("did NOT arrive: team-chat")
    assert "404" in bad.stdout
    no_traceback(bad)


def test_channels_come_from_the_file_and_the_environment(home, chat, monkeypatch):
    home.mkdir(parents=True, exist_ok=True)
    (home / "channels.yaml").write_text(yaml.safe_dump({
        "channels": {"team-chat": chat.url("from-file"), "am-chat": [chat.url("am-1"), chat.url("am-2")]},
        "roles": {"account_manager": "am-chat"}, "default": "team-chat"}))
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_TEAM_CHAT", chat.url("from-env"))
    listed = cli("channels", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    import json

    data = json.loads(listed.stdout)
    assert [c["channel"] for c in data["channels"]] == ["am-chat", "team-chat"]
    assert data["roles"] == {"account_manager": "am-chat"} and data["sources"][-1] == "environment"
    assert cli("channels", "test", "team-chat").returncode == 0
    assert cli("channels", "test", "am-chat").returncode == 0
    assert chat.paths == ["/from-env", "/am-1", "/am-2"]  # the environment wins; every URL of a channel gets it


@pytest.mark.parametrize("args, expected", [
    (("channels", "test", "nosuch"), "there is no channel 'nosuch' (configured channels: team-chat)"),
    (("outbox", "retry", "999"), "there is no outbox message 999"),
    (("outbox", "list", "--status", "lost"), "--status 'lost' is not a message state; use one of pending, sending, sent, dead"),
    (("sweep", "--at", "tomorrow morning"), "--at 'tomorrow morning' is not a date and time"),
])
def test_bad_input_gets_one_clear_sentence(home, chat, monkeypatch, args, expected):
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_TEAM_CHAT", chat.url("team"))
    result = cli(*args, env={"PREFECT_API_URL": ""})  # local channels only, whatever server the session runs
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr
    no_traceback(result)


@pytest.mark.parametrize("content, expected", [
    ("channels: [oops", "line 2, column 1: not valid YAML"),
    ("channels: {}\nchannels: {}\n", "channels: given twice, on line 1 and line 2"),
    ("channels:\n  team-chat: json://127.0.0.1/x\nchanels: {}\n", "chanels is not a known field"),
    ("channels:\n  Team Chat: json://127.0.0.1/x\n", "channels.Team Chat: a channel name is lowercase letters"),
    ("channels:\n  team-chat: 42\n", "channels.team-chat: must be an apprise URL or a list of them"),
    ("people: [maria]\n", "people: must map names to channel names"),
])
def test_a_broken_channels_file_names_the_field_and_the_fix(home, content, expected):
    home.mkdir(parents=True, exist_ok=True)
    (home / "channels.yaml").write_text(content)
    result = cli("channels", "list")
    assert result.returncode == 1 and expected in result.stderr, result.stderr
    no_traceback(result)


def test_retrying_a_message_that_is_not_dead_is_refused(home, chat, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_TEAM_CHAT", chat.url("team"))
    cid = register(notify_spec({"default_channel": "team-chat"}))
    open_gate(cid, "goals", ["priya"])
    chat.failing_status = 503
    assert cli("sweep").returncode == 0
    row = outbox_rows()[0]
    result = cli("outbox", "retry", str(row.id))
    assert result.returncode == 1 and "is not dead" in result.stderr
    no_traceback(result)


def test_someone_without_any_channel_is_a_dead_letter_that_says_how_to_fix_it(home, chat, monkeypatch):
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_MARIA_CHAT", chat.url("maria"))
    cid = register(notify_spec({}, channels={"maria": "maria-chat"}))
    open_gate(cid, "goals", ["priya"])
    result = cli("sweep")
    assert result.returncode == 0, result.stderr
    assert "priya has no channel: set `channel` for them in the spec" in result.stdout
    listing = cli("outbox", "list", "--status", "dead")
    assert "via (no channel)" in listing.stdout


def test_a_channel_nobody_configured_is_a_dead_letter_until_it_exists(home, chat, monkeypatch):
    cid = register(notify_spec({}, channels={"maria": "maria-chat", "priya": "priya-chat"}))
    open_gate(cid, "goals", ["priya"])
    first = cli("sweep")
    assert "channel 'priya-chat' is not configured" in first.stdout
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_PRIYA_CHAT", chat.url("priya"))
    monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_MARIA_CHAT", chat.url("maria"))
    retried = cli("outbox", "retry")
    assert retried.returncode == 0 and "sent" in retried.stdout
    assert chat.paths == ["/priya"]


def test_spec_notification_mistakes_are_all_listed_with_their_fields(home, tmp_path):
    data = notify_spec({
        "timezone": "Berlin",
        "quiet_hours": {"start": "25:00", "end": "08:00"},
        "teams": [{"name": "agency", "members": ["maria", "copywriter", "ghost"], "timezone": "Europe/Berlin"},
                  {"name": "client", "members": ["priya", "maria"]}],
        "roles": {"janitor": "team-chat"},
        "reminders": {"escalate_after": 0, "escalate_to": [[]]},
        "mute": ["gate.opened"],
        "sla": {"client_review_days": 2, "client": ["nobody"]},
        "digest_mode": True,
    })
    data["people"][0]["channel"] = "Maria's Slack"
    result = cli("validate", str(write_spec_file(tmp_path / "spec.yaml", data)))
    assert result.returncode == 2
    no_traceback(result)
    text = result.stderr
    for expected in (
        "notifications.quiet_hours.start: Input should be in a valid time format",
        "notifications.reminders.escalate_after: Input should be greater than or equal to 1",
        "notifications.digest_mode: is not a known field",
    ):
        assert expected in text, text
    data["notifications"].pop("digest_mode")
    data["notifications"]["quiet_hours"]["start"] = "19:00"
    data["notifications"]["reminders"]["escalate_after"] = 2
    result = cli("validate", str(write_spec_file(tmp_path / "spec.yaml", data)))
    text = result.stderr
    for expected in (
        "people[0].channel: \"Maria's Slack\" must be a channel name",
        "notifications.timezone: 'Berlin' is not a time zone; use an IANA name such as Europe/Berlin",
        "notifications.teams[0].members[2]: 'ghost' is neither a person in `people` nor a role anyone holds",
        "notifications.teams[1].members: maria is already in team 'agency'; a person belongs to one team",
        "notifications.roles.janitor: nobody in `people` holds the role 'janitor'",
        "notifications.reminders.escalate_to[0]: is empty; name at least one person or role",
        "notifications.mute[0]: 'gate.opened' is not a message kind",
        "notifications.sla.client[0]: 'nobody' is neither a person in `people` nor a role anyone holds",
    ):
        assert expected in text, text
    assert "Nothing was written to the store." in text
