"""What each of the seven lifecycle steps does to the store, as plain functions.

The Prefect flows in flows/lifecycle.py call these (through thin tasks) and
add what Prefect is for: waiting at gates, artifacts, retries, run state.
Each function returns a `StepReport`: a one-line summary for the console
and a markdown page for people.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from campaignflow import models as m
from campaignflow.errors import UserError
from campaignflow.presentation import markdown_table
from campaignflow.spec import CampaignSpec
from campaignflow.approvals import StagePlan, due_at, plan_stages, review_stage, waiting_on
from campaignflow.store import audit, campaign_spec, gate_decisions, get_campaign, open_gate
from campaignflow.timeline import schedule

if TYPE_CHECKING:
    from campaignflow.ingest import SourceRefresh


@dataclass(frozen=True)
class StepReport:
    summary: str
    markdown: str


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def load(s: Session, campaign_id: str) -> tuple[m.Campaign, CampaignSpec]:
    campaign = get_campaign(s, campaign_id)
    return campaign, campaign_spec(campaign)


# -- 1. goals -----------------------------------------------------------------------------------

def goals_page(spec: CampaignSpec) -> str:
    rows = [[g.name, g.kpi, f"{g.baseline:g} → {g.target:g} {g.unit}", g.deadline] for g in spec.goals]
    return f"# Goals: {spec.name}\n\n" + markdown_table(["goal", "KPI", "baseline → target", "deadline"], rows)


def _plan_gate_fields(plan: StagePlan, holidays: frozenset) -> dict:
    opened = m.utcnow()
    return dict(approvers=plan.approvers, policy=plan.policy, quorum=plan.quorum, primary_approver=plan.primary,
                on_timeout=plan.on_timeout, escalate_to=plan.escalate_to, on_reject=plan.on_reject,
                opened_at=opened, due_at=due_at(opened, plan.due_days, holidays))


def next_plan_gate(s: Session, campaign_id: str, kind: str) -> m.ApprovalGate | str:
    """The goals or budget gate to wait on now, or the final outcome ('approved' / 'rejected').

    Stages run one after another; changes requested at any stage opens version N+1 at the first
    stage, so earlier approvals do not carry over to work that changed.
    """
    _, spec = load(s, campaign_id)
    amount = spec.budget_total() if kind == "budget" else None
    plans = plan_stages(spec, kind, amount)
    gates = list(s.exec(select(m.ApprovalGate).where(m.ApprovalGate.campaign_id == campaign_id,
                                                     m.ApprovalGate.kind == kind).order_by(m.ApprovalGate.id)))
    version, stage_index, note = 1, 0, ""
    if gates:
        last = gates[-1]
        if last.status == "open":
            return last
        if last.status == "rejected":
            return "rejected"
        if last.status == "approved":
            if last.stage_index + 1 >= len(plans):
                return "approved"
            version, stage_index = last.version, last.stage_index + 1
        else:  # changes requested
            version = last.version + 1
            comments = "; ".join(f"{d.person}: {d.comment}" for d in gate_decisions(s, last.id) if d.comment)
            note = f"\n\n**Changes requested on version {last.version}:** {comments}"
    plan = plans[stage_index]
    what = {"goals": f"the goals of {spec.name}",
            "budget": f"the budget of {spec.name}: {_money(spec.budget_total(), spec.currency)}"}[kind]
    stage = f" ({plan.name}, stage {stage_index + 1} of {len(plans)})" if len(plans) > 1 else ""
    page = goals_page(spec) if kind == "goals" else budget_page(spec)
    return open_gate(
        s, key=f"{campaign_id}/{kind}/v{version}" + (f"/{plan.name}" if len(plans) > 1 else ""),
        campaign_id=campaign_id, kind=kind, title=f"Approve {what}{stage}", description=page + note,
        version=version, stage=plan.name, stage_index=stage_index, stages_total=len(plans), amount=amount,
        submitted_by=spec.manager(), **_plan_gate_fields(plan, frozenset(spec.holidays)),
    )


def settle_goals(s: Session, campaign_id: str, gate_status: str) -> StepReport:
    _, spec = load(s, campaign_id)
    for goal in s.exec(select(m.Goal).where(m.Goal.campaign_id == campaign_id)):
        goal.status = "approved" if gate_status == "approved" else "rejected"
        s.add(goal)
    if gate_status != "approved":
        return StepReport("goals rejected: campaign stopped", goals_page(spec) + "\n\n**Rejected.** The campaign stops here.")
    names = ", ".join(f"{g.name} ({g.target:g} {g.unit} by {g.deadline})" for g in spec.goals)
    audit(s, campaign_id, "goals.communicated", names, to=[p.handle for p in spec.people])
    return StepReport(f"{len(spec.goals)} goal(s) approved: {names}", goals_page(spec) + "\n\n**Approved** and shared with the team.")


# -- 2. audience --------------------------------------------------------------------------------

def audience(s: Session, campaign_id: str) -> StepReport:
    _, spec = load(s, campaign_id)
    a = spec.audience
    lines = [f"# Audience: {spec.name}", "", f"**Ideal customer profile:** {a.icp or '(not stated)'}", "", "## Personas"]
    for p in a.personas:
        lines.append(f"- **{p.name}**: {p.description}" + (f" Pains: {'; '.join(p.pains)}." if p.pains else "")
                     + (f" Would pay: {p.willingness_to_pay}." if p.willingness_to_pay else ""))
    lines += ["", "## Segments", markdown_table(["segment", "", "why"],
              [[x.name, "target", x.description] for x in a.target] + [[x.name, "exclude", x.description] for x in a.exclude])]
    summary = (f"{len(a.personas)} persona(s), targeting {', '.join(x.name for x in a.target)}"
               + (f"; excluding {', '.join(x.name for x in a.exclude)}" if a.exclude else ""))
    return StepReport(summary, "\n".join(lines))


# -- 3. budget ----------------------------------------------------------------------------------

def budget_page(spec: CampaignSpec) -> str:
    rows = [[b.deliverable, b.category, _money(b.amount, spec.currency), b.description] for b in spec.budget]
    by_cat: dict[str, float] = {}
    for b in spec.budget:
        by_cat[b.category] = by_cat.get(b.category, 0) + b.amount
    split = ", ".join(f"{k} {_money(v, spec.currency)}" for k, v in sorted(by_cat.items()))
    return (f"# Budget: {spec.name}\n\n**Total {_money(spec.budget_total(), spec.currency)}** ({split})\n\n"
            + markdown_table(["deliverable", "category", "amount", "note"], rows))


def settle_budget(s: Session, campaign_id: str, gate_status: str) -> StepReport:
    _, spec = load(s, campaign_id)
    approved = gate_status == "approved"
    for line in s.exec(select(m.BudgetLine).where(m.BudgetLine.campaign_id == campaign_id)):
        line.status = "approved" if approved else "rejected"
        s.add(line)
    total = _money(spec.budget_total(), spec.currency)
    if not approved:
        return StepReport(f"budget of {total} rejected: campaign stopped", budget_page(spec) + "\n\n**Rejected.**")
    return StepReport(f"budget of {total} approved over {len(spec.budget)} line(s)", budget_page(spec) + "\n\n**Approved.**")


# -- 4. timeline (with the channel plan) --------------------------------------------------------

def timeline(s: Session, campaign_id: str) -> StepReport:
    campaign, spec = load(s, campaign_id)
    slots = schedule({d.key: d.duration_days for d in spec.deliverables},
                     {d.key: d.depends_on for d in spec.deliverables}, spec.start, frozenset(spec.holidays))
    rows = {d.key: d for d in s.exec(select(m.Deliverable).where(m.Deliverable.campaign_id == campaign_id))}
    for slot in slots:
        row = rows[slot.key]
        row.start, row.due, row.critical = slot.start, slot.due, slot.critical
        s.add(row)
    launch = max(slot.due for slot in slots)
    critical = [slot.key for slot in slots if slot.critical]
    fits = launch <= spec.end
    if not fits:
        audit(s, campaign_id, "timeline.overruns", f"launch {launch} after end {spec.end}")
    owners = {d.key: d.owner for d in spec.deliverables}
    table = markdown_table(["deliverable", "owner", "start", "due", "days", "critical"],
                   [[x.key, owners[x.key], x.start, x.due, x.duration_days, "yes" if x.critical else ""] for x in slots])
    by_channel: dict[str, list[str]] = {}
    for d in spec.deliverables:
        by_channel.setdefault(d.channel or "(none)", []).append(d.key)
    plan = markdown_table(["channel", "kind", "funnel stage", "deliverables"],
                  [[c.name, c.kind, c.funnel_stage, ", ".join(by_channel.get(c.name, [])) or "—"] for c in spec.channels])
    warning = "" if fits else f"\n\n> **Warning:** the work ends {launch}, after the campaign end {spec.end}. Replan."
    md = (f"# Timeline: {spec.name}\n\nStart {spec.start}, all work done by **{launch}**; "
          f"critical path: {' → '.join(critical)}.{warning}\n\n{table}\n\n## Channel plan\n\n{plan}")
    summary = f"{len(slots)} deliverables scheduled, done by {launch}; critical path {' -> '.join(critical)}"
    return StepReport(summary + ("" if fits else f" (OVERRUNS the end {spec.end})"), md)


# -- 5. content drafts --------------------------------------------------------------------------

def content_drafts(s: Session, campaign_id: str) -> StepReport:
    """Every deliverable with review rounds becomes an asset with its first draft submitted by its owner."""
    _, spec = load(s, campaign_id)
    existing = {a.deliverable for a in s.exec(select(m.Asset).where(m.Asset.campaign_id == campaign_id))}
    rows = []
    for d in spec.deliverables:
        if not d.reviewers:
            continue
        if d.key not in existing:
            s.add(m.Asset(campaign_id=campaign_id, deliverable=d.key, version=1, round=1, status="in_review",
                          submitted_by=d.owner))
            audit(s, campaign_id, "draft.submitted", d.key, actor=d.owner, version=1)
        rows.append([d.key, d.owner, f"{len(d.reviewers)} round(s)"])
    _set_deliverable_status(s, campaign_id, {r[0] for r in rows}, "in_review")
    md = f"# Content drafts: {spec.name}\n\n" + markdown_table(["asset", "owner", "reviews"], rows)
    return StepReport(f"{len(rows)} first draft(s) ready for review", md)


def _set_deliverable_status(s: Session, campaign_id: str, keys: set[str], status: str) -> None:
    for row in s.exec(select(m.Deliverable).where(m.Deliverable.campaign_id == campaign_id, m.Deliverable.key.in_(keys))):
        row.status = status
        s.add(row)


def mark_done(s: Session, campaign_id: str, key: str, person: str,
              force: bool = False) -> tuple[m.Deliverable, list[dict[str, str]]]:
    """The owner (or a campaign/account manager) says a deliverable is done: published, bought, shipped.

    Work is done only once the campaign's goals and budget are approved and everything it depends on
    is done; `force` lets a campaign or account manager say otherwise, and the audit names what they
    overrode. Returns the deliverable and the work it unblocked (each {key, name, owner}; empty when it
    was done already)."""
    _, spec = load(s, campaign_id)
    row = s.exec(select(m.Deliverable).where(m.Deliverable.campaign_id == campaign_id, m.Deliverable.key == key)).first()
    if row is None:
        keys = ", ".join(d.key for d in spec.deliverables)
        raise UserError(f"campaign {campaign_id} has no deliverable {key!r}; its deliverables are {keys}")
    managers = [p.handle for p in spec.people if {"campaign_manager", "account_manager"} & set(p.roles)]
    if person != row.owner and person not in managers:
        raise UserError(f"{person} neither owns {key} ({row.owner} does) nor manages the campaign; "
                        f"ask {row.owner} or a campaign manager")
    if row.status == "done":
        return row, []  # said again: nothing new
    if row.status == "dropped":
        raise UserError(f"{key} was dropped after a rejected review; it cannot be marked done")
    reviewed = row.review_rounds == 0 or row.status == "approved"
    if not reviewed:
        raise UserError(f"{key} is still {row.status.replace('_', ' ')}: its reviews must approve it before it is done")
    blockers = _done_blockers(s, campaign_id, spec, key)
    who = ", ".join(managers) or "none is named in the spec"
    if blockers and not force:
        raise UserError(f"{key} cannot be done yet: {'; '.join(blockers)}. Finish those first, or a campaign or "
                        f"account manager ({who}) may override with --force (audited)")
    if blockers and person not in managers:
        raise UserError(f"only a campaign or account manager ({who}) may force {key} done; {person} is not one")
    unblocked = _unblocked_by(s, campaign_id, spec, key)
    row.status = "done"
    s.add(row)
    audit(s, campaign_id, "deliverable.done", key, actor=person, name=row.name, owner=row.owner, unblocked=unblocked,
          **({"forced_past": blockers} if blockers else {}))
    return row, unblocked


def _done_blockers(s: Session, campaign_id: str, spec: CampaignSpec, key: str) -> list[str]:
    """Why `key` is not ready to be done: a goals or budget gate not yet approved, dependencies not done."""
    blockers = [b for kind in ("goals", "budget") if (b := _plan_blocker(s, campaign_id, kind))]
    status = dict(s.exec(select(m.Deliverable.key, m.Deliverable.status)
                         .where(m.Deliverable.campaign_id == campaign_id)).all())
    depends_on = next(d.depends_on for d in spec.deliverables if d.key == key)
    blockers += [f"it depends on {dep}, which is {status.get(dep, 'planned').replace('_', ' ')}"
                 for dep in depends_on if status.get(dep) != "done"]
    return blockers


def _plan_blocker(s: Session, campaign_id: str, kind: str) -> str | None:
    """None when the campaign's goals (or budget) are approved at every stage; else where they stand."""
    last = s.exec(select(m.ApprovalGate).where(m.ApprovalGate.campaign_id == campaign_id, m.ApprovalGate.kind == kind)
                  .order_by(m.ApprovalGate.id.desc())).first()
    if last is None:
        return f"the campaign has not reached its {kind} gate yet"
    if last.status == "open":
        left = waiting_on(last, gate_decisions(s, last.id))
        return f"the campaign waits at its {kind} gate #{last.id} (on {', '.join(left)})"
    if last.status != "approved":
        return f"its {kind} gate #{last.id} was {last.status.replace('_', ' ')}"
    if last.stage_index + 1 < last.stages_total:
        return f"its {kind} gate has approved stage {last.stage_index + 1} of {last.stages_total} only"
    return None


