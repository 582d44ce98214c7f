"""Timeline math: business days, dependency order, schedule and critical path.

Pure functions over plain data so the rules are easy to read and test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from graphlib import CycleError, TopologicalSorter

import numpy as np


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that starts and ends at the same node, or None.

    `graph[a]` lists what `a` depends on; in the path each node depends on the next.
    """
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as cycle:
        # graphlib lists each node before the nodes that depend on it: reversed, each depends on the next.
        return list(reversed(cycle.args[1]))
    return None


def topological_order(graph: dict[str, list[str]]) -> list[str]:
    """Nodes so that each comes after everything it depends on."""
    return list(TopologicalSorter(graph).static_order())


# One numpy calendar per holiday set: a reminder sweep asks about the same few sets for thousands of items.
@lru_cache(maxsize=256)
def business_calendar(holidays: frozenset[dt.date] = frozenset()) -> np.busdaycalendar:
    """Monday to Friday, minus `holidays` (concrete dates: list every year the schedule can reach)."""
    return np.busdaycalendar(holidays=sorted(holidays))


def _date(day: np.datetime64) -> dt.date:
    return day.astype(dt.date)


def is_business_day(day: dt.date, holidays: frozenset[dt.date] = frozenset()) -> bool:
    return bool(np.is_busday(day, busdaycal=business_calendar(holidays)))


def next_business_day(day: dt.date, holidays: frozenset[dt.date] = frozenset()) -> dt.date:
    """`day` itself if it is a business day, else the next one."""
    return _date(np.busday_offset(day, 0, roll="forward", busdaycal=business_calendar(holidays)))


def add_business_days(start: dt.date, days: int, holidays: frozenset[dt.date] = frozenset()) -> dt.date:
    """The last working day of a task of `days` business days that starts on `start` (a business day)."""
    return _date(np.busday_offset(start, max(days - 1, 0), roll="forward", busdaycal=business_calendar(holidays)))


def shift_business_days(day: dt.date, n: int, holidays: frozenset[dt.date]) -> dt.date:
    """The n-th business day after `day` (before it when n < 0; n = 0: `day` itself)."""
    if n == 0:
        return day
    # From a day off, step n counts from the business day behind us: roll back to go forward, forward to go back.
    roll = "backward" if n > 0 else "forward"
    return _date(np.busday_offset(day, n, roll=roll, busdaycal=business_calendar(holidays)))


def business_days_between(start: dt.date, end: dt.date, holidays: frozenset[dt.date] = frozenset()) -> int:
    """Business days in [start, end)."""
    return int(np.busday_count(start, end, busdaycal=business_calendar(holidays)))


@dataclass(frozen=True)
class Slot:
    key: str
    start: dt.date
    due: dt.date
    duration_days: int
    critical: bool


def schedule(
    durations: dict[str, int],
    depends_on: dict[str, list[str]],
    start: dt.date,
    holidays: frozenset[dt.date] = frozenset(),
) -> list[Slot]:
    """Earliest-start schedule: each deliverable starts the business day after its last dependency ends.

    The critical path is the chain of deliverables with no slack, the one
    that decides the campaign's launch date.
    """
    order = topological_order({k: depends_on.get(k, []) for k in durations})
    starts: dict[str, dt.date] = {}
    dues: dict[str, dt.date] = {}
    for key in order:
        earliest = next_business_day(start, holidays)
        for dep in depends_on.get(key, []):
            after_dep = next_business_day(dues[dep] + dt.timedelta(days=1), holidays)
            earliest = max(earliest, after_dep)
        starts[key] = earliest
        dues[key] = add_business_days(earliest, durations[key], holidays)

    # Latest finish without delaying the end, walking backwards over dependants.
    end = max(dues.values())
    dependants: dict[str, list[str]] = {k: [] for k in durations}
    for key, deps in depends_on.items():
        for dep in deps:
            dependants[dep].append(key)
    latest_start: dict[str, int] = {}
    total = business_days_between(start, end + dt.timedelta(days=1), holidays)
    for key in reversed(order):
        latest_finish = min((latest_start[d] for d in dependants[key]), default=total)
        latest_start[key] = latest_finish - durations[key]
    slots = []
    for key in durations:  # in the order the spec lists them
        earliest_offset = business_days_between(start, starts[key], holidays)
        slots.append(Slot(key, starts[key], dues[key], durations[key], latest_start[key] == earliest_offset))
    return slots
