"""The notification-channels block: channel names -> apprise URLs (secrets), plus who reads which channel.

Create it once per Prefect workspace (UI: Blocks -> + -> Notification Channels, or in Python):

    from pydantic import SecretStr
    from blocks.notification_channels import NotificationChannels

    NotificationChannels(
        channels={"team-chat": [SecretStr("slack://TOKEN_A/TOKEN_B/TOKEN_C/#campaigns")],
                  "maria-mail": [SecretStr("mailtos://user:app-password@gmail.com?to=maria@agency.example")]},
        people={"maria": "maria-mail"}, roles={"cmo": "team-chat"}, default="team-chat",
    ).save("campaignflow-channels", overwrite=True)

Campaign specs name channels (`people[].channel`, `notifications.roles`, teams,
`default_channel`); this block says where each one goes. Without a Prefect
server (tests, the CLI on a laptop) the same mapping comes from
`$CAMPAIGNFLOW_HOME/channels.yaml` and `CAMPAIGNFLOW_CHANNEL_<NAME>` variables,
which win over the block by channel name.
"""

from __future__ import annotations

import logging
from typing import Optional

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from campaignflow import settings
from campaignflow.errors import UserError
from campaignflow.notify.channels import ChannelRegistry, load_local, registry_from_data

log = logging.getLogger("campaignflow.notify")


class NotificationChannels(Block):
    """Where campaignflow's chat and email notifications go: apprise URLs per channel name."""

    _block_type_name = "Notification Channels"
    _block_type_slug = "campaignflow-notification-channels"
    _description = "Apprise URLs (Slack, Teams, Discord, Mattermost, email, webhooks...) per channel name, " \
                   "and which channel each person, role and team reads."
    _documentation_url = "https://github.com/caronc/apprise/wiki"

    channels: dict[str, list[SecretStr]] = Field(
        default_factory=dict, description="Channel name -> apprise URLs, e.g. team-chat -> slack://T/B/X/#campaigns")
    people: dict[str, str] = Field(default_factory=dict, description="Person handle -> channel name")
    roles: dict[str, str] = Field(default_factory=dict, description="Role -> channel name")
    teams: dict[str, str] = Field(default_factory=dict, description="Team name -> channel name")
    default: Optional[str] = Field(default=None, description="Channel for anyone with no other")

    def registry(self) -> ChannelRegistry:
        data = {"channels": {k: [u.get_secret_value() for u in v] for k, v in self.channels.items()},
                "people": self.people, "roles": self.roles, "teams": self.teams, "default": self.default}
        return registry_from_data(data, f"block {self._block_document_name or block_name()}")


def block_name() -> str:
    return settings.get().channels_block


def load_registry(use_block: bool | None = None) -> ChannelRegistry:
    """The channel registry: the block (when a Prefect API is configured and the block exists), file, environment.

    Never starts a Prefect server of its own: without PREFECT_API_URL the block is not consulted.
    """
    if use_block is None:
        use_block = bool(settings.get().prefect_api_url)
    base = None
    if use_block:
        try:
            block = NotificationChannels.load(block_name())
            base = block.registry()
        except UserError:
            raise
        except ValueError:
            pass  # no such block yet: the file and the environment may still define channels
        except Exception as exc:  # noqa: BLE001  the server is away: local channels still work
            log.warning("could not read the %s block (%s); using local channel settings only",
                        block_name(), exc.__class__.__name__)
    return load_local(base)
