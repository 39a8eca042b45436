"""Sticky routing by task id, as SGLang's router does it with ``--policy manual
--assignment-mode min_load`` and the task id as the routing key.

A task's first call goes to the worker with the fewest in-flight requests (ties:
the fewest tasks pinned there, then the replica id; the router's own tie-break
is unspecified) and every later call of the task follows it there. No admission
control: everything is sent at once, the engine queues calls and evicts cached
histories LRU under pressure. A task whose replica is gone is assigned anew at
its next call, as the router does when a worker leaves.
"""

from __future__ import annotations

from scheduler.decisions import Decision, RunCall
from scheduler.events import (
    CallFailed,
    CallFinished,
    Event,
    NextCall,
    ReplicaDied,
    ReplicaDraining,
    ReplicaJoined,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    ToolFinished,
)


class StickyRouter:
    name = "sticky"

    def __init__(self) -> None:
        self._load: dict[str, int] = {}  # replica -> in-flight calls
        self._pinned: dict[str, int] = {}  # replica -> tasks assigned to it
        self.home: dict[str, str] = {}  # task -> replica

    def handle(self, event: Event) -> list[Decision]:
        if isinstance(event, ReplicaJoined):
            self._load[event.replica_id] = 0
            self._pinned[event.replica_id] = 0
        elif isinstance(event, ReplicaDied | ReplicaDraining):
            self._load.pop(event.replica_id, None)
            self._pinned.pop(event.replica_id, None)
        elif isinstance(event, CallFinished | CallFailed):
            if event.replica_id in self._load:
                self._load[event.replica_id] -= 1
        elif isinstance(event, TaskArrived | ToolFinished | NextCall):
            return self.route(event.task_id)
        elif isinstance(event, TaskFinished | TaskCancelled):
            rid = self.home.pop(event.task_id, None)
            if rid in self._pinned:
                self._pinned[rid] -= 1
        return []

    def route(self, task_id: str) -> list[Decision]:
        if not self._load:
            return []
        rid = self.home.get(task_id)
        if rid is None or rid not in self._load:
            load, pinned = self._load, self._pinned
            rid = min(load, key=lambda r: (load[r], pinned[r], r))
            self.home[task_id] = rid
            pinned[rid] += 1
        self._load[rid] += 1
        return [RunCall(task_id, rid, cold=False)]

    def reroute(self, task_id: str) -> list[Decision]:
        """A call lost with its replica: the task is assigned anew."""
        return self.route(task_id)
