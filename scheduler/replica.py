"""The core's record of one replica: its KV book and its compute slots."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from scheduler.events import ReplicaId, TaskId
from scheduler.run_queue import RunQueue
from scheduler.states import ReplicaState, TaskState
from scheduler.task import Task


def _waits_here(task: Task, replica_id: ReplicaId, tool_started: float) -> bool:
    return (
        task.state is TaskState.TOOL
        and task.kv_held
        and task.replica == replica_id
        and task.tool_started == tool_started
    )


class Replica:
    __slots__ = (
        "id",
        "state",
        "seq",
        "capacity",
        "budget",
        "reserved",
        "max_running",
        "running",
        "run_queue",
        "pinned",
        "agents",
        "waiting_tokens",
        "_waiting_heap",
        "version",
        "reserved_token_s",
        "reserved_at",
        "reserved_peak",
        "booked_at",
    )

    def __init__(self, replica_id: ReplicaId, seq: int, run_queue: RunQueue) -> None:
        self.id = replica_id
        self.state = ReplicaState.ABSENT
        self.seq = seq  # join order: deterministic tie-breaker
        self.capacity = 0  # KV tokens (engine's max_total_num_tokens)
        self.budget = 0  # capacity minus headroom
        self.reserved = 0  # sum of reservations of tasks whose KV is held here
        self.max_running = 1
        self.running = 0
        self.run_queue = run_queue
        self.pinned: dict[TaskId, Task] = {}  # tasks whose KV is held here
        self.agents: dict[str, int] = {}  # agent -> pinned tasks (shared-prefix hint)
        self.waiting_tokens = 0  # reserved tokens of tool-waiting tasks
        self._waiting_heap: list[tuple[float, int, Task, float]] = []
        self.version = 0  # bumps when `free` changes (fleet-index staleness)
        # the ledger's integral of `reserved` over time (for the stats)
        self.reserved_token_s = 0.0
        self.reserved_at: float | None = None  # time of its last change (None: not yet)
        self.reserved_peak = 0
        self.booked_at: float | None = None  # when it first joined

    def account(self, now: float) -> None:
        """Accrue ``reserved`` up to ``now`` (call before it changes)."""
        if self.reserved_at is not None and now > self.reserved_at:
            self.reserved_token_s += self.reserved * (now - self.reserved_at)
        self.reserved_at = now

    @property
    def free(self) -> int:
        return self.budget - self.reserved

    @property
    def load(self) -> int:
        return self.running + self.run_queue.live

    # tool-waiting tasks that hold KV here, latest expected return first
    def push_waiting(self, task: Task, seq: int) -> None:
        self.waiting_tokens += task.reserved
        heapq.heappush(self._waiting_heap, (-task.expected_return, seq, task, task.tool_started))

    def repush_waiting(self, task: Task, seq: int) -> None:
        """Put back a task :meth:`pop_latest_waiting` returned (its tokens still count)."""
        heapq.heappush(self._waiting_heap, (-task.expected_return, seq, task, task.tool_started))

    def waiting_tasks(self) -> list[Task]:
        """The tool-waiting tasks holding KV here, expected back last first (stale
        heap entries dropped). O(w log w)."""
        live = [e for e in self._waiting_heap if _waits_here(e[2], self.id, e[3])]
        self._waiting_heap = live
        heapq.heapify(live)
        return [e[2] for e in sorted(live)]

    def pop_latest_waiting(self) -> Task | None:
        """The tool-waiting task (KV held here) expected back last, or None."""
        heap = self._waiting_heap
        while heap:
            _, _, task, started = heapq.heappop(heap)
            if _waits_here(task, self.id, started):
                return task
        return None

    def peek_latest_waiting(self) -> Task | None:
        heap = self._waiting_heap
        while heap:
            _, _, task, started = heap[0]
            if _waits_here(task, self.id, started):
                return task
            heapq.heappop(heap)
        return None

    def clear_waiting(self) -> None:
        self._waiting_heap.clear()
        self.waiting_tokens = 0


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A read-only snapshot of a replica, for drivers, tests and telemetry."""

    replica_id: ReplicaId
    state: ReplicaState
    kv_capacity_tokens: int
    kv_budget_tokens: int
    kv_reserved_tokens: int
    waiting_kv_tokens: int
    running_calls: int
    ready_calls: int
    max_running_calls: int
    tasks: int


def replica_view(r: Replica) -> ReplicaView:
    return ReplicaView(
        r.id,
        r.state,
        r.capacity,
        r.budget,
        r.reserved,
        r.waiting_tokens,
        r.running,
        r.run_queue.live,
        r.max_running,
        len(r.pinned),
    )
