"""The connector registry: each platform declares itself in its module, and the rest is derived from it."""

from __future__ import annotations

import typing

import pytest

from campaignflow import connectors, spec
from campaignflow.connectors.base import Connector, SourceOptions


def test_a_connector_that_declares_no_limits_is_refused_so_no_platform_runs_unthrottled():
    class Unthrottled(Connector):
        kind = "unthrottled"
        options = SourceOptions(summary="reports", account_label="an id")

    with pytest.raises(TypeError, match="declares no `limits`"):
        connectors.register(Unthrottled)
    assert "unthrottled" not in connectors.registry()


def test_the_spec_and_the_credentials_blocks_come_from_the_registry():
    from blocks.platform_credentials import BLOCKS

    kinds = set(connectors.registry())
    assert {"csv", "google_ads", "meta", "ga4"} <= kinds
    assert set(typing.get_args(spec.SourceKind)) == kinds
    # Saved blocks keep working: the block types keep their names and slugs.
    assert {k: (b.__name__, b._block_type_name, b.get_block_type_slug()) for k, b in BLOCKS.items()} == {
        "google_ads": ("GoogleAdsCredentials", "Google Ads Credentials", "campaignflow-google-ads-credentials"),
        "meta": ("MetaCredentials", "Meta Ads Credentials", "campaignflow-meta-credentials"),
        "ga4": ("Ga4Credentials", "GA4 Credentials", "campaignflow-ga4-credentials"),
    }
    # Secrets are the SecretStr fields; ids and URLs stay readable in error texts.
    assert connectors.connector_class("google_ads").public_credential_fields() == {
        "client_id", "login_customer_id", "token_url"}
