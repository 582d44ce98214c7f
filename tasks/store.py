"""Prefect tasks that run one core function inside one store transaction.

Every lifecycle side effect goes through `store_task`, so each one is a
visible, retried task run in Prefect, and the rule itself stays in the core.
"""

from __future__ import annotations

from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from campaignflow import db


def store_task(fn: Callable[..., Any], name: str | None = None, write: bool = False):
    """A task running `fn(session, *args)` in one transaction; retried on transient store errors."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with db.session(write=write) as s:
            return fn(s, *args, **kwargs)

    run.__doc__ = fn.__doc__  # not functools.wraps: Prefect must bind the call without `session`
    return task(run, name=name or fn.__name__.replace("_", "-"), cache_policy=NO_CACHE, retries=2,
                retry_delay_seconds=1)
