"""Counters the core keeps from the times of its events (pure: no clock), for the
benchmarks' reports: how long each task waited for a grant, how long a replica sat
idle while a task waited, what the ledger reserved on each replica, and what the
core decided under pressure. Read them with ``SchedulerCore.stats()``.

* A task *waits for a grant* from the moment its call is ready (it arrived, its
  tool returned, its next call is due) until its ``RunCall``: in the admission
  queue (no replica has KV room: ``admission_s``) and then in its replica's run
  queue (no free compute slot: ``slot_s``).
* *Idle while waiting*: time during which at least one active replica had no call
  in flight while at least one task waited for a grant (either kind).
* A replica's *reserved* KV is the ledger's sum of its tasks' reservations;
  ``mean_reserved_tokens`` averages it over the replica's time in the core's book.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scheduler.events import ReplicaId, TaskId
from scheduler.states import TaskState

if TYPE_CHECKING:
    from scheduler.replica import Replica
    from scheduler.task import Task


@dataclass(frozen=True, slots=True)
class TaskWait:
    """One task's time waiting for grants (seconds), up to its end or the last event."""

    admission_s: float
    slot_s: float
    done: bool  # it ended (finished, failed, cancelled, rejected)

    @property
    def total_s(self) -> float:
        return self.admission_s + self.slot_s


@dataclass(frozen=True, slots=True)
class ReplicaKV:
    """The ledger's view of one replica's KV (tokens)."""

    budget_tokens: int
    reserved_tokens: int  # now
    mean_reserved_tokens: float  # averaged over its time in the book
    peak_reserved_tokens: int  # highest (a call's growth may pass the budget
    # for the moment before the core pauses tasks: the ledger is within it after events)


@dataclass(frozen=True, slots=True)
class CoreStats:
    """What ``SchedulerCore.stats()`` returns (see the module docstring)."""

    now: float
    observed_s: float  # from the first event to the last
    idle_while_waiting_s: float
    waiting_s: float  # time during which at least one task waited for a grant
    tasks: dict[TaskId, TaskWait]
    replicas: dict[ReplicaId, ReplicaKV]
    counters: dict[str, int] = field(default_factory=dict)
    """``pause:<cause>`` per release cause under pressure, ``work_conserving_admits``
    (a waiting task placed by releasing tool-waiting tasks' KV), ``shed`` (tasks
    refused at arrival for their predicted wait), ``rejected``."""
    prefill_tokens_per_s: float = 0.0  # the learned prefill speed
    drain_per_s: float | None = None  # the admission queue's learned drain rate

    @property
    def queued_s(self) -> float:
        """All tasks' time waiting for grants, summed."""
        return sum(w.total_s for w in self.tasks.values())


class WaitBook:
    """Per-task grant waits of tasks that ended (the last ``limit`` of them; the live
    ones are read off the core's tasks), and the fleet-wide idle-while-waiting time."""

    __slots__ = (
        "ended",
        "limit",
        "first",
        "last",
        "idle_while_waiting_s",
        "waiting_s",
        "_idle_and_waiting",
        "_waiting",
        "counters",
    )

    def __init__(self, limit: int) -> None:
        self.ended: OrderedDict[TaskId, TaskWait] = OrderedDict()
        self.limit = limit
        self.first: float | None = None
        self.last = 0.0
        self.idle_while_waiting_s = 0.0
        self.waiting_s = 0.0
        self._idle_and_waiting = False
        self._waiting = False
        self.counters: dict[str, int] = {}

    def advance(self, now: float) -> None:
        """Time moved to ``now``: the state set by :meth:`settle` held since the last."""
        if self.first is None:
            self.first = now
        else:
            dt = now - self.last
            if self._waiting:
                self.waiting_s += dt
            if self._idle_and_waiting:
                self.idle_while_waiting_s += dt
        self.last = now

    def settle(self, waiting: bool, some_replica_idle: bool) -> None:
        """The state after an event (holds until the next one)."""
        self._waiting = waiting
        self._idle_and_waiting = waiting and some_replica_idle

    def end(self, task_id: TaskId, admission_s: float, slot_s: float) -> None:
        self.ended[task_id] = TaskWait(admission_s, slot_s, True)
        self.ended.move_to_end(task_id)
        while len(self.ended) > self.limit:
            self.ended.popitem(last=False)

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def snapshot(
        self,
        now: float,
        live: Iterable[Task],
        replicas: Iterable[Replica],
        rates: tuple[float, float | None],
    ) -> CoreStats:
        """The stats at ``now``: the ended tasks' waits, the live ones' so far, each
        replica's reservations; ``rates``: the learned prefill speed and drain rate."""
        tasks = dict(self.ended)
        for t in live:
            adm, slot = t.admission_wait_s, t.slot_wait_s
            if t.state is TaskState.QUEUED:
                adm += now - t.queued_since
            elif t.state is TaskState.READY:
                slot += now - t.ready_since
            tasks[t.id] = TaskWait(adm, slot, False)
        kv = {}
        for r in replicas:
            r.account(now)
            span = now - r.booked_at if r.booked_at is not None else 0.0
            mean = r.reserved_token_s / span if span > 0 else float(r.reserved)
            kv[r.id] = ReplicaKV(r.budget, r.reserved, mean, r.reserved_peak)
        return CoreStats(
            now=now,
            observed_s=self.last - self.first if self.first is not None else 0.0,
            idle_while_waiting_s=self.idle_while_waiting_s,
            waiting_s=self.waiting_s,
            tasks=tasks,
            replicas=kv,
            counters=dict(self.counters),
            prefill_tokens_per_s=rates[0],
            drain_per_s=rates[1],
        )
