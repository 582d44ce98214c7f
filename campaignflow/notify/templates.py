"""Message templates (Jinja2): the first rendered line is the title, the rest the body.

The defaults are files in campaignflow/templates/messages/ (`gate.waiting.j2`, ...).

A team overrides any of them by putting a file of the same name
(`gate.waiting.j2`, `digest.j2`, ...) in the folder that its spec names in
`notifications.templates`. A broken override never loses a message: the
default template renders it and the problem is reported once per render.

Whoever can edit a spec's folder writes templates, and the sweep renders
them as the user running the flows: they render in Jinja2's immutable
sandbox (no attribute tricks to reach Python, no changing the context), and
only from files inside the spec's own folder.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger("campaignflow.notify")

# The default templates, one file per message; names starting with "_" are partials they include.
DEFAULTS = Path(__file__).resolve().parent.parent / "templates" / "messages"


def template_folder(name: str, spec_dir: str) -> str | None:
    """The override folder `name` (from the spec) inside the spec's folder; None when it leads out of it.

    The spec check refuses absolute paths and '..'; this also catches a folder that is a symlink elsewhere."""
    base = Path(spec_dir or ".").resolve()
    folder = (base / name).resolve()
    if folder != base and base not in folder.parents:
        log.warning("notifications.templates %r leads out of the spec's folder %s; the default templates are used",
                    name, base)
        return None
    return str(folder)


class _FolderLoader(FileSystemLoader):
    """Override files from the team's folder only: a file there that is a symlink to elsewhere is refused, and
    partials ("_links.j2") always come from the defaults, so a team overrides whole messages and nothing else."""

    def get_source(self, environment, template):
        if template.startswith("_"):
            raise TemplateNotFound(template)
        source, filename, uptodate = super().get_source(environment, template)
        root = os.path.realpath(self.searchpath[0])
        if os.path.commonpath([root, os.path.realpath(filename)]) != root:
            raise TemplateError(f"{template} leads out of the templates folder")
        return source, filename, uptodate


@lru_cache(maxsize=64)
def _environment(folder: str | None) -> ImmutableSandboxedEnvironment:
    loaders = ([_FolderLoader(folder)] if folder else []) + [FileSystemLoader(DEFAULTS)]
    return ImmutableSandboxedEnvironment(loader=ChoiceLoader(loaders), undefined=StrictUndefined, autoescape=False,
                                         keep_trailing_newline=False, trim_blocks=False)


def render(name: str, context: dict[str, Any], folder: str | None = None) -> tuple[str, str]:
    """(title, body) of template `name` (e.g. 'gate.waiting'), from the team's folder if it has one."""
    file = f"{name}.j2"
    try:
        text = _environment(folder).get_template(file).render(**context)
    except TemplateError as exc:
        if folder is None:
            return _plain(name, context, exc)
        log.warning("template %s in %s does not render (%s: %s); the default template was used",
                    file, folder, exc.__class__.__name__, exc)
        try:
            text = _environment(None).get_template(file).render(**context)
        except TemplateError as default_exc:
            return _plain(name, context, default_exc)
    title, _, body = text.strip().partition("\n")
    return title.strip()[:250], body.strip()


def _plain(name: str, context: dict[str, Any], exc: Exception) -> tuple[str, str]:
    """A message whose template cannot render still goes out, plainly: one broken layout must not hold up
    every message behind it."""
    log.error("template %s.j2 does not render (%s: %s); the message went out plain", name, exc.__class__.__name__, exc)
    campaign = (context.get("campaign") or {}).get("name", "")
    what = context.get("subject") or name
    return (f"[{campaign}] {name}: {what}" if campaign else f"{name}: {what}")[:250], str(context.get("detail") or "")
