"""Admission under a per-replica KV budget.

A task's reservation is what counts against its replica while its KV is held
there: its expected peak history, or its actual history once that is larger
(believe the engine). A replica's budget is its KV capacity minus headroom. A
task is admitted on a replica only when its reservation fits the replica's free
budget; otherwise it waits in the bounded admission queue (rejected when full).
"""

from __future__ import annotations

from typing import Protocol

from scheduler.task import Task


class AdmissionPolicy(Protocol):
    def budget(self, capacity_tokens: int) -> int:
        """Tokens of a replica's KV capacity that reservations may use."""
        ...

    def reservation(self, task: Task) -> int:
        """Tokens the task holds against its replica while its KV is resident."""
        ...


class KVBudgetAdmission:
    def __init__(self, headroom: float = 0.05) -> None:
        if not 0.0 <= headroom < 1.0:
            raise ValueError("headroom must be in [0, 1)")
        self.headroom = headroom

    def budget(self, capacity_tokens: int) -> int:
        return int(capacity_tokens * (1.0 - self.headroom))

    def reservation(self, task: Task) -> int:
        return max(task.expected_peak, task.history, 1)
