"""One lifecycle run per campaign: the store's claim on a campaign, and whether its holder still lives.

A lifecycle run claims its campaign before it does anything (an atomic conditional UPDATE, so two runs
started at the same moment on two machines cannot both win), and renews a lease while its process lives.
A deployed run that waits suspended holds the campaign with no process and no lease: only Prefect can say
whether that run still exists, so the CLI asks Prefect and hands its answer to `run_health` as plain text.

Whether a holder is alive:
- a process lease that was not renewed in time: dead (the process was killed, or lost its machine);
- on the same machine, a holder pid that no longer exists: dead at once (kill -9 needs no lease expiry);
- no lease (a deployed run waiting suspended): alive while Prefect has the run in a state that is not final.

Lease times come from each machine's clock, so machines sharing a store need synchronised clocks
(NTP); the lease is long (LEASE_SECONDS) next to any realistic skew.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import or_, update
from sqlmodel import Session, select

from campaignflow import db, models as m
from campaignflow.store import audit, get_campaign

LEASE_SECONDS = 60
RENEW_SECONDS = 15
# Prefect state types in which a run may still carry on (anything else is final).
PREFECT_LIVE_STATES = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"}


def this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _lease(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=LEASE_SECONDS)


def claim(s: Session, campaign_id: str, run_id: str, host: str, pid: int, now: dt.datetime | None = None) -> str | None:
    """Take the campaign for the run `run_id` in process `pid` on `host`.

    Returns None when the run holds it now, else the id of the run that keeps holding it. Free, already
    ours (a resumed deployed run starts again from the top) or held under an expired lease: taken.
    """
    now = now or m.utcnow()
    c = m.Campaign
    taken = s.exec(update(c).where(c.id == campaign_id, or_(c.run_holder.is_(None), c.run_holder == run_id,
                                                             c.run_lease_until < now))
                   .values(run_holder=run_id, run_host=host, run_pid=pid, run_lease_until=_lease(now))).rowcount
    if taken:
        return None
    s.expire_all()
    return get_campaign(s, campaign_id).run_holder


def renew(s: Session, campaign_id: str, run_id: str, now: dt.datetime | None = None) -> bool:
    """Extend the process lease; False when the run no longer holds the campaign (or waits suspended)."""
    c = m.Campaign
    return bool(s.exec(update(c).where(c.id == campaign_id, c.run_holder == run_id, c.run_lease_until.is_not(None))
                       .values(run_lease_until=_lease(now or m.utcnow()))).rowcount)


def suspend(s: Session, campaign_id: str, run_id: str) -> None:
    """The run keeps the campaign while it waits suspended, with no process and no lease."""
    c = m.Campaign
    s.exec(update(c).where(c.id == campaign_id, c.run_holder == run_id)
           .values(run_host="", run_pid=None, run_lease_until=None))


def release(s: Session, campaign_id: str, run_id: str, why: str = "") -> bool:
    """Let go of the campaign if `run_id` holds it; with `why`, the release is audited (a recovery)."""
    c = m.Campaign
    released = bool(s.exec(update(c).where(c.id == campaign_id, c.run_holder == run_id)
                           .values(run_holder=None, run_host="", run_pid=None, run_lease_until=None)).rowcount)
    if released and why:
        audit(s, campaign_id, "run.released", run_id, reason=why)
    return released


@contextmanager
def leased(campaign_id: str, run_id: str, keep_on: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """While the block runs, renew the run's lease from a thread (a killed process stops renewing); then
    release the campaign, except when the block ends with one of `keep_on` (the orchestrator's "suspended"
    signal: a deployed run that waits suspended keeps its claim, with no process)."""
    stop = threading.Event()

    def renew_while_alive() -> None:
        while not stop.wait(RENEW_SECONDS):
            try:
                with db.session(write=True) as s:
                    renew(s, campaign_id, run_id)
            except Exception:  # noqa: BLE001  the store is away for a moment: the lease outlives a few misses
                pass

    thread = threading.Thread(target=renew_while_alive, name=f"lease-{campaign_id}", daemon=True)
    thread.start()
    keep = False
    try:
        yield
    except keep_on:
        keep = True
        raise
    finally:
        stop.set()
        thread.join()
        if not keep:
            with db.session(write=True) as s:
                release(s, campaign_id, run_id)


@dataclass(frozen=True)
class Holder:
    """The store's side of a campaign's run: who holds it and how its process looked."""

    campaign_id: str
    status: str  # the campaign's status in the store
    step: str
    run_id: str | None
    host: str
    pid: int | None
    lease_until: dt.datetime | None

    @property
    def process(self) -> str:
        return f"pid {self.pid} on {self.host}" if self.pid else ""

    def process_alive(self, now: dt.datetime | None = None) -> bool | None:
        """True/False for a process lease; None when no process holds the run (only Prefect knows)."""
        if self.lease_until is None:
            return None
        if m.as_utc(self.lease_until) < (now or m.utcnow()):
            return False
        host, _ = this_process()
        return self.host != host or _pid_alive(self.pid)


def holder(campaign: m.Campaign) -> Holder:
    return Holder(campaign.id, campaign.status, campaign.current_step, campaign.run_holder, campaign.run_host,
                  campaign.run_pid, campaign.run_lease_until)


def holders(s: Session, campaign_id: str | None = None) -> list[Holder]:
    """Every campaign's holder (or one campaign's), in registration order."""
    if campaign_id:
        return [holder(get_campaign(s, campaign_id))]
    return [holder(c) for c in s.exec(select(m.Campaign).order_by(m.Campaign.created_at))]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@dataclass(frozen=True)
class RunHealth:
    """Whether the store and Prefect agree about a campaign's run, in words a person can act on."""

    holder: Holder
    state: str  # holding | waiting-suspended | unknown | finished | none | orphaned
    says: str  # what is the case, one clause
    todo: str = ""  # the one command that recovers it, when something must be done

    @property
    def text(self) -> str:
        return f"{self.says}; {self.todo}" if self.todo else self.says

    def as_dict(self) -> dict:
        return {"run": self.holder.run_id, "process": self.holder.process, "state": self.state,
                "says": self.text, "recover": bool(self.todo)}