def _unblocked_by(s: Session, campaign_id: str, spec: CampaignSpec, key: str) -> list[dict[str, str]]:
    """The not-yet-started deliverables that waited on `key` and now have everything they depend on done."""
    status = dict(s.exec(select(m.Deliverable.key, m.Deliverable.status)
                         .where(m.Deliverable.campaign_id == campaign_id)).all())
    status[key] = "done"
    return [{"key": d.key, "name": d.name, "owner": d.owner} for d in spec.deliverables
            if key in d.depends_on and status.get(d.key) in m.OWNER_TO_MOVE
            and all(status.get(dep) == "done" for dep in d.depends_on)]


# -- 6. reviews ---------------------------------------------------------------------------------

def review_gate_key(campaign_id: str, asset: m.Asset) -> str:
    return f"{campaign_id}/review/{asset.deliverable}/r{asset.round}v{asset.version}"


def open_review_gates(s: Session, campaign_id: str) -> list[m.ApprovalGate]:
    """The current review gate of every asset still in review (opening the ones not open yet)."""
    _, spec = load(s, campaign_id)
    deliverables = {d.key: d for d in spec.deliverables}
    gates = []
    for asset in s.exec(select(m.Asset).where(m.Asset.campaign_id == campaign_id, m.Asset.status == "in_review")
                        .order_by(m.Asset.id)):
        d = deliverables[asset.deliverable]
        rounds = len(d.reviewers)
        label = "final review" if asset.round == rounds else f"review round {asset.round} of {rounds}"
        plan = review_stage(spec, d.reviewers[asset.round - 1])
        gates.append(open_gate(
            s, key=review_gate_key(campaign_id, asset), campaign_id=campaign_id, kind="review",
            subject=asset.deliverable, round=asset.round, version=asset.version,
            title=f"{label.capitalize()}: {d.name} (draft v{asset.version})",
            description=f"# {d.name}\n\nDraft v{asset.version} by {d.owner}, {label}. Channel: {d.channel or '—'}.",
            submitted_by=d.owner, **_plan_gate_fields(plan, frozenset(spec.holidays)),
        ))
    return gates


