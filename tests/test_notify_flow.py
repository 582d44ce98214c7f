"""A campaign run through the real lifecycle flow tells its people in chat as work moves, each message once."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from chat_endpoints import ChatServer, outbox_rows
from conftest import cli

pytestmark = pytest.mark.prefect


def test_a_campaign_run_reports_to_chat_as_it_goes(home, prefect_api, monkeypatch):
    with ChatServer() as chat:
        home.mkdir(parents=True, exist_ok=True)
        # No notifications section in the bundled example: the registry's default channel reaches everyone.
        (home / "channels.yaml").write_text(yaml.safe_dump({"default": "team-chat"}))
        monkeypatch.setenv("CAMPAIGNFLOW_CHANNEL_TEAM_CHAT", chat.url("team"))
        result = cli("demo", "--pause", "0.1", timeout=400)
        assert result.returncode == 0, result.stdout + result.stderr
        titles = chat.titles()
        rows = outbox_rows()

    assert len(titles) == len(rows) and {r.status for r in rows} == {"sent"}
    assert len({r.dedupe_key for r in rows}) == len(rows)
    name = "[Northwind Q1 2027 webinar launch]"
    for expected in (f"{name} step goals started", f"{name} waiting for your approval: Approve the goals",
                     f"{name} approved: Approve the goals", f"{name} our goals are approved",
                     f"{name} step reviews completed", f"{name} campaign completed"):
        assert any(t.startswith(expected) for t in titles), (expected, titles)
    # one message per event and channel: nothing doubled, even though every step boundary runs a pass
    # in order: a gate's "waiting" message arrives before its outcome
    for i, title in enumerate(titles):
        if "] approved: " in title or "] changes requested: " in title:
            subject = title.split(": ", 1)[1]
            waiting = [j for j, t in enumerate(titles) if t.endswith(f"waiting for your approval: {subject}")]
            assert waiting and waiting[0] < i, (title, titles)
    per_event = Counter((r.event_id, r.kind, r.channel, r.target) for r in rows)
    assert max(per_event.values()) == 1
