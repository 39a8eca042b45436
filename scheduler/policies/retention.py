"""KV retention across tool waits.

Holding a task's history through a tool wait costs KV room for the wait;
releasing it costs a re-prefill of the history on the next call. The task keeps
its KV unless the fleet is under pressure (tasks wait for admission) *and* its
expected wait (a moving average per tool) exceeds ``ratio`` x the re-prefill
time. Under pressure, too, tool-waiting tasks may hold at most ``cap`` of a
replica's budget; beyond it the one expected back last is released.
"""

from __future__ import annotations

from typing import Protocol

from scheduler.replica import Replica
from scheduler.task import Task


class RetentionPolicy(Protocol):
    def keep(self, task: Task, expected_wait_s: float, under_pressure: bool) -> bool:
        """Whether the task keeps its KV while its tool runs."""
        ...

    def waiting_cap(self, replica: Replica) -> int:
        """Most tokens tool-waiting tasks may hold on the replica."""
        ...


class CostAwareRetention:
    def __init__(self, prefill_tokens_per_s: float, ratio: float = 8.0, cap: float = 0.9) -> None:
        if prefill_tokens_per_s <= 0 or ratio < 0 or not 0 < cap <= 1:
            raise ValueError("need prefill_tokens_per_s > 0, ratio >= 0, 0 < cap <= 1")
        self.prefill_tokens_per_s = prefill_tokens_per_s
        self.ratio = ratio
        self.cap = cap

    def keep(self, task: Task, expected_wait_s: float, under_pressure: bool) -> bool:
        if not under_pressure:
            return True
        reprefill_s = task.history / self.prefill_tokens_per_s
        return expected_wait_s <= self.ratio * reprefill_s

    def waiting_cap(self, replica: Replica) -> int:
        return int(replica.budget * self.cap)