def settle_review(s: Session, campaign_id: str, gate: m.ApprovalGate) -> str:
    """Move an asset on after its review gate closed; returns what happened, for the console."""
    _, spec = load(s, campaign_id)
    d = next(x for x in spec.deliverables if x.key == gate.subject)
    asset = s.exec(select(m.Asset).where(m.Asset.campaign_id == campaign_id, m.Asset.deliverable == gate.subject)).one()
    if (asset.round, asset.version) != (gate.round, gate.version):
        return ""  # already settled by an earlier run
    if gate.status == "approved" and asset.round < len(d.reviewers):
        asset.round += 1
        what = f"{d.key}: round {gate.round} approved, on to round {asset.round}"
    elif gate.status == "approved":
        asset.status = "approved"
        _set_deliverable_status(s, campaign_id, {d.key}, "approved")
        what = f"{d.key}: final review approved, ready to launch"
    elif gate.status == "changes_requested":
        asset.version += 1
        audit(s, campaign_id, "draft.submitted", d.key, actor=d.owner, version=asset.version, round=asset.round)
        what = f"{d.key}: changes requested, back to drafting; draft v{asset.version} submitted for round {asset.round}"
    else:
        asset.status = "dropped"
        _set_deliverable_status(s, campaign_id, {d.key}, "dropped")
        what = f"{d.key}: rejected, asset dropped" + ("; the campaign stops" if gate.on_reject == "stop" else "")
    asset.updated_at = m.utcnow()
    s.add(asset)
    audit(s, campaign_id, "asset.moved", d.key, outcome=gate.status, version=asset.version, round=asset.round)
    return what


