"""The KV ledger: the one place that changes what tasks hold against replicas,
and the index of active replicas by free budget that it keeps in step.

A task whose KV is resident on a replica *holds* a reservation there (tokens);
a replica's ``reserved`` is the sum of its tasks' reservations and never exceeds
its budget after an event (the book pauses tasks when growth would push it over).
Every change goes through :meth:`Ledger.hold`, :meth:`Ledger.resize`,
:meth:`Ledger.free` and :meth:`Ledger.lose`, which keep the replica's totals, its pinned tasks, its
per-agent counts and the fleet index in step.

:class:`FleetIndex`: active replicas ordered by free KV budget (most free first).
A max-heap with lazy invalidation: every change of a replica's free budget pushes
a fresh entry (its ``version``); stale entries are dropped when they surface. The
heap is rebuilt when stale entries outnumber live ones, so memory stays
O(replicas) and every operation is O(log replicas) amortized.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from scheduler.replica import Replica
from scheduler.states import ReplicaState, TaskState
from scheduler.task import Task


class FleetIndex:
    """Active replicas by free budget (most free first) and by resident tasks (fewest
    first): two heaps with lazy invalidation (see the module docstring)."""

    __slots__ = ("_heap", "_by_tasks", "_members")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, Replica]] = []
        self._by_tasks: list[tuple[int, int, int, Replica]] = []
        self._members: dict[str, Replica] = {}

    def __len__(self) -> int:
        return len(self._members)

    def update(self, replica: Replica) -> None:
        """Record the replica's current free budget and tasks (call after every change)."""
        replica.version += 1
        if replica.state is not ReplicaState.ACTIVE:
            self._members.pop(replica.id, None)
            return
        self._members[replica.id] = replica
        v = replica.version
        heapq.heappush(self._heap, (-replica.free, replica.seq, v, replica))
        heapq.heappush(self._by_tasks, (len(replica.pinned), replica.seq, v, replica))
        if len(self._heap) > 4 * len(self._members) + 64:
            self._rebuild()

    def remove(self, replica: Replica) -> None:
        replica.version += 1
        self._members.pop(replica.id, None)

    def _rebuild(self) -> None:
        members = self._members.values()
        self._heap = [(-r.free, r.seq, r.version, r) for r in members]
        self._by_tasks = [(len(r.pinned), r.seq, r.version, r) for r in members]
        heapq.heapify(self._heap)
        heapq.heapify(self._by_tasks)

    def _valid(self, entry: tuple[int, int, int, Replica]) -> bool:
        r = entry[3]
        return entry[2] == r.version and r.state is ReplicaState.ACTIVE

    def _top(self, heap: list[tuple[int, int, int, Replica]], k: int) -> list[Replica]:
        out: list[Replica] = []
        keep: list[tuple[int, int, int, Replica]] = []
        while heap and len(out) < k:
            entry = heapq.heappop(heap)
            if self._valid(entry):
                out.append(entry[3])
                keep.append(entry)
        for entry in keep:
            heapq.heappush(heap, entry)
        return out

    def most_free(self, k: int) -> list[Replica]:
        """Up to ``k`` active replicas with the most free budget, most free first."""
        return self._top(self._heap, k)

    def fewest_tasks(self, k: int) -> list[Replica]:
        """Up to ``k`` active replicas with the fewest resident tasks, fewest first."""
        return self._top(self._by_tasks, k)

    def __iter__(self) -> Iterator[Replica]:
        return iter(self._members.values())


class Ledger:
    __slots__ = ("_fleet", "now")

    def __init__(self, fleet: FleetIndex) -> None:
        self._fleet = fleet
        self.now = 0.0  # the current event's time (set by the core): the stats' clock

    def _account(self, r: Replica) -> None:
        r.account(self.now)

    def hold(self, task: Task, r: Replica, tokens: int) -> None:
        """Pin the task on ``r``, holding ``tokens`` there."""
        task.replica = r.id
        task.kv_held = True
        self._account(r)
        task.reserved = tokens
        r.reserved += tokens
        r.reserved_peak = max(r.reserved_peak, r.reserved)
        r.pinned[task.id] = task
        agents = r.agents
        agents[task.agent] = agents.get(task.agent, 0) + 1
        self._fleet.update(r)

    def resize(self, task: Task, r: Replica, tokens: int) -> bool:
        """Hold ``tokens`` instead (never while the task waits on a tool: the waiting
        total counts its reservation). Returns whether it changed."""
        assert task.kv_held and task.replica == r.id and task.state is not TaskState.TOOL
        if tokens == task.reserved:
            return False
        self._account(r)
        r.reserved += tokens - task.reserved
        r.reserved_peak = max(r.reserved_peak, r.reserved)
        task.reserved = tokens
        self._fleet.update(r)
        return True

    def lose(self, r: Replica) -> list[Task]:
        """The replica died: everything held there is gone at once (it has left the
        fleet index). Returns the tasks that held KV there."""
        lost = list(r.pinned.values())
        r.pinned = {}
        r.agents = {}
        self._account(r)
        r.reserved = 0
        r.clear_waiting()
        for task in lost:
            task.kv_held = False
            task.reserved = 0
            task.replica = None
        return lost

    def free(self, task: Task, r: Replica) -> None:
        """The task holds nothing on ``r`` any more."""
        self._account(r)
        r.reserved -= task.reserved
        if task.state is TaskState.TOOL:
            r.waiting_tokens -= task.reserved
        del r.pinned[task.id]
        n = r.agents[task.agent] - 1
        if n:
            r.agents[task.agent] = n
        else:
            del r.agents[task.agent]
        task.kv_held = False
        task.reserved = 0
        task.replica = None
        self._fleet.update(r)
