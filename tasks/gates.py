"""Prefect tasks for a flow waiting at approval gates: each runs one `campaignflow.gate_service` function
(one store transaction), or one claim change, as a visible task run."""

from __future__ import annotations

from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from campaignflow import claims, gate_service
from tasks.store import store_task


def _task(fn: Callable[..., Any], retries: int = 2):
    return task(fn, name=fn.__name__.replace("_", "-"), cache_policy=NO_CACHE, retries=retries,
                retry_delay_seconds=1)


read_gates = _task(gate_service.read)
attach_run = _task(gate_service.attach_run)
time_out_due_gates = _task(gate_service.time_out_due)
# No retries: a refused decision (a UserError) is an answer, not a transient failure.
record_decision = _task(gate_service.record_decision, retries=0)
suspend_claim = store_task(claims.suspend, name="suspend-claim", write=True)
reclaim_campaign = store_task(claims.claim, name="reclaim-campaign", write=True)
