"""Placement of a task that holds no KV (new, returning after a release, failover).

Sticky by construction: the core only asks for a placement when the task has no
replica holding its KV; every call of a placed task runs where it is pinned.
``SpreadPlacement`` puts the task where it fits best: the most free KV budget
(counted in tasks of this size that still fit), then the lowest load (running +
ready calls), then a replica already holding tasks of the same agent (shared
system-prompt prefix), then join order. Only the ``candidates`` replicas with
the most free budget are compared, so a placement is O(candidates x log R).
"""

from __future__ import annotations

from typing import Protocol

from scheduler.ledger import FleetIndex
from scheduler.replica import Replica
from scheduler.task import Task


class PlacementPolicy(Protocol):
    def choose(self, task: Task, need: int, fleet: FleetIndex) -> Replica | None:
        """An active replica with at least ``need`` free tokens, or None."""
        ...


class SpreadPlacement:
    def __init__(self, candidates: int = 4) -> None:
        if candidates < 1:
            raise ValueError("candidates must be >= 1")
        self.candidates = candidates

    def choose(self, task: Task, need: int, fleet: FleetIndex) -> Replica | None:
        best: Replica | None = None
        best_key: tuple[int, int, int, int] | None = None
        for r in fleet.most_free(self.candidates):
            free = r.free
            if free < need:
                break  # sorted by free: nothing after fits either
            key = (-(free // need), r.load, 0 if r.agents.get(task.agent) else 1, r.seq)
            if best_key is None or key < best_key:
                best, best_key = r, key
        return best
