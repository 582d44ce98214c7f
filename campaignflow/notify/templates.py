"""Message templates (Jinja2): the first rendered line is the title, the rest the body.

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

from jinja2 import ChoiceLoader, DictLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger("campaignflow.notify")

_WAITING = "{% for p in recipients %}{{ p.name }}{{ ', ' if not loop.last }}{% endfor %}"
_LINKS = """{% if links.run %}
Run: {{ links.run }}{% endif %}{% for p in recipients %}{% if links.approve.get(p.handle) %}
{{ p.name }}: approve {{ links.approve[p.handle] }} · request changes {{ links.changes[p.handle] }}{% endif %}{% endfor %}"""

DEFAULTS: dict[str, str] = {
    "step.started.j2": "[{{ campaign.name }}] step {{ step }} started\nThe {{ step }} step of {{ campaign.name }} has started." + _LINKS,
    "step.completed.j2": "[{{ campaign.name }}] step {{ step }} completed\n{{ summary }}" + _LINKS,
    "step.failed.j2": "[{{ campaign.name }}] step {{ step }} FAILED\nThe {{ step }} step failed: {{ error }}\n"
                      "Run the campaign again to continue where it stopped." + _LINKS,
    "campaign.completed.j2": "[{{ campaign.name }}] campaign completed\nAll seven steps are done. {{ summary }}" + _LINKS,
    "gate.waiting.j2": "[{{ campaign.name }}] waiting for your approval: {{ gate.title }}\n"
                       "Gate #{{ gate.id }} is waiting on " + _WAITING + " (policy: {{ gate.policy }})."
                       "{% if gate.due_at %} Due {{ gate.due_at }}.{% endif %}\n"
                       "Decide: campaignflow approve {{ gate.id }} --as HANDLE{% if not links.approve %} "
                       "(one-click decision links go only to each approver's own channel){% endif %}" + _LINKS,
    "gate.approved.j2": "[{{ campaign.name }}] approved: {{ gate.title }}\nGate #{{ gate.id }} is approved"
                        "{% if decided_by %} by {{ decided_by | join(', ') }}{% endif %}." + _LINKS,
    "gate.changes_requested.j2": "[{{ campaign.name }}] changes requested: {{ gate.title }}\n"
                                 "Gate #{{ gate.id }}: changes requested{% for c in comments %}\n- {{ c.person }}: {{ c.comment }}{% endfor %}" + _LINKS,
    "gate.rejected.j2": "[{{ campaign.name }}] rejected: {{ gate.title }}\n"
                        "Gate #{{ gate.id }} was rejected{% for c in comments %}\n- {{ c.person }}: {{ c.comment }}{% endfor %}" + _LINKS,
    "gate.escalated.j2": "[{{ campaign.name }}] escalated: {{ gate.title }}\nGate #{{ gate.id }} has been escalated "
                         "to " + _WAITING + ".{% if note %} {{ note }}{% endif %}" + _LINKS,
    "gate.timed_out.j2": "[{{ campaign.name }}] timed out: {{ gate.title }}\nGate #{{ gate.id }} ran out of time"
                         "{% if note %}: {{ note }}{% endif %}." + _LINKS,
    "gate.delegated.j2": "[{{ campaign.name }}] {{ away }} hands their approvals to you\n{{ away }} is away from "
                         "{{ detail.starts }} to {{ detail.ends }}{% if detail.reason %} ({{ detail.reason }}){% endif %}; "
                         "you decide their gates in {{ campaign.name }} meanwhile.\n"
                         "What waits on you: campaignflow approvals --for {{ detail.delegate }}" + _LINKS,
    "deliverable.completed.j2": "[{{ campaign.name }}] done: {{ name }}\n{{ name }} ({{ subject }}) is done"
                                "{% if actor != 'engine' %}, marked by {{ actor }}{% endif %}."
                                "{% for w in detail.unblocked %}\n{{ w.name }} ({{ w.owner }}) can start now.{% endfor %}" + _LINKS,
    "deliverable.unblocked.j2": "[{{ campaign.name }}] you can start: {{ next.name }}\n{{ name }} is done, so "
                                "{{ next.name }} ({{ next.key }}) has everything it waits on. It is yours: "
                                "when it is finished, campaignflow done {{ campaign.id }} {{ next.key }} --as {{ next.owner }}" + _LINKS,
    "goals.communicated.j2": "[{{ campaign.name }}] our goals are approved\n{{ subject }}",
    "timeline.overruns.j2": "[{{ campaign.name }}] the timeline overruns the campaign end\n{{ subject }}: replan or move the end date." + _LINKS,
    "kpi.off_track.j2": "[{{ campaign.name }}] KPI off track: {{ detail.goal or subject }}\n"
                        "{{ detail.kpi or 'KPI' }} is at {{ detail.actual }}, expected {{ detail.expected }} by now "
                        "(target {{ detail.target }})." + _LINKS,
    "sla.breached.j2": "[{{ campaign.name }}] client SLA breached: {{ rule_label }}\n{{ what }} was due by {{ due }} "
                       "and is now {{ late }} late.{% if waiting_on %} Waiting on {{ waiting_on | join(', ') }}.{% endif %}" + _LINKS,
    "reminder.j2": "{% set i = items[0] %}[{{ i.campaign }}] {{ i.state }}: {{ i.title }}\n"
                   "{{ i.title }} is {{ i.state }} (due {{ i.due }}){% if i.escalated %}; escalated after "
                   "{{ i.reminders }} reminders, waiting on {{ i.waiting_on | join(', ') }}{% endif %}.\n{{ i.action }}",
    "digest.j2": "{{ count }} thing(s) waiting on {{ recipients | map(attribute='name') | join(', ') }}\n"
                 "{% for i in items %}- [{{ i.campaign }}] {{ i.title }}: {{ i.state }}, due {{ i.due }}"
                 "{% if i.escalated %} (ESCALATED after {{ i.reminders }} reminders; waiting on "
                 "{{ i.waiting_on | join(', ') }}){% endif %}\n  {{ i.action }}\n{% endfor %}"
                 "{% if more %}... and {{ more }} more: campaignflow approvals lists them all\n{% endif %}",
}


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
    """Override files from the team's folder only: a file there that is a symlink to elsewhere is refused."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        root = os.path.realpath(self.searchpath[0])
        if os.path.commonpath([root, os.path.realpath(filename)]) != root:
            raise TemplateError(f"{template} leads out of the templates folder")
        return source, filename, uptodate


@lru_cache(maxsize=64)
def _environment(folder: str | None) -> ImmutableSandboxedEnvironment:
    loaders = ([_FolderLoader(folder)] if folder else []) + [DictLoader(DEFAULTS)]
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
