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


def test_the_sweep_deployment_runs_on_an_interval():
    from deployments.reminders import DEPLOYMENT_NAME, deployment

    dep = deployment(every_minutes=5)
    assert dep.name == DEPLOYMENT_NAME
    assert [s.schedule.interval.total_seconds() for s in dep.schedules] == [300]


def test_channels_from_the_prefect_block_with_the_urls_kept_secret(home, prefect_api, monkeypatch):
    from pydantic import SecretStr

    from blocks.notification_channels import NotificationChannels, load_registry
    from chat_endpoints import ChatServer
    from conftest import cli

    monkeypatch.setenv("CAMPAIGNFLOW_CHANNELS_BLOCK", "test-channels")
    with ChatServer() as chat:
        url = chat.url("from-block", secret="BlockS3cret-777")
        NotificationChannels(channels={"team-chat": [SecretStr(url)]}, roles={"cmo": "team-chat"},
                             default="team-chat").save("test-channels", overwrite=True)
        registry = load_registry()
        assert registry.channels == {"team-chat": [url]} and registry.roles == {"cmo": "team-chat"}
        tested = cli("channels", "test", "team-chat", env={"PREFECT_API_URL": prefect_api})
        assert tested.returncode == 0, tested.stderr
        assert tested.stdout.startswith("arrived:") and chat.paths == ["/from-block"]
        listed = cli("channels", "list", env={"PREFECT_API_URL": prefect_api})
        assert "team-chat" in listed.stdout and "BlockS3cret-777" not in listed.stdout + listed.stderr
    # the block document shows the URL starred, as Prefect shows secrets
    loaded = NotificationChannels.load("test-channels")
    assert "BlockS3cret-777" not in repr(loaded) and "BlockS3cret-777" not in str(loaded.model_dump())
