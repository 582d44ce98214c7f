"""Ad and analytics platform connectors, one module each behind `base.Connector` (like apprise's plugins).

Each module declares its platform (kind, source options, credentials model, limits, rows) and
registers its connector with `@register`. Every module of this package is imported the first time
the registry is asked, so adding a platform is adding one module here (and its test server).
`create(config, credentials, http)` picks the connector by the source's `kind`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Mapping

from campaignflow import settings
from campaignflow.connectors.base import (AuthError, Connector, Http, Limits, SourceConfig, SourceError,
                                          SourceOptions)

_registry: dict[str, type[Connector]] = {}
_discovered = False

# Where credentials come from, tried in order: loaders registered by the orchestration layer
# (blocks/platform_credentials.py registers the Prefect block loader), then the environment.
CredentialLoader = Callable[[SourceConfig], "Mapping[str, str] | None"]
credential_loaders: list[CredentialLoader] = []


def register(cls: type[Connector]) -> type[Connector]:
    """Add a connector (a class decorator). It must declare its kind, its source options and its limits
    (None only for files), and name only fields of its credentials model as required."""
    name = cls.__name__
    if not isinstance(getattr(cls, "kind", None), str):
        raise TypeError(f"connector {name} declares no `kind`")
    if not isinstance(getattr(cls, "options", None), SourceOptions):
        raise TypeError(f"connector {name} declares no `options` (a SourceOptions)")
    if not hasattr(cls, "limits") or not (cls.limits is None or isinstance(cls.limits, Limits)):
        raise TypeError(f"connector {name} declares no `limits` (Limits(concurrency=..., requests_per_second=...), "
                        "or None for a source that calls no platform); without them it would run unthrottled")
    fields = cls.credentials_model.model_fields if cls.credentials_model else {}
    unknown = [n for alts in cls.required for n in alts if n not in fields]
    if unknown:
        raise TypeError(f"connector {name} requires credentials {unknown} that its `credentials_model` does not have")
    _registry[cls.kind] = cls
    return cls


def registry() -> Mapping[str, type[Connector]]:
    """Every registered connector by kind (the first call imports every module of this package)."""
    global _discovered
    if not _discovered:
        _discovered = True
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
    return _registry


def connector_class(kind: str) -> type[Connector]:
    known = registry()
    if kind not in known:
        raise SourceError("?", "", f"no connector for kind {kind!r}; known kinds: {', '.join(sorted(known))}")
    return known[kind]


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
           "register", "registry", "credential_loaders"]
