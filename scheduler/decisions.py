"""Decisions: what the core tells the runtime to do. Immutable, in the order the
runtime should apply them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from scheduler.events import ReplicaId, TaskId


class ReleaseCause(enum.Enum):
    """Why the core stopped counting a task's KV on its replica."""

    TASK_DONE = "task done"
    TASK_FAILED = "task failed"
    CANCELLED = "cancelled"
    TOOL_WAIT = "long tool wait under KV pressure"
    WAITING_CAP = "waiting tasks' KV over cap"
    OVER_BUDGET = "replica over KV budget"
    DRAINING = "replica draining"
    MAKE_ROOM = "room for a waiting task (work-conserving admission)"
    STALE = "room for a waiting task from a tool wait long overdue (not a pause)"
    WARM_UP_CANCELLED = "warm-up cancelled: a waiting task needs the room"


class MoveCause(enum.Enum):
    """Why a task is re-pinned to another replica (its next call replays its history)."""

    REPLICA_DIED = "replica died"
    KV_RELEASED = "kv released"


@dataclass(frozen=True, slots=True)
class RunCall:
    """Start the task's next call on ``replica_id`` now. ``cold`` is true when
    the core does not expect the task's history to be cached there (first call,
    after a release or a re-placement): the engine will prefill it in full."""

    task_id: TaskId
    replica_id: ReplicaId
    cold: bool


@dataclass(frozen=True, slots=True)
class Queue:
    """The task's call waits: for admission (``where == "admission"``: no replica
    has KV room) or for a compute slot on its replica (``"replica"``). A later
    decision (``RunCall``) starts it; the runtime does nothing meanwhile."""

    task_id: TaskId
    where: Literal["admission", "replica"]
    replica_id: ReplicaId | None = None


@dataclass(frozen=True, slots=True)
class ReleaseKV:
    """The core no longer counts ``tokens`` of the task's history as resident on
    ``replica_id``; the engine may evict them and the next call re-prefills."""

    task_id: TaskId
    replica_id: ReplicaId
    tokens: int
    cause: ReleaseCause


@dataclass(frozen=True, slots=True)
class Replace:
    """The task is re-pinned from ``from_replica`` (``None``: it had no replica)
    to ``to_replica``; its next call replays its history there cold."""

    task_id: TaskId
    from_replica: ReplicaId | None
    to_replica: ReplicaId
    cause: MoveCause


@dataclass(frozen=True, slots=True)
class Reject:
    """The task is not admitted (queue full, too large for any replica, or shed: its
    predicted wait exceeds ``SchedulerConfig.shed_slo_s``). ``retry_after_s``: when a
    retry may be admitted in time (shedding only)."""

    task_id: TaskId
    reason: str
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    """An admitted task cannot go on (migration or retry limit reached)."""

    task_id: TaskId
    reason: str


@dataclass(frozen=True, slots=True)
class ReplicaDrained:
    """A draining replica holds no task any more: the runtime may stop it."""

    replica_id: ReplicaId


@dataclass(frozen=True, slots=True)
class WarmUp:
    """Re-prefill the task's history (``tokens``: its prompt so far) on ``replica_id``
    now, while its tool runs: a generate of that prompt with no output (``max_new_tokens``
    0 or 1), so its next call finds it cached. The core counts the task's KV there from
    now (its next call runs there); report the end with ``WarmedUp``. Optional: a driver
    that ignores it is still correct (the next call prefills the history itself), and a
    ``ReleaseKV`` of the task before the end cancels it (the generate may be aborted)."""

    task_id: TaskId
    replica_id: ReplicaId
    tokens: int


Decision = RunCall | Queue | ReleaseKV | Replace | Reject | Fail | ReplicaDrained | WarmUp