def settle_reviews(s: Session, campaign_id: str) -> tuple[list[str], bool]:
    """Move on every asset whose current review gate has closed; True when a rejection stops the campaign."""
    moved, stop = [], False
    for asset in list(s.exec(select(m.Asset).where(m.Asset.campaign_id == campaign_id, m.Asset.status == "in_review")
                             .order_by(m.Asset.id))):
        gate = s.exec(select(m.ApprovalGate).where(m.ApprovalGate.key == review_gate_key(campaign_id, asset))).first()
        if gate is not None and gate.status != "open":
            moved.append(settle_review(s, campaign_id, gate))
            stop = stop or (gate.status == "rejected" and gate.on_reject == "stop")
    return [line for line in moved if line], stop


def reviews_report(s: Session, campaign_id: str) -> StepReport:
    _, spec = load(s, campaign_id)
    assets = list(s.exec(select(m.Asset).where(m.Asset.campaign_id == campaign_id).order_by(m.Asset.id)))
    rows = [[a.deliverable, a.status, a.version, a.round] for a in assets]
    approved = sum(a.status == "approved" for a in assets)
    dropped = sum(a.status == "dropped" for a in assets)
    md = f"# Reviews: {spec.name}\n\n" + markdown_table(["asset", "status", "drafts", "rounds"], rows)
    return StepReport(f"{approved} asset(s) approved" + (f", {dropped} dropped" if dropped else ""), md)


