"""Order of ready calls on a replica.

A task returning from a tool (it has made a call) runs before a newly admitted
one; within each class, either least attained service (LAS: the task that has
used the least engine time so far) or earliest deadline (EDF: arrival + SLO
unless the task brought its own). Keys are tuples; smaller runs first.
"""

from __future__ import annotations

from typing import Protocol

from scheduler.task import Task


class OrderingPolicy(Protocol):
    name: str

    def key(self, task: Task) -> tuple[float, ...]: ...


class LeastAttainedService:
    name = "las"

    def key(self, task: Task) -> tuple[float, ...]:
        return (0 if task.calls_done else 1, task.attained_s)


class EarliestDeadlineFirst:
    name = "edf"

    def key(self, task: Task) -> tuple[float, ...]:
        return (0 if task.calls_done else 1, task.deadline)


ORDERINGS: dict[str, type[LeastAttainedService] | type[EarliestDeadlineFirst]] = {
    "las": LeastAttainedService,
    "edf": EarliestDeadlineFirst,
}


def ordering_by_name(name: str) -> OrderingPolicy:
    try:
        return ORDERINGS[name]()
    except KeyError:
        raise ValueError(f"unknown ordering {name!r} (choose from {sorted(ORDERINGS)})") from None
