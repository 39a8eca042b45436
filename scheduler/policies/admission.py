"""Admission under a per-replica KV budget.

A task's reservation is what counts against its replica while its KV is held
there. A replica's budget is its KV capacity minus headroom. A task is admitted
on a replica only when its reservation fits the replica's free budget; otherwise
it waits in the bounded admission queue (rejected when full).

- ``UsageAdmission`` (v2, the default): the task holds what it uses: its
  history as the engine reported it (before its first call: its first prompt)
  plus the growth expected to its next call, learned per agent
  (:class:`~scheduler.estimates.GrowthStats`). Histories then grow past what was
  admitted; the core pauses tool-waiting tasks when they do (see ``Book._relieve``).
- ``KVBudgetAdmission`` (v1): its expected peak history for its whole life, or
  its actual history once that is larger (believe the engine).
"""

from __future__ import annotations

from typing import Protocol

from scheduler.estimates import GrowthStats
from scheduler.task import Task


class AdmissionPolicy(Protocol):
    def budget(self, capacity_tokens: int) -> int:
        """Tokens of a replica's KV capacity that reservations may use."""
        ...

    def reservation(self, task: Task) -> int:
        """Tokens the task holds against its replica while its KV is resident."""
        ...

    def observe(self, task: Task, history_before: int, history_after: int) -> None:
        """A call of the task finished: its history went from one size to the other."""
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

    def observe(self, task: Task, history_before: int, history_after: int) -> None:
        pass


class UsageAdmission(KVBudgetAdmission):
    def __init__(self, headroom: float = 0.05, growth: GrowthStats | None = None) -> None:
        super().__init__(headroom)
        self.growth = growth or GrowthStats()

    def reservation(self, task: Task) -> int:
        used = task.history or task.prompt
        if not used:  # the driver said nothing of its size: its peak, as v1
            return max(task.expected_peak, 1)
        need = used + self.growth.expected(task.agent)
        if task.expected_peak:  # never more than its worst case
            need = min(need, max(task.expected_peak, used))
        return max(need, 1)

    def observe(self, task: Task, history_before: int, history_after: int) -> None:
        if history_before:  # a whole step: its observation and its reply
            self.growth.observe(task.agent, history_after - history_before)
