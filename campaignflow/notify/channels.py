"""Notification channels: names that campaign specs use, mapped to apprise URLs (secrets).

Three sources, later ones winning per channel name:

1. the `NotificationChannels` Prefect block (blocks/notification_channels.py), for deployed runs;
2. a YAML file, `$CAMPAIGNFLOW_CHANNELS` or `$CAMPAIGNFLOW_HOME/channels.yaml`;
3. environment variables `CAMPAIGNFLOW_CHANNEL_<NAME>=URL [URL ...]` (`TEAM_CHAT` names `team-chat`).

The registry also maps people, roles and teams to channel names, as
defaults for every campaign (a spec's own mapping wins). URLs carry tokens
and passwords, so they are only ever shown masked, and `redact` scrubs them
(and their secret parts) from any text that might be logged or stored.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from campaignflow import settings
from campaignflow.errors import UserError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.IGNORECASE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass
class ChannelRegistry:
    channels: dict[str, list[str]] = field(default_factory=dict)  # name -> apprise URLs (secret)
    people: dict[str, str] = field(default_factory=dict)  # handle -> channel
    roles: dict[str, str] = field(default_factory=dict)  # role -> channel
    teams: dict[str, str] = field(default_factory=dict)  # team name -> channel
    default: str | None = None
    sources: list[str] = field(default_factory=list)

    def merged(self, other: "ChannelRegistry") -> "ChannelRegistry":
        """`other` laid over this registry (its channels and mappings win by name)."""
        return ChannelRegistry(
            channels={**self.channels, **other.channels}, people={**self.people, **other.people},
            roles={**self.roles, **other.roles}, teams={**self.teams, **other.teams},
            default=other.default or self.default, sources=self.sources + other.sources)

    def urls(self, name: str) -> list[str]:
        if name not in self.channels:
            known = ", ".join(sorted(self.channels)) or "none"
            raise UserError(f"there is no channel {name!r} (configured channels: {known}); add it to the channels "
                            f"block, to {channels_file()} or as {env_name(name)}=URL")
        return self.channels[name]

    def secrets(self) -> list[str]:
        return secret_parts(u for urls in self.channels.values() for u in urls)


def env_name(channel: str) -> str:
    return settings.CHANNEL_PREFIX + re.sub(r"[^A-Z0-9]", "_", channel.upper())


def channels_file() -> Path:
    config = settings.get()
    return config.channels.expanduser() if config.channels else config.home_dir() / "channels.yaml"


def _url_list(where: str, value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise UserError(f"{where}: must be an apprise URL or a list of them, e.g. slack://TOKEN_A/TOKEN_B/TOKEN_C")
    for i, url in enumerate(values):
        if not _URL.match(url.strip()):
            # Never echo the value: a half-typed URL still holds a token.
            raise UserError(f"{where}[{i}]: is not an apprise URL (it should start with a scheme such as "
                            "slack://, msteams://, mailto:// or json://); see docs/notifications.md")
    return [v.strip() for v in values]


def registry_from_data(data: Any, source: str) -> ChannelRegistry:
    """A registry from the channels-file structure; every problem names its field."""
    if data is None:
        return ChannelRegistry(sources=[source])
    if not isinstance(data, dict):
        raise UserError(f"{source}: must be a mapping with `channels:` (name -> apprise URL) and optionally "
                        "`people:`, `roles:`, `teams:`, `default:`")
    unknown = set(data) - {"channels", "people", "roles", "teams", "default"}
    if unknown:
        raise UserError(f"{source}: {', '.join(sorted(unknown))} is not a known field; use channels, people, roles, teams, default")
    channels: dict[str, list[str]] = {}
    raw = data.get("channels") or {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: channels: must map channel names to apprise URLs")
    for name, value in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise UserError(f"{source}: channels.{name}: a channel name is lowercase letters, digits, '-' or '_'")
        channels[name] = _url_list(f"{source}: channels.{name}", value)
    maps: dict[str, dict[str, str]] = {}
    for key in ("people", "roles", "teams"):
        value = data.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise UserError(f"{source}: {key}: must map names to channel names, e.g. {{maria: maria-slack}}")
        maps[key] = {str(k): v for k, v in value.items()}
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise UserError(f"{source}: default: must be a channel name")
    return ChannelRegistry(channels, maps["people"], maps["roles"], maps["teams"], default, [source])


def load_local(base: ChannelRegistry | None = None) -> ChannelRegistry:
    """`base` (e.g. from the Prefect block) with the channels file and the environment laid over it."""
    registry = base or ChannelRegistry()
    path = channels_file()
    if path.is_file():
        from campaignflow.yamlload import load_yaml, read_text

        data = load_yaml(read_text(path), str(path))  # refusals name the line
        registry = registry.merged(registry_from_data(data, str(path)))
    env = settings.channel_variables()
    if env:
        channels = {k[len(settings.CHANNEL_PREFIX):].lower().replace("_", "-"): _url_list(k, v.split()) for k, v in sorted(env.items())}
        registry = registry.merged(ChannelRegistry(channels=channels, sources=["environment"]))
    install_log_redaction(registry.secrets())
    return registry


# -- keeping secrets out of text ----------------------------------------------------------------

_SECRET_KEYS = re.compile(r"token|key|secret|pass|pwd|auth|sig|hook|webhook|apikey|code", re.IGNORECASE)


def secret_parts(urls: Any) -> list[str]:
    """Each URL, and the parts of it that are secret: user, password, token-like host and path parts, secret query values."""
    parts: set[str] = set()
    for url in urls:
        parts.add(url)
        try:
            split = urlsplit(url)
            host = split.netloc.rpartition("@")[2].rsplit(":", 1)[0]  # case kept, unlike .hostname
        except ValueError:
            continue
        for value in (split.password, split.username):
            if value:
                parts.update({value, unquote(value)})
        if host and "." not in host and host != "localhost":
            parts.add(host)  # slack://TOKEN_A/..., discord://WEBHOOK_ID/...: the "host" is a credential
        for segment in split.path.split("/"):
            if len(segment) >= 6:  # tokens, webhook ids; short segments are ordinary words
                parts.update({segment, unquote(segment)})
        for pair in split.query.split("&"):
            key, _, value = pair.partition("=")
            if value and _SECRET_KEYS.search(key):
                parts.update({value, unquote(value)})
    # Longest first, so a URL is replaced whole before its pieces.
    return sorted((p for p in parts if len(p) >= 4), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def masked(url: str) -> str:
    """A URL as apprise shows it with privacy on (tokens and passwords starred)."""
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return f"{urlsplit(url).scheme}://(not understood by apprise)"
    shown = plugin.url(privacy=True).split("?", 1)[0]  # apprise's defaults in the query are noise here
    # The parts, not the whole URL: scheme, host and port stay readable so two channels can be told apart.
    return redact(shown, [part for part in secret_parts([url]) if part != url])


class _RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return False  # apprise's debug/trace lines print whole request URLs
        if self.secrets:
            message = redact(record.getMessage(), self.secrets)
            record.msg, record.args = message, ()
        return True


_filter = _RedactingFilter()
_filter_lock = threading.Lock()


def install_log_redaction(secrets: list[str]) -> None:
    """Scrub the channel secrets from everything apprise logs, whoever prints it."""
    with _filter_lock:
        _filter.secrets = sorted(set(_filter.secrets) | set(secrets), key=len, reverse=True)
        logger = logging.getLogger("apprise")
        if _filter not in logger.filters:
            logger.addFilter(_filter)
