"""Timeline math: business days, dependency order, schedule and critical path.

Pure functions over plain data so the rules are easy to read and test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that starts and ends at the same node, or None.

    `graph[a]` lists what `a` depends on.
    """
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {node: WHITE for node in graph}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for dep in graph.get(node, []):
            if colour.get(dep, BLACK) == GREY:
                return stack[stack.index(dep):] + [dep]
            if colour.get(dep) == WHITE:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in graph:
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def topological_order(graph: dict[str, list[str]]) -> list[str]:
    """Nodes so that each comes after everything it depends on (stable for ties)."""
    done: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> None:
        if node in seen:
            return
        seen.add(node)
        for dep in graph.get(node, []):
            visit(dep)
        done.append(node)

    for node in graph:
        visit(node)
    return done


def is_business_day(day: dt.date, holidays: frozenset[dt.date] = frozenset()) -> bool:
    return day.weekday() < 5 and day not in holidays


def next_business_day(day: dt.date, holidays: frozenset[dt.date] = frozenset()) -> dt.date:
    """`day` itself if it is a business day, else the next one."""
    while not is_business_day(day, holidays):
        day += dt.timedelta(days=1)
    return day


def add_business_days(start: dt.date, days: int, holidays: frozenset[dt.date] = frozenset()) -> dt.date:
    """The last working day of a task of `days` business days that starts on `start` (a business day)."""
    day = next_business_day(start, holidays)
    remaining = days - 1
    while remaining > 0:
        day += dt.timedelta(days=1)
        if is_business_day(day, holidays):
            remaining -= 1
    return day


# Cached: a reminder sweep asks the same few (day, n, holidays) questions for thousands of items.
@lru_cache(maxsize=4096)
def shift_business_days(day: dt.date, n: int, holidays: frozenset[dt.date]) -> dt.date:
    """The n-th business day after `day` (before it when n < 0; n = 0: `day` itself)."""
    step = dt.timedelta(days=1 if n > 0 else -1)
    remaining = abs(n)
    while remaining:
        day += step
        if is_business_day(day, holidays):
            remaining -= 1
    return day


def business_days_between(start: dt.date, end: dt.date, holidays: frozenset[dt.date] = frozenset()) -> int:
    """Business days in [start, end)."""
    count, day = 0, start
    while day < end:
        count += is_business_day(day, holidays)
        day += dt.timedelta(days=1)
    return count


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
    for key in order:
        earliest_offset = business_days_between(start, starts[key], holidays)
        slots.append(Slot(key, starts[key], dues[key], durations[key], latest_start[key] == earliest_offset))
    return slots
