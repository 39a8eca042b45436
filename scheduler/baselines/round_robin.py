"""Stateless round-robin: each call goes to the next replica in turn, without
regard to where the task's KV is."""

from __future__ import annotations

from scheduler.decisions import Decision, RunCall
from scheduler.events import (
    Event,
    NextCall,
    ReplicaDied,
    ReplicaDraining,
    ReplicaJoined,
    TaskArrived,
    ToolFinished,
)


class RoundRobinRouter:
    name = "round_robin"

    def __init__(self) -> None:
        self._replicas: list[str] = []
        self._next = 0

    def handle(self, event: Event) -> list[Decision]:
        if isinstance(event, ReplicaJoined):
            self._replicas.append(event.replica_id)
        elif isinstance(event, ReplicaDied | ReplicaDraining):
            if event.replica_id in self._replicas:
                self._replicas.remove(event.replica_id)
        elif isinstance(event, TaskArrived | ToolFinished | NextCall) and self._replicas:
            rid = self._replicas[self._next % len(self._replicas)]
            self._next += 1
            return [RunCall(event.task_id, rid, cold=True)]
        return []

    def reroute(self, task_id: str) -> list[Decision]:
        """A call lost with its replica goes to the next one."""
        return self.handle(NextCall(0.0, task_id)) if self._replicas else []
