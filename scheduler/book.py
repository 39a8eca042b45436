"""The core's book: its tasks and replicas, and the moves every event handler shares.

Who holds KV where (``_reserve`` / ``_release``), which call is ready or running
on which replica (``_make_ready`` / ``_dispatch``), placing, queueing and
admitting tasks, ending them cleanly. :class:`~scheduler.core.SchedulerCore`
adds the public API and one handler per event on top of it. Like the core, it
reads no clock and does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from scheduler.admission_queue import AdmissionQueue
from scheduler.config import SchedulerConfig
from scheduler.decisions import (
    Decision,
    Fail,
    MoveCause,
    Queue,
    ReleaseCause,
    ReleaseKV,
    Replace,
    ReplicaDrained,
    RunCall,
)
from scheduler.errors import InvalidEvent
from scheduler.estimates import DrainRate, GrowthStats, PrefillSpeed, ToolStats
from scheduler.events import Event, ReplicaId, TaskId
from scheduler.ledger import FleetIndex, Ledger
from scheduler.policies.admission import AdmissionPolicy, KVBudgetAdmission, UsageAdmission
from scheduler.policies.failover import FailoverPolicy, MigrationLimitedFailover
from scheduler.policies.ordering import EarliestDeadlineFirst, OrderingPolicy
from scheduler.policies.placement import PlacementPolicy, SpreadPlacement
from scheduler.policies.retention import CostAwareRetention, RetentionPolicy
from scheduler.replica import Replica
from scheduler.states import (
    TASK_EVENTS_ALLOWED,
    ReplicaState,
    TaskState,
    TaskTrigger,
    next_task_state,
)
from scheduler.stats import WaitBook
from scheduler.task import Task

_PAUSES = (
    ReleaseCause.TOOL_WAIT,
    ReleaseCause.WAITING_CAP,
    ReleaseCause.OVER_BUDGET,
    ReleaseCause.MAKE_ROOM,
)
_READY = TaskState.READY
_ACTIVE = ReplicaState.ACTIVE
_DEAD = ReplicaState.DEAD
_DRAINING = ReplicaState.DRAINING


class Book:
    """The core's state and its shared moves (see the module docstring)."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        *,
        admission: AdmissionPolicy | None = None,
        placement: PlacementPolicy | None = None,
        ordering: OrderingPolicy | None = None,
        retention: RetentionPolicy | None = None,
        failover: FailoverPolicy | None = None,
    ) -> None:
        c = config or SchedulerConfig()
        self.config = c
        self.admission = admission or (
            UsageAdmission(
                c.kv_headroom, GrowthStats(c.growth_quantile, prior=c.growth_prior_tokens)
            )
            if c.reservation == "usage"
            else KVBudgetAdmission(c.kv_headroom)
        )
        self.placement = placement or SpreadPlacement()
        self.ordering = ordering or EarliestDeadlineFirst()
        self.retention = retention or CostAwareRetention(
            c.prefill_tokens_per_s, c.retention_ratio, c.waiting_kv_cap
        )
        self.failover = failover or MigrationLimitedFailover(c.max_migrations)
        self._now = float("-inf")
        self._seq = 0
        self._tasks: dict[TaskId, Task] = {}
        self._replicas: dict[ReplicaId, Replica] = {}
        self._fleet = FleetIndex()
        self._ledger = Ledger(self._fleet)
        self._queue = AdmissionQueue(c.admission_queue_limit)
        self._tools = ToolStats(c.tool_ewma_alpha, c.default_tool_s)
        self._budgets: dict[int, int] = {}  # budget -> active replicas with it
        self._freed = False
        self._replacing: set[ReplicaId] = set()  # dead replicas a new one is starting for
        self._prefill = PrefillSpeed(c.prefill_tokens_per_s)
        self._drain = DrainRate(c.drain_window_s)  # new arrivals leaving the queue
        self._drain_all = DrainRate(c.drain_window_s)  # any task leaving it
        self._waits = WaitBook(c.stats_ended_tasks)
        self._ready_calls = 0  # READY tasks over all replicas (calls waiting for a slot)
        self._due: list[tuple[float, int, Task, float]] = []  # warm-ups (policies/warmup)
        self._warm_on: dict[ReplicaId, dict[TaskId, Task]] = {}

    # -------------------------------------------------------------- helpers

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _get_task(self, event: Event, task_id: TaskId) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise InvalidEvent(f"unknown task {task_id!r}", event=event)
        allowed = TASK_EVENTS_ALLOWED[type(event)]
        if task.state not in allowed:
            raise InvalidEvent(
                f"{type(event).__name__} is invalid for task {task_id!r} in state "
                f"{task.state.value}",
                event=event,
                state=task.state,
            )
        return task

    def _get_replica(self, event: Event, replica_id: ReplicaId) -> Replica:
        r = self._replicas.get(replica_id)
        if r is None:
            raise InvalidEvent(f"unknown replica {replica_id!r}", event=event)
        return r

    def _home(self, task: Task) -> Replica:
        """The replica a task holding KV is pinned on."""
        assert task.replica is not None, task.id
        return self._replicas[task.replica]

    def _hopeless(self) -> bool:
        """Replicas existed, all are dead, and none is being started in their place:
        no call can ever be placed again."""
        return (
            bool(self._replicas)
            and not self._replacing
            and all(r.state is _DEAD for r in self._replicas.values())
        )

    def _max_budget(self) -> int:
        return max(self._budgets) if self._budgets else 0

    def _budget_count(self, budget: int, delta: int) -> None:
        n = self._budgets.get(budget, 0) + delta
        if n:
            self._budgets[budget] = n
        else:
            self._budgets.pop(budget, None)

    # reserve / release --------------------------------------------------

    def _reserve(self, task: Task, r: Replica, need: int) -> None:
        self._ledger.hold(task, r, need)
        task.cold = True

    def _release(self, task: Task, cause: ReleaseCause, out: list[Decision]) -> None:
        """Stop counting the task's KV on its replica (the engine may evict it)."""
        r = self._home(task)
        self._ledger.free(task, r)
        if cause in _PAUSES:
            task.pauses += 1
            self._waits.count(f"pause:{cause.name.lower()}")
        out.append(ReleaseKV(task.id, r.id, task.history, cause))
        task.lost_kv = MoveCause.KV_RELEASED
        task.cold = True
        self._freed = True
        if r.state is ReplicaState.DRAINING and not r.pinned:
            out.append(ReplicaDrained(r.id))

    def _pausable(self, task: Task) -> bool:
        """May the task's KV be released under pressure once more (anti-thrash)?"""
        cap = self.config.max_pauses
        return cap is None or task.pauses < cap

    def _relieve(self, r: Replica, out: list[Decision]) -> None:
        """Growth pushed ``r`` over its budget: pause tool-waiting tasks until its
        reservations are under the low water (hysteresis: the next step's growth does
        not pause again at once)."""
        if r.reserved > r.budget:
            target = int(r.budget * self.config.pause_low_water)
            if self.config.pause_order == "cheapest":
                self._pause_cheapest(r, target, out)
            else:
                self._pause_while(r, lambda: r.reserved > target, ReleaseCause.OVER_BUDGET, out)

    def _pause_cheapest(self, r: Replica, target: int, out: list[Decision]) -> None:
        """Pause tool-waiting tasks on ``r`` (within their pause limit), the smallest
        history first, until its reservations are under ``target``: the overflow is
        one call's growth, and a re-prefill's price grows with the history while the KV
        it frees for the rest of the wait does too. Tasks expected back before their
        re-prefill could be done go last. O(tasks on the replica)."""
        now, prefill = self._now, self._prefill
        far: list[Task] = []
        near: list[Task] = []
        for t in r.pinned.values():
            if t.state is TaskState.TOOL and self._pausable(t):
                back_in = t.expected_return - now
                (far if back_in >= prefill.seconds(t.history) else near).append(t)
        far.sort(key=lambda t: (t.reserved, t.id))
        near.sort(key=lambda t: (t.reserved, t.id))
        for victim in far + near:
            if r.reserved <= target:
                return
            self._release(victim, ReleaseCause.OVER_BUDGET, out)

    def _pause_while(
        self, r: Replica, over: Callable[[], bool], cause: ReleaseCause, out: list[Decision]
    ) -> None:
        """Release tool-waiting tasks' KV on ``r``, the one expected back last first,
        while ``over()``. A task in a call is never paused; one at its pause limit is
        passed over (it stays a candidate for later)."""
        passed: list[Task] = []
        while over():
            victim = r.pop_latest_waiting()
            if victim is None:
                break
            if self._pausable(victim):
                self._release(victim, cause, out)
            else:
                passed.append(victim)
        for task in passed:
            r.repush_waiting(task, self._next_seq())

    # ready / dispatch ---------------------------------------------------

    def _on_draining(self, task: Task) -> bool:
        """The task holds KV on a draining replica (it should move at its next wait)."""
        return task.kv_held and self._home(task).state is _DRAINING

    def _make_ready(self, task: Task, r: Replica) -> None:
        if task.state is _READY:  # re-placed after its replica died: still ready
            task.slot_wait_s += self._now - task.ready_since
        else:
            self._ready_calls += 1
            if task.state is TaskState.QUEUED:
                task.admission_wait_s += self._now - task.queued_since
        task.state = next_task_state(task.state, TaskTrigger.PLACE)
        task.ready_seq += 1
        task.ready_since = self._now
        r.run_queue.push(self.ordering.key(task), self._next_seq(), task, self._now)
        r.run_queue.live += 1

    def _dispatch(self, r: Replica, out: list[Decision]) -> None:
        """Start ready calls while the replica has free compute slots."""
        rq = r.run_queue
        starvation = self.config.starvation_s
        while r.running < r.max_running and rq.live:
            task = rq.pop(self._now, starvation)
            if task is None:  # pragma: no cover - live count and heap disagree
                raise AssertionError(f"replica {r.id}: run queue out of sync")
            rq.live -= 1
            self._ready_calls -= 1
            task.slot_wait_s += self._now - task.ready_since
            task.state = next_task_state(task.state, TaskTrigger.START_CALL)
            r.running += 1
            out.append(RunCall(task.id, r.id, task.cold))

    def _place(self, task: Task, r: Replica, need: int, out: list[Decision]) -> None:
        """Pin a task that holds no KV on ``r`` and make its call ready there."""
        last = task.last_replica
        if last is not None and last != r.id:
            out.append(Replace(task.id, last, r.id, task.lost_kv))
        task.last_replica = r.id
        self._reserve(task, r, need)
        self._make_ready(task, r)

    def _choose(self, task: Task, need: int) -> Replica | None:
        last = self._replicas.get(task.last_replica) if task.last_replica else None
        if last is not None and last.state is _ACTIVE and last.free >= need:
            return last  # its system prompt (and maybe more) is still there
        return self.placement.choose(task, need, self._fleet)

    def _place_or_queue(self, task: Task, out: list[Decision]) -> None:
        """Place a task without KV (returning, failover) or queue it for admission."""
        if self._hopeless():
            self._terminate(task, TaskTrigger.FAIL, self._no_replica_reason(task), out)
            return
        need = self.admission.reservation(task)
        if self._budgets and need > self._max_budget():
            self._terminate(
                task,
                TaskTrigger.FAIL,
                f"history of {need} tokens exceeds every replica's KV budget",
                out,
            )
            return
        r = None if self._queue.queued_returning else self._choose(task, need)
        if r is not None:
            self._place(task, r, need, out)
            self._dispatch(r, out)
        else:
            self._enqueue(task)
            out.append(Queue(task.id, "admission"))

    def _enqueue(self, task: Task) -> None:
        if task.state is _READY:  # its replica died under its ready call
            self._ready_calls -= 1
            task.slot_wait_s += self._now - task.ready_since
        task.state = next_task_state(task.state, TaskTrigger.QUEUE)
        task.queued_since = self._now
        self._queue.push(task)

    def _admit(self, out: list[Decision]) -> None:
        """Place queued tasks, head first, while the head fits somewhere."""
        q = self._queue
        while True:
            task = q.head()
            if task is None:
                return
            need = self.admission.reservation(task)
            r = self._choose(task, need)
            if r is None:
                return
            q.pop_head()
            self._drained(task)
            self._place(task, r, need, out)
            self._dispatch(r, out)

    def _drained(self, task: Task) -> None:
        """A task leaves the admission queue for a replica: a new arrival counts toward
        the queue's drain rate (returning tasks go first; their waits are short)."""
        self._drain_all.drained()
        if task.calls_done == 0 and task.migrations == 0:
            self._drain.drained()

    def _terminate(
        self, task: Task, trigger: TaskTrigger, reason: str, out: list[Decision]
    ) -> None:
        """Leave the task's state cleanly (queue, run queue, slot, KV) and forget it."""
        state = task.state
        r = self._replicas.get(task.replica) if task.replica is not None else None
        if state is TaskState.QUEUED:
            self._queue.forget(task)
            task.admission_wait_s += self._now - task.queued_since
        elif state is _READY:
            self._ready_calls -= 1
            task.slot_wait_s += self._now - task.ready_since
            if r is not None:
                r.run_queue.live -= 1
        elif state is TaskState.RUNNING and r is not None:
            r.running -= 1
        if task.kv_held:
            cause = (
                ReleaseCause.CANCELLED
                if trigger is TaskTrigger.CANCEL
                else (ReleaseCause.TASK_FAILED)
            )
            self._release(task, cause, out)
        task.state = next_task_state(state, trigger)
        self._forget(task)
        if trigger is TaskTrigger.FAIL:
            out.append(Fail(task.id, reason))
        if r is not None and r.state is not _DEAD:
            self._dispatch(r, out)

    def _forget(self, task: Task) -> None:
        """The task ended: keep its grant waits for the stats, drop it."""
        self._waits.end(task.id, task.admission_wait_s, task.slot_wait_s)
        del self._tasks[task.id]

    def _fail_queued(self, reason: str, out: list[Decision]) -> None:
        """No replica can ever take them: fail every task waiting for admission."""
        for task in [t for t in self._tasks.values() if t.state is TaskState.QUEUED]:
            self._terminate(task, TaskTrigger.FAIL, reason, out)

    def _no_replica_reason(self, task: Task) -> str:
        dead = task.dead_replica or task.last_replica
        return (
            f"replica {dead} died and no live replica is left"
            if dead
            else ("no live replica is left")
        )


