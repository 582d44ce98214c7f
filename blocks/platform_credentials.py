"""Prefect blocks holding ad and analytics platform credentials (secrets as `SecretStr`).

One block type per registered connector, derived from the credentials model
its module declares (campaignflow/connectors/), so a new platform gets its
block without a line here. Create one per account, once, in the Prefect UI
(Blocks -> +) or in Python:

    from blocks.platform_credentials import MetaCredentials
    MetaCredentials(access_token="EAAB...").save("acme-meta")

and name it on the spec's source: `credentials: acme-meta`. Importing this
module registers the loader the ingestion core asks for credentials, so the
core never imports Prefect.
"""

from __future__ import annotations

import copy
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import SecretStr

from campaignflow import connectors, settings
from campaignflow.connectors.base import AuthError, Connector, SourceConfig


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


def _block_type(connector: type[Connector]) -> type[Block]:
    """The Prefect block type for a connector's credentials model: the same class name, fields and docstring;
    named by the model's title, with the slug saved blocks were created under (`campaignflow-<kind>-credentials`)."""
    model = connector.credentials_model
    fields = {name: copy.copy(info) for name, info in model.model_fields.items()}
    namespace = {
        "__module__": __name__, "__qualname__": model.__name__, "__doc__": model.__doc__,
        "__annotations__": {"kind": ClassVar[str], **{name: info.annotation for name, info in fields.items()}},
        **fields,
        "_block_type_name": model.model_config.get("title") or model.__name__,
        "_block_type_slug": f"campaignflow-{connector.kind.replace('_', '-')}-credentials",
        "kind": connector.kind,
        "as_credentials": _plain,
    }
    return type(Block)(model.__name__, (Block,), namespace)


BLOCKS: dict[str, type[Block]] = {kind: _block_type(connector) for kind, connector in connectors.registry().items()
                                  if connector.credentials_model is not None}
globals().update({block.__name__: block for block in BLOCKS.values()})  # e.g. MetaCredentials, as docs/ingestion.md shows
__all__ = ["BLOCKS", "load_credentials", *(block.__name__ for block in BLOCKS.values())]


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