# -- 7. measurement -----------------------------------------------------------------------------

def measurement_sources(s: Session, campaign_id: str) -> list[str]:
    """The metric sources the measurement step refreshes before it reports."""
    return [source.name for source in load(s, campaign_id)[1].measurement.sources]


def measurement(s: Session, campaign_id: str, refreshed: list[SourceRefresh] | tuple = (),
                as_of: dt.date | None = None) -> StepReport:
    """Report KPIs, pacing and each goal against its straight line, from the stored rows.

    The sources were read before, outside this step's transaction (`ingest.refresh`, one per name in
    `measurement_sources`); `refreshed` says how that went. A source that could not be read does not
    stop the step: the report says which source is stale and why. Off-track goals become `kpi.off_track`
    audit events.
    """
    from campaignflow import metrics

    _, spec = load(s, campaign_id)
    problems = [f"{r.source}: {r.problem}" for r in refreshed if r.problem]
    for r in refreshed:
        if r.problem:
            audit(s, campaign_id, "ingest.failed", r.source, error=r.error)
    summaries, written = [r.summary for r in refreshed if not r.problem], sum(r.rows_written for r in refreshed)
    report = metrics.campaign_report(s, campaign_id, as_of)
    metrics.flag_off_track(s, campaign_id, report)
    md = measurement_page(spec.name, report, summaries, problems)
    behind = [g["name"] for g in report["goals"] if g["status"] == "off track"]
    audit(s, campaign_id, "measurement.reported", f"{report['days_with_data']} day(s)", rows_written=written,
          off_track=behind, as_of=report["as_of"], stale_sources=problems)
    state = f"; OFF TRACK: {', '.join(behind)}" if behind else "; all goals on track" if report["goals"] else ""
    stale = f"; not refreshed: {', '.join(p.split(':')[0] for p in problems)}" if problems else ""
    t = report["to_date"]
    pace = report["budget"]["pace_pct"]
    return StepReport(f"{report['days_with_data']} day(s) of metrics to {report['data_through'] or '—'}, "
                      f"spend {_money(t['spend'], spec.currency)}" + (f" ({pace:.0f} % of budget-to-date)" if pace else "")
                      + f", {t['conversions']:g} conversions{state}{stale}", md)


