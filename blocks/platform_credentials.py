"""Prefect blocks holding ad and analytics platform credentials (secrets as `SecretStr`).

Create one per account, once, in the Prefect UI (Blocks -> +) or in Python:

    from blocks.platform_credentials import MetaCredentials
    MetaCredentials(access_token="EAAB...").save("acme-meta")

and name it on the spec's source: `credentials: acme-meta`. Importing this
module registers the loader the ingestion core asks for credentials, so the
core never imports Prefect.
"""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from campaignflow import connectors, settings
from campaignflow.connectors.base import AuthError, SourceConfig


def _plain(block: Block) -> dict[str, str]:
    out = {}
    for name in type(block).model_fields:
        if name == "block_type_slug":
            continue
        value = getattr(block, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value:
            out[name] = str(value)
    return out


class GoogleAdsCredentials(Block):
    """Google Ads API access: a developer token plus OAuth (a refresh token, or a short-lived access token)."""

    _block_type_name = "Google Ads Credentials"
    _block_type_slug = "campaignflow-google-ads-credentials"
    kind: ClassVar[str] = "google_ads"

    developer_token: SecretStr = Field(description="From the Google Ads API Center of your manager account.")
    client_id: str = Field(default="", description="OAuth client id (Google Cloud console).")
    client_secret: SecretStr | None = Field(default=None, description="OAuth client secret.")
    refresh_token: SecretStr | None = Field(default=None, description="OAuth refresh token with the adwords scope.")
    access_token: SecretStr | None = Field(default=None, description="Instead of a refresh token (expires in 1 h).")
    login_customer_id: str = Field(default="", description="Manager account id when accessing a client account.")
    token_url: str = Field(default="https://oauth2.googleapis.com/token")

    def as_credentials(self) -> dict[str, str]:
        return _plain(self)


class MetaCredentials(Block):
    """Meta Marketing API access: a system-user access token with ads_read."""

    _block_type_name = "Meta Ads Credentials"
    _block_type_slug = "campaignflow-meta-credentials"
    kind: ClassVar[str] = "meta"

    access_token: SecretStr = Field(description="System user token (Business Settings -> System users) with ads_read.")

    def as_credentials(self) -> dict[str, str]:
        return _plain(self)


class Ga4Credentials(Block):
    """Google Analytics Data API access: OAuth refresh token (or access token) with analytics.readonly."""

    _block_type_name = "GA4 Credentials"
    _block_type_slug = "campaignflow-ga4-credentials"
    kind: ClassVar[str] = "ga4"

    client_id: str = Field(default="", description="OAuth client id (Google Cloud console).")
    client_secret: SecretStr | None = Field(default=None)
    refresh_token: SecretStr | None = Field(default=None, description="With the analytics.readonly scope.")
    access_token: SecretStr | None = Field(default=None, description="Instead of a refresh token (expires in 1 h).")
    token_url: str = Field(default="https://oauth2.googleapis.com/token")

    def as_credentials(self) -> dict[str, str]:
        return _plain(self)


BLOCKS: dict[str, type[Block]] = {"google_ads": GoogleAdsCredentials, "meta": MetaCredentials, "ga4": Ga4Credentials}


def load_credentials(config: SourceConfig) -> dict[str, str] | None:
    """The credentials block the source names, as plain values; None when the source names none, or names one
    that does not exist while the environment has the credentials (the same fallback as `ingest --local`)."""
    if not config.credentials or config.kind not in BLOCKS:
        return None
    block_type = BLOCKS[config.kind]
    try:
        block = block_type.load(config.credentials)
    except ValueError as exc:  # Prefect: "Unable to find block document named ..."
        env, required = settings.credential_variables(config.kind), connectors.connector_class(config.kind).required
        if all(any(a in env for a in alts) for alts in required):
            return None
        variables = " and ".join(settings.credential_prefix(config.kind) + alts[0].upper() for alts in required)
        raise AuthError(config.name, config.account,
                        f"there is no {block_type._block_type_name} block named {config.credentials!r} in Prefect "
                        f"({str(exc).splitlines()[0]}); create it (docs/ingestion.md), fix `credentials:`, "
                        f"or set {variables}") from None
    return block.as_credentials()


if load_credentials not in connectors.credential_loaders:
    connectors.credential_loaders.append(load_credentials)
