"""Tasks waiting for KV room.

Admitted tasks that lost their KV (returning from a tool after a release,
failover) come before new arrivals, FIFO within each; only new arrivals count
against the bound. Lazy deletion: a task that left the QUEUED state (cancelled,
failed) is skipped when it surfaces, and :meth:`forget` keeps the count exact.
"""

from __future__ import annotations

from collections import deque

from scheduler.states import TaskState
from scheduler.task import Task


def _is_new(task: Task) -> bool:
    return task.calls_done == 0 and task.migrations == 0


class AdmissionQueue:
    __slots__ = ("_returning", "_new", "limit", "queued_new", "queued_returning")

    def __init__(self, limit: int) -> None:
        self._returning: deque[Task] = deque()
        self._new: deque[Task] = deque()
        self.limit = limit
        self.queued_new = 0  # live QUEUED new arrivals
        self.queued_returning = 0

    def full(self) -> bool:
        return self.queued_new >= self.limit

    def push(self, task: Task) -> None:
        if _is_new(task):
            self._new.append(task)
            self.queued_new += 1
        else:
            self._returning.append(task)
            self.queued_returning += 1

    def head(self) -> Task | None:
        ret, new = self._returning, self._new
        while ret and ret[0].state is not TaskState.QUEUED:
            ret.popleft()
        if ret:
            return ret[0]
        while new and new[0].state is not TaskState.QUEUED:
            new.popleft()
        return new[0] if new else None

    def pop_head(self) -> None:
        """Remove the task :meth:`head` returned (it is being placed)."""
        if self._returning:
            self._returning.popleft()
            self.queued_returning -= 1
        else:
            self._new.popleft()
            self.queued_new -= 1

    def forget(self, task: Task) -> None:
        """A queued task leaves without being placed (call before its state changes)."""
        if _is_new(task):
            self.queued_new -= 1
        else:
            self.queued_returning -= 1

    def __len__(self) -> int:
        return self.queued_new + self.queued_returning