def measurement_page(name: str, report: dict, refreshed: list[str], problems: list[str]) -> str:
    """The measurement report as markdown: goals, pacing, KPIs to date, recent days, sources, unmapped rows."""
    from campaignflow.kpis import KPI_NAMES

    cur = report["currency"]
    goal_rows = [[g["name"], g["kpi"], _fmt(g["actual"]), _fmt(g["expected"]), f"{g['target']:g} {g['unit']}",
                  g["deadline"], "—" if g["progress_pct"] is None else f"{g['progress_pct']:.0f} %",
                  f"**{g['status']}**" if g["status"] == "off track" else g["status"]] for g in report["goals"]]
    b = report["budget"]
    budget = (f"Spend **{_money(b['spend'], cur)}** against a budget-to-date of {_money(b['budget_to_date'], cur)} "
              f"(media budget {_money(b['budget'], cur)}): "
              + (f"{b['pace_pct']:.0f} %, {b['status']}." if b["pace_pct"] is not None else f"{b['status']}."))
    kpi_rows = [[k, _fmt(report["to_date"][k])] for k in KPI_NAMES]
    recent = [[d["date"], _fmt(d["impressions"]), _fmt(d["clicks"]), _fmt(d["spend"]), _fmt(d["conversions"]),
               _fmt(d["ctr"]), _fmt(d["cpa"]), _fmt(d["to_date"]["cpa"])] for d in report["daily"][-14:]]
    sources = [[x["name"], x["kind"], x["account"] or "—", x["data_through"] or "—",
                (x["last_run"] or {}).get("status", "never run")] for x in report["sources"]]
    lines = [f"# Measurement: {name}", "",
             f"As of **{report['as_of']}**; data from {report['data_from'] or '—'} to {report['data_through'] or '—'}.",
             "", "## Goals", "",
             markdown_table(["goal", "KPI", "actual", "expected by now", "target", "deadline", "progress", "status"], goal_rows),
             "", "## Budget pacing", "", budget, "", "## KPIs to date", "", markdown_table(["KPI", "value"], kpi_rows)]
    if recent:
        lines += ["", "## Last days", "",
                  markdown_table(["date", "impressions", "clicks", "spend", "conversions", "CTR %", "CPA", "CPA to date"], recent)]
    lines += ["", "## Sources", "", markdown_table(["source", "kind", "account", "data through", "last run"], sources)]
    if refreshed:
        lines += ["", "Refreshed now: " + "; ".join(refreshed) + "."]
    if problems:
        lines += ["", "**Not refreshed** (the report uses the rows stored before):"] + [f"- {p}" for p in problems]
    if report["unmapped"]:
        lines += ["", "## Unmapped platform campaigns", "",
                  "Rows no campaign claims; add their id or name to a source's `campaigns`, or a `campaign_match`.", "",
                  markdown_table(["source", "platform campaign", "name", "rows"],
                         [[u["source"], u["platform_campaign"], u["name"], u["rows"]] for u in report["unmapped"]])]
    for w in report["warnings"]:
        lines += ["", f"> **Warning:** {w}"]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:,.2f}" if abs(value) < 1000 and value != int(value) else f"{value:,.0f}"