def check_invariants(tasks: Iterable[Task], replicas: dict[ReplicaId, Replica]) -> None:
    """O(tasks + replicas) self-check for tests; raises AssertionError."""
    running: dict[ReplicaId, int] = {}
    ready: dict[ReplicaId, int] = {}
    for t in tasks:
        assert t.state is not TaskState.NEW, t
        if t.state in (TaskState.READY, TaskState.RUNNING):
            assert t.kv_held and t.replica is not None, t
            bucket = running if t.state is TaskState.RUNNING else ready
            bucket[t.replica] = bucket.get(t.replica, 0) + 1
        if t.kv_held:
            assert t.replica is not None, t
            r = replicas[t.replica]
            assert r.state is not ReplicaState.DEAD and r.pinned.get(t.id) is t, t
            assert t.reserved >= t.history, t
        else:
            assert t.replica is None and t.reserved == 0, t
    for r in replicas.values():
        assert r.reserved == sum(t.reserved for t in r.pinned.values()), r.id
        assert r.reserved <= r.budget, (r.id, r.reserved, r.budget)
        assert r.running == running.get(r.id, 0), r.id
        assert r.running <= r.max_running, r.id
        assert r.run_queue.live == ready.get(r.id, 0), r.id
        assert r.waiting_tokens == sum(
            t.reserved for t in r.pinned.values() if t.state is TaskState.TOOL
        ), r.id
        if r.state is ReplicaState.DEAD:
            assert not r.pinned and r.reserved == 0 and r.running == 0, r.id
        # a free slot never sits beside a ready call
        if r.state is not ReplicaState.DEAD and r.running < r.max_running:
            assert r.run_queue.live == 0, r.id