def run_health(h: Holder, prefect_state: tuple[str, str] | None, prefect_reachable: bool = True,
               now: dt.datetime | None = None) -> RunHealth:
    """The rule for whether a campaign's run is alive, given Prefect's (type, name) for the holder's run.

    `prefect_state` is None when Prefect has no such run (or was not asked: `prefect_reachable` False).
    """
    recover = f"`campaignflow recover {h.campaign_id}` continues it"
    if h.status in ("completed", "stopped"):
        return RunHealth(h, "finished", f"the campaign is {h.status}")
    if h.run_id is None:
        if h.status == "registered":
            return RunHealth(h, "none", "its lifecycle has not started",
                             f"`campaignflow recover {h.campaign_id}` starts it")
        return RunHealth(h, "none", f"the store says {h.status} at step {h.step}, but no run holds the campaign",
                         recover)
    in_prefect = f"Prefect shows it {prefect_state[1]}" if prefect_state else "Prefect has no such run"
    alive = h.process_alive(now)
    if alive is False:
        return RunHealth(h, "orphaned", f"its run {h.run_id} lost its process ({h.process}) and "
                                        f"{in_prefect}", recover)
    if prefect_reachable and (prefect_state is None or prefect_state[0] not in PREFECT_LIVE_STATES):
        return RunHealth(h, "orphaned", f"the store says run {h.run_id} holds it, but {in_prefect}", recover)
    if alive:
        return RunHealth(h, "holding", f"run {h.run_id} carries it in {h.process}")
    if not prefect_reachable:
        return RunHealth(h, "unknown", f"deployed run {h.run_id} holds it; the Prefect API is not reachable to "
                                       f"say whether that run still exists")
    return RunHealth(h, "waiting-suspended", f"deployed run {h.run_id} holds it and {in_prefect}; it goes on "
                                             f"when a worker picks it up")
