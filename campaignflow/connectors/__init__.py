"""Ad and analytics platform connectors, one module each behind `base.Connector` (like apprise's plugins).

`create(config, credentials, http)` picks the module by the source's `kind`;
`register(kind, cls)` adds one (a new platform, or a synthetic one in the bench).
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping

from campaignflow import settings
from campaignflow.connectors.base import AuthError, Connector, Http, SourceConfig, SourceError

_BUILTIN = {
    "csv": "campaignflow.connectors.csv:CsvConnector",
    "google_ads": "campaignflow.connectors.google_ads:GoogleAdsConnector",
    "meta": "campaignflow.connectors.meta:MetaConnector",
    "ga4": "campaignflow.connectors.ga4:Ga4Connector",
}
_registered: dict[str, type[Connector]] = {}

# Where credentials come from, tried in order: loaders registered by the orchestration layer
# (blocks/platform_credentials.py registers the Prefect block loader), then the environment.
CredentialLoader = Callable[[SourceConfig], "Mapping[str, str] | None"]
credential_loaders: list[CredentialLoader] = []


def register(kind: str, cls: type[Connector]) -> None:
    _registered[kind] = cls


def connector_class(kind: str) -> type[Connector]:
    if kind in _registered:
        return _registered[kind]
    if kind not in _BUILTIN:
        raise SourceError("?", "", f"no connector for kind {kind!r}; known kinds: {', '.join(sorted(_BUILTIN))}")
    module, _, name = _BUILTIN[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    _registered[kind] = cls
    return cls


def credentials_for(config: SourceConfig) -> dict[str, str]:
    """The source's credentials: from a registered loader (a Prefect block) or `CAMPAIGNFLOW_<KIND>_<FIELD>`."""
    cls = connector_class(config.kind)
    found: dict[str, str] = {}
    for loader in credential_loaders:
        loaded = loader(config)
        if loaded:
            found = {k: v for k, v in loaded.items() if v}
            break
    if not found:
        found = settings.credential_variables(config.kind)
    missing = [alts for alts in cls.required if not any(a in found for a in alts)]
    if missing:
        names = " and ".join(" or ".join(alts) for alts in missing)
        hint = (f"the Prefect block {config.credentials!r} does not have it" if config.credentials and credential_loaders
                else f"set `credentials:` on the source to a {config.kind} credentials block "
                     f"(docs/ingestion.md), or set " + ", ".join(settings.credential_prefix(config.kind) + alts[0].upper() for alts in missing))
        raise AuthError(config.name, config.account, f"no {names} for {config.kind}; {hint}")
    return found


def create(config: SourceConfig, credentials: Mapping[str, str], http: Http) -> Connector:
    return connector_class(config.kind)(config, credentials, http)


__all__ = ["Connector", "Http", "SourceConfig", "SourceError", "connector_class", "create", "credentials_for",
           "register", "credential_loaders"]
