"""The scheduler core: a sans-I/O state machine.

``SchedulerCore.handle(event) -> list[Decision]``. Events carry their time; the
core reads no clock, starts no thread, awaits nothing, and for the same event
sequence returns the same decisions. The real runtime and the simulator drive
the same object.

How a driver uses it:

* Feed every event in time order. An event that the current state does not
  allow raises :class:`~scheduler.errors.InvalidEvent` and changes nothing.
* Apply the returned decisions in order. ``RunCall`` is the only permission to
  start a call; calls the core has queued start when a later event (any event:
  a call finishing frees its replica's compute slot, a task finishing frees KV,
  a replica joining adds room) returns their ``RunCall``.
* A task's life: ``TaskArrived`` -> (``RunCall``) -> ``CallFinished`` ->
  ``ToolStarted`` -> ``ToolFinished`` -> (``RunCall``) -> ... ->
  ``CallFinished`` -> ``TaskFinished``. ``NextCall`` replaces a tool when a
  call follows a call directly. See :mod:`scheduler.states`.

Cost: every event is O(log n) in tasks and replicas (heaps with lazy deletion),
except ``ReplicaDied``, which is O(tasks on that replica).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.admission_queue import AdmissionQueue
from scheduler.config import SchedulerConfig
from scheduler.decisions import (
    Decision,
    Fail,
    Queue,
    Reject,
    ReleaseKV,
    Replace,
    ReplicaDrained,
    RunCall,
)
from scheduler.errors import InvalidEvent
from scheduler.events import (
    CallFailed,
    CallFinished,
    Event,
    NextCall,
    ReplicaDied,
    ReplicaDraining,
    ReplicaId,
    ReplicaJoined,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    TaskId,
    ToolFinished,
    ToolStarted,
)
from scheduler.fleet_index import FleetIndex
from scheduler.policies.admission import AdmissionPolicy, KVBudgetAdmission
from scheduler.policies.failover import FailoverPolicy, MigrationLimitedFailover
from scheduler.policies.ordering import EarliestDeadlineFirst, OrderingPolicy
from scheduler.policies.placement import PlacementPolicy, SpreadPlacement
from scheduler.policies.retention import CostAwareRetention, RetentionPolicy
from scheduler.replica import Replica
from scheduler.run_queue import RunQueue
from scheduler.states import (
    TASK_EVENTS_ALLOWED,
    ReplicaState,
    ReplicaTrigger,
    TaskState,
    TaskTrigger,
    next_replica_state,
    next_task_state,
)
from scheduler.task import Task
from scheduler.tool_stats import ToolStats

_READY = TaskState.READY
_ACTIVE = ReplicaState.ACTIVE
_DEAD = ReplicaState.DEAD
_DRAINING = ReplicaState.DRAINING


@dataclass(frozen=True, slots=True)
class TaskView:
    """A read-only snapshot of a task, for drivers, tests and telemetry."""

    task_id: TaskId
    state: TaskState
    replica_id: ReplicaId | None
    kv_held: bool
    reserved_tokens: int
    history_tokens: int
    calls_done: int
    migrations: int


@dataclass(frozen=True, slots=True)
class ReplicaView:
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


class SchedulerCore:
    """Events in, decisions out. See the module docstring."""

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
        self.admission = admission or KVBudgetAdmission(c.kv_headroom)
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
        self._queue = AdmissionQueue(c.admission_queue_limit)
        self._tools = ToolStats(c.tool_ewma_alpha, c.default_tool_s)
        self._budgets: dict[int, int] = {}  # budget -> active replicas with it
        self._freed = False
        self._handlers: dict[type, Callable[[object, list[Decision]], None]] = {
            TaskArrived: self._on_task_arrived,  # type: ignore[dict-item]
            CallFinished: self._on_call_finished,  # type: ignore[dict-item]
            CallFailed: self._on_call_failed,  # type: ignore[dict-item]
            ToolStarted: self._on_tool_started,  # type: ignore[dict-item]
            ToolFinished: self._on_tool_finished,  # type: ignore[dict-item]
            NextCall: self._on_next_call,  # type: ignore[dict-item]
            TaskFinished: self._on_task_finished,  # type: ignore[dict-item]
            TaskCancelled: self._on_task_cancelled,  # type: ignore[dict-item]
            ReplicaJoined: self._on_replica_joined,  # type: ignore[dict-item]
            ReplicaDraining: self._on_replica_draining,  # type: ignore[dict-item]
            ReplicaDied: self._on_replica_died,  # type: ignore[dict-item]
        }

    # ------------------------------------------------------------------ API

    def handle(self, event: Event) -> list[Decision]:
        """Apply one event; return the decisions it leads to, in order."""
        handler = self._handlers.get(type(event))
        if handler is None:
            raise InvalidEvent(f"not a scheduler event: {event!r}", event=event)
        t = event.time
        if t < self._now:
            raise InvalidEvent(
                f"time went backwards: {t} after {self._now}", event=event
            )
        out: list[Decision] = []
        before = self._now
        self._now = t
        self._freed = False
        try:
            handler(event, out)
        except InvalidEvent as exc:  # handlers validate before they change anything
            self._now = before
            if exc.event is None:
                exc.event = event
            raise
        if self._freed and len(self._queue):
            self._admit(out)
        return out

    @property
    def now(self) -> float:
        return self._now

    @property
    def queued(self) -> int:
        """Tasks waiting for admission."""
        return len(self._queue)

    @property
    def live_tasks(self) -> int:
        return len(self._tasks)

    def expected_tool_s(self, tool: str) -> float:
        return self._tools.expected(tool)

    def task(self, task_id: TaskId) -> TaskView | None:
        t = self._tasks.get(task_id)
        if t is None:
            return None
        return TaskView(
            t.id, t.state, t.replica, t.kv_held, t.reserved, t.history, t.calls_done,
            t.migrations,
        )

    def replica(self, replica_id: ReplicaId) -> ReplicaView | None:
        r = self._replicas.get(replica_id)
        if r is None:
            return None
        return ReplicaView(
            r.id, r.state, r.capacity, r.budget, r.reserved, r.waiting_tokens, r.running,
            r.run_queue.live, r.max_running, len(r.pinned),
        )

    def replicas(self) -> list[ReplicaView]:
        return [v for rid in self._replicas if (v := self.replica(rid)) is not None]

    def check_invariants(self) -> None:
        """O(tasks + replicas) self-check for tests; raises AssertionError."""
        running: dict[ReplicaId, int] = {}
        ready: dict[ReplicaId, int] = {}
        for t in self._tasks.values():
            assert t.state is not TaskState.NEW, t
            if t.state in (TaskState.READY, TaskState.RUNNING):
                assert t.kv_held and t.replica is not None, t
                bucket = running if t.state is TaskState.RUNNING else ready
                bucket[t.replica] = bucket.get(t.replica, 0) + 1
            if t.kv_held:
                assert t.replica is not None, t
                r = self._replicas[t.replica]
                assert r.state is not _DEAD and r.pinned.get(t.id) is t, t
                assert t.reserved >= t.history, t
            else:
                assert t.replica is None and t.reserved == 0, t
        for r in self._replicas.values():
            assert r.reserved == sum(t.reserved for t in r.pinned.values()), r.id
            assert r.reserved <= r.budget, (r.id, r.reserved, r.budget)
            assert r.running == running.get(r.id, 0), r.id
            assert r.running <= r.max_running, r.id
            assert r.run_queue.live == ready.get(r.id, 0), r.id
            assert r.waiting_tokens == sum(
                t.reserved for t in r.pinned.values() if t.state is TaskState.TOOL
            ), r.id
            if r.state is _DEAD:
                assert not r.pinned and r.reserved == 0 and r.running == 0, r.id
            # a free slot never sits beside a ready call
            if r.state is not _DEAD and r.running < r.max_running:
                assert r.run_queue.live == 0, r.id

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
                event=event, state=task.state,
            )
        return task

    def _get_replica(self, event: Event, replica_id: ReplicaId) -> Replica:
        r = self._replicas.get(replica_id)
        if r is None:
            raise InvalidEvent(f"unknown replica {replica_id!r}", event=event)
        return r

    def _max_budget(self) -> int:
        return max(self._budgets) if self._budgets else 0

    def _budget_count(self, budget: int, delta: int) -> None:
        n = self._budgets.get(budget, 0) + delta
        if n:
            self._budgets[budget] = n
        else:
            self._budgets.pop(budget, None)

    def _transition(self, task: Task, trigger: TaskTrigger) -> None:
        task.state = next_task_state(task.state, trigger)

    # reserve / release --------------------------------------------------

    def _reserve(self, task: Task, r: Replica, need: int) -> None:
        task.replica = r.id
        task.kv_held = True
        task.reserved = need
        task.cold = True
        r.reserved += need
        r.pinned[task.id] = task
        agents = r.agents
        agents[task.agent] = agents.get(task.agent, 0) + 1
        self._fleet.update(r)

    def _release(self, task: Task, reason: str, out: list[Decision]) -> None:
        """Stop counting the task's KV on its replica (the engine may evict it)."""
        r = self._replicas[task.replica]  # type: ignore[index]
        r.reserved -= task.reserved
        if task.state is TaskState.TOOL:
            r.waiting_tokens -= task.reserved
        del r.pinned[task.id]
        n = r.agents[task.agent] - 1
        if n:
            r.agents[task.agent] = n
        else:
            del r.agents[task.agent]
        out.append(ReleaseKV(task.id, r.id, task.history, reason))
        task.lost_kv = "kv released"
        task.kv_held = False
        task.reserved = 0
        task.replica = None
        task.cold = True
        self._freed = True
        self._fleet.update(r)
        if r.state is ReplicaState.DRAINING and not r.pinned:
            out.append(ReplicaDrained(r.id))

    # ready / dispatch ---------------------------------------------------

    def _on_draining(self, task: Task) -> bool:
        """The task holds KV on a draining replica (it should move at its next wait)."""
        return task.kv_held and self._replicas[task.replica].state is _DRAINING  # type: ignore[index]

    def _make_ready(self, task: Task, r: Replica) -> None:
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
        need = self.admission.reservation(task)
        if self._budgets and need > self._max_budget():
            self._terminate(
                task, TaskTrigger.FAIL,
                f"history of {need} tokens exceeds every replica's KV budget", out,
            )
            return
        r = None if self._queue.queued_returning else self._choose(task, need)
        if r is not None:
            self._place(task, r, need, out)
            self._dispatch(r, out)
        else:
            task.state = next_task_state(task.state, TaskTrigger.QUEUE)
            self._queue.push(task)
            out.append(Queue(task.id, "admission"))

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
            self._place(task, r, need, out)
            self._dispatch(r, out)

    def _terminate(
        self, task: Task, trigger: TaskTrigger, reason: str, out: list[Decision]
    ) -> None:
        """Leave the task's state cleanly (queue, run queue, slot, KV) and forget it."""
        state = task.state
        r = self._replicas.get(task.replica) if task.replica is not None else None
        if state is TaskState.QUEUED:
            self._queue.forget(task)
        elif state is _READY and r is not None:
            r.run_queue.live -= 1
        elif state is TaskState.RUNNING and r is not None:
            r.running -= 1
        if task.kv_held:
            self._release(task, reason, out)
        task.state = next_task_state(state, trigger)
        del self._tasks[task.id]
        if trigger is TaskTrigger.FAIL:
            out.append(Fail(task.id, reason))
        if r is not None and r.state is not _DEAD:
            self._dispatch(r, out)

    # --------------------------------------------------------- task events

    def _on_task_arrived(self, e: TaskArrived, out: list[Decision]) -> None:
        if e.task_id in self._tasks:
            raise InvalidEvent(f"task {e.task_id!r} already exists", event=e)
        if e.expected_calls < 1 or e.expected_history_tokens < 0:
            raise InvalidEvent(
                "expected_calls must be >= 1 and expected_history_tokens >= 0", event=e
            )
        deadline = e.deadline if e.deadline is not None else e.time + self.config.slo_s
        task = Task(
            e.task_id, e.agent, e.time, deadline, e.expected_calls, e.expected_history_tokens
        )
        need = self.admission.reservation(task)
        if self._budgets and need > self._max_budget():
            task.state = next_task_state(task.state, TaskTrigger.REJECT)
            out.append(Reject(task.id, (
                f"expected history of {need} tokens exceeds every replica's KV budget "
                f"({self._max_budget()} tokens)"
            )))
            return
        r = None if len(self._queue) else self.placement.choose(task, need, self._fleet)
        if r is not None:
            self._tasks[task.id] = task
            self._place(task, r, need, out)
            if r.running >= r.max_running:
                out.append(Queue(task.id, "replica", r.id))
            self._dispatch(r, out)
            return
        if self._queue.full():
            task.state = next_task_state(task.state, TaskTrigger.REJECT)
            out.append(Reject(task.id, (
                f"admission queue full ({self._queue.limit} tasks waiting for KV room)"
            )))
            return
        self._tasks[task.id] = task
        task.state = next_task_state(task.state, TaskTrigger.QUEUE)
        self._queue.push(task)
        out.append(Queue(task.id, "admission"))

    def _on_call_finished(self, e: CallFinished, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if task.replica != e.replica_id:
            raise InvalidEvent(
                f"task {e.task_id!r} runs on {task.replica!r}, not {e.replica_id!r}",
                event=e, state=task.state,
            )
        if (
            e.prompt_tokens < 0 or e.output_tokens < 0 or e.latency_s < 0
            or not 0 <= e.cached_tokens <= e.prompt_tokens
        ):
            raise InvalidEvent("token counts and latency must be >= 0, cached <= prompt", e)
        r = self._replicas[e.replica_id]
        r.running -= 1
        task.history = e.prompt_tokens + e.output_tokens
        task.calls_done += 1
        task.attained_s += e.latency_s
        task.retries = 0
        task.cold = False
        task.state = next_task_state(task.state, TaskTrigger.FINISH_CALL)
        need = self.admission.reservation(task)
        if need != task.reserved:
            r.reserved += need - task.reserved
            task.reserved = need
            self._fleet.update(r)
            if r.reserved > r.budget:  # history outgrew its expected peak
                while r.reserved > r.budget:
                    victim = r.pop_latest_waiting()
                    if victim is None:
                        break
                    self._release(victim, "replica over KV budget", out)
                if r.reserved > r.budget:
                    self._release(task, "replica over KV budget", out)
        self._dispatch(r, out)

    def _on_call_failed(self, e: CallFailed, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if task.replica != e.replica_id:
            raise InvalidEvent(
                f"task {e.task_id!r} runs on {task.replica!r}, not {e.replica_id!r}",
                event=e, state=task.state,
            )
        task.retries += 1
        if task.retries > self.config.max_call_retries:
            self._terminate(task, TaskTrigger.FAIL, (
                f"call failed {task.retries} times on {e.replica_id}: {e.reason}"
            ), out)
            return
        r = self._replicas[e.replica_id]
        r.running -= 1
        self._make_ready(task, r)
        self._dispatch(r, out)

    def _on_tool_started(self, e: ToolStarted, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        task.tool = e.tool
        task.tool_started = e.time
        expected = self._tools.expected(e.tool, e.expected_s)
        task.expected_return = e.time + expected
        pressure = len(self._queue) > 0
        if self._on_draining(task):
            self._release(task, "replica draining", out)  # it moves at its tool wait
        elif task.kv_held and not self.retention.keep(task, expected, pressure):
            self._release(task, "long tool wait under KV pressure", out)
        task.state = next_task_state(task.state, TaskTrigger.START_TOOL)
        if not task.kv_held:
            return
        r = self._replicas[task.replica]  # type: ignore[index]
        r.push_waiting(task, self._next_seq())
        cap = self.retention.waiting_cap(r)
        while pressure and r.waiting_tokens > cap:
            victim = r.pop_latest_waiting()
            if victim is None:  # pragma: no cover - waiting_tokens counts heap members
                break
            self._release(victim, "waiting tasks' KV over cap", out)

    def _on_tool_finished(self, e: ToolFinished, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        self._tools.observe(task.tool, e.time - task.tool_started)
        if task.kv_held:
            r = self._replicas[task.replica]  # type: ignore[index]
            r.waiting_tokens -= task.reserved
            self._make_ready(task, r)
            self._dispatch(r, out)
        else:
            self._place_or_queue(task, out)

    def _on_next_call(self, e: NextCall, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if self._on_draining(task):
            self._release(task, "replica draining", out)
        if task.kv_held:
            r = self._replicas[task.replica]  # type: ignore[index]
            self._make_ready(task, r)
            self._dispatch(r, out)
        else:
            self._place_or_queue(task, out)

    def _on_task_finished(self, e: TaskFinished, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if task.kv_held:
            self._release(task, "task done", out)
        task.state = next_task_state(task.state, TaskTrigger.FINISH)
        del self._tasks[task.id]

    def _on_task_cancelled(self, e: TaskCancelled, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        self._terminate(task, TaskTrigger.CANCEL, e.reason or "cancelled", out)

    # ------------------------------------------------------ replica events

    def _on_replica_joined(self, e: ReplicaJoined, out: list[Decision]) -> None:
        if e.kv_capacity_tokens <= 0 or (
            e.max_running_calls is not None and e.max_running_calls < 1
        ):
            raise InvalidEvent("kv_capacity_tokens and max_running_calls must be >= 1", e)
        r = self._replicas.get(e.replica_id)
        if r is None:
            rid = e.replica_id
            r = Replica(rid, self._next_seq(), RunQueue(
                lambda t, seq: t.state is _READY and t.replica == rid and t.ready_seq == seq
            ))
        state = next_replica_state(r.state, ReplicaTrigger.JOIN)
        self._replicas[r.id] = r
        r.state = state
        r.capacity = e.kv_capacity_tokens
        r.budget = self.admission.budget(e.kv_capacity_tokens)
        r.max_running = e.max_running_calls or self.config.max_running_calls
        self._budget_count(r.budget, +1)
        self._fleet.update(r)
        self._freed = True

    def _on_replica_draining(self, e: ReplicaDraining, out: list[Decision]) -> None:
        r = self._get_replica(e, e.replica_id)
        r.state = next_replica_state(r.state, ReplicaTrigger.DRAIN)
        self._fleet.remove(r)
        self._budget_count(r.budget, -1)
        # tasks waiting on a tool move now (placed elsewhere when their tool returns);
        # ready and running calls finish here
        for task in [t for t in r.pinned.values() if t.state is TaskState.TOOL]:
            self._release(task, "replica draining", out)
        if not r.pinned:
            out.append(ReplicaDrained(r.id))

    def _on_replica_died(self, e: ReplicaDied, out: list[Decision]) -> None:
        r = self._get_replica(e, e.replica_id)
        was_active = r.state is _ACTIVE
        r.state = next_replica_state(r.state, ReplicaTrigger.DIE)
        self._fleet.remove(r)
        if was_active:
            self._budget_count(r.budget, -1)
        lost = list(r.pinned.values())
        r.pinned = {}
        r.agents = {}
        r.reserved = 0
        r.running = 0
        r.run_queue.clear()
        r.clear_waiting()
        for task in lost:
            task.kv_held = False
            task.reserved = 0
            task.replica = None
            task.cold = True
            task.lost_kv = "replica died"
            task.migrations += 1
        for task in lost:
            if not self.failover.may_migrate(task):
                self._terminate(task, TaskTrigger.FAIL, (
                    f"replica {r.id} died and the task reached its migration limit "
                    f"({task.migrations - 1} migrations)"
                ), out)
            elif task.state in (_READY, TaskState.RUNNING):
                self._place_or_queue(task, out)
            # TOOL / AWAITING: placed again (cold) when its next call is ready
