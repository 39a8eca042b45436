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
* ``WarmUp`` is optional: prefill the task's history there now, with no output, and
  report ``WarmedUp``; a driver that ignores it stays correct (the next call runs
  cold). See :mod:`scheduler.policies.warmup`.
* While a task waits for admission, send ``Tick`` at ``wake_at()`` (when it is not
  None): the time at which it may buy room (:mod:`scheduler.policies.room`).

Cost: every event is O(log n) in tasks and replicas (heaps with lazy deletion),
except ``ReplicaDied``, which is O(tasks on that replica).
"""

from __future__ import annotations

from scheduler.book import check_invariants
from scheduler.decisions import (
    Decision,
    MoveCause,
    Queue,
    Reject,
    ReleaseCause,
    ReplicaDrained,
)
from scheduler.errors import InvalidEvent
from scheduler.events import (
    CallFailed,
    CallFinished,
    Event,
    NextCall,
    ReplacementFailed,
    ReplicaDied,
    ReplicaDraining,
    ReplicaId,
    ReplicaJoined,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    TaskId,
    Tick,
    ToolFinished,
    ToolStarted,
    WarmedUp,
)
from scheduler.policies.retention import CostAwareRetention
from scheduler.policies.warmup import WarmUpBook
from scheduler.replica import Replica, ReplicaView, replica_view
from scheduler.run_queue import RunQueue
from scheduler.states import (
    ReplicaState,
    ReplicaTrigger,
    TaskState,
    TaskTrigger,
    next_replica_state,
    next_task_state,
)
from scheduler.stats import CoreStats
from scheduler.task import Task, TaskView, task_view


class SchedulerCore(WarmUpBook):
    """Events in, decisions out. See the module docstring."""

    # ------------------------------------------------------------------ API

    def handle(self, event: Event) -> list[Decision]:
        """Apply one event; return the decisions it leads to, in order."""
        if not isinstance(event, _EVENT_TYPES):
            raise InvalidEvent(f"not a scheduler event: {event!r}", event=event)
        t = event.time
        if t < self._now:
            raise InvalidEvent(f"time went backwards: {t} after {self._now}", event=event)
        out: list[Decision] = []
        before = self._now
        self._now = t
        self._freed = False
        # the stats' clocks: the state after the last event held until now
        self._waits.advance(t)
        self._drain.advance(t, self._queue.queued_new > 0)
        self._drain_all.advance(t, len(self._queue) > 0)
        self._ledger.now = t
        try:
            self._dispatch_event(event, out)
        except InvalidEvent as exc:  # handlers validate before they change anything
            self._now = before
            if exc.event is None:
                exc.event = event
            raise
        if self._freed and len(self._queue):
            self._admit(out)
        if self.config.work_conserving and len(self._queue):
            self._work_conserve(out)
        if self.config.warm_up:
            self._warm_up(out)
        waiting = len(self._queue) > 0 or self._ready_calls > 0
        self._waits.settle(
            waiting,
            waiting
            and any(
                r.running == 0 and r.state is ReplicaState.ACTIVE for r in self._replicas.values()
            ),
        )
        return out

    def _dispatch_event(self, event: Event, out: list[Decision]) -> None:
        match event:
            case TaskArrived():
                self._on_task_arrived(event, out)
            case CallFinished():
                self._on_call_finished(event, out)
            case CallFailed():
                self._on_call_failed(event, out)
            case ToolStarted():
                self._on_tool_started(event, out)
            case ToolFinished():
                self._on_tool_finished(event, out)
            case NextCall():
                self._on_next_call(event, out)
            case TaskFinished():
                self._on_task_finished(event, out)
            case TaskCancelled():
                self._on_task_cancelled(event, out)
            case ReplicaJoined():
                self._on_replica_joined(event, out)
            case ReplicaDraining():
                self._on_replica_draining(event, out)
            case ReplicaDied():
                self._on_replica_died(event, out)
            case ReplacementFailed():
                self._on_replacement_failed(event, out)
            case WarmedUp():
                self._on_warmed_up(event, out)
            case Tick():  # only time moved: the admission checks below run
                pass

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
        return None if t is None else task_view(t)

    def replica(self, replica_id: ReplicaId) -> ReplicaView | None:
        r = self._replicas.get(replica_id)
        return None if r is None else replica_view(r)

    def replicas(self) -> list[ReplicaView]:
        return [v for rid in self._replicas if (v := self.replica(rid)) is not None]

    def predicted_wait_s(self) -> float | None:
        """How long a task arriving now should wait for admission: 0 when no new task
        waits for admission, else its place among the new arrivals in line (tasks
        returning to the queue go first) over the learned rate at which new arrivals
        leave it; None while that rate is unknown."""
        waiting_new = self._queue.queued_new
        if not waiting_new:
            return 0.0
        return self._drain.expected_wait(waiting_new + 1)

    def stats(self) -> CoreStats:
        """The counters the benchmarks report (see :mod:`scheduler.stats`)."""
        rates = (self._prefill.tokens_per_s(), self._drain.per_s())
        return self._waits.snapshot(self._now, self._tasks.values(), self._replicas.values(), rates)

    def check_invariants(self) -> None:
        """O(tasks + replicas) self-check for tests; raises AssertionError."""
        check_invariants(self._tasks.values(), self._replicas)

    # --------------------------------------------------------- task events

    def _on_task_arrived(self, e: TaskArrived, out: list[Decision]) -> None:
        if e.task_id in self._tasks:
            raise InvalidEvent(f"task {e.task_id!r} already exists", event=e)
        if e.expected_calls < 1 or e.expected_history_tokens < 0:
            raise InvalidEvent(
                "expected_calls must be >= 1 and expected_history_tokens >= 0", event=e
            )
        deadline = e.deadline if e.deadline is not None else e.time + self.config.slo_s
        if e.prompt_tokens < 0:
            raise InvalidEvent("prompt_tokens must be >= 0", event=e)
        task = Task(
            e.task_id, e.agent, e.time, deadline, e.expected_calls, e.expected_history_tokens
        )
        task.prompt = e.prompt_tokens
        if self.config.shed_slo_s is not None and self._shed(task, out):
            return
        if self._hopeless():
            task.state = next_task_state(task.state, TaskTrigger.REJECT)
            out.append(Reject(task.id, "no live replica is left (every replica died)"))
            return
        need = self.admission.reservation(task)
        if self._budgets and need > self._max_budget():
            task.state = next_task_state(task.state, TaskTrigger.REJECT)
            out.append(
                Reject(
                    task.id,
                    (
                        f"expected history of {need} tokens exceeds every replica's KV budget "
                        f"({self._max_budget()} tokens)"
                    ),
                )
            )
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
            out.append(
                Reject(
                    task.id,
                    (f"admission queue full ({self._queue.limit} tasks waiting for KV room)"),
                )
            )
            return
        self._tasks[task.id] = task
        self._enqueue(task)
        out.append(Queue(task.id, "admission"))

    def _shed(self, task: Task, out: list[Decision]) -> bool:
        """SLO-aware shedding: refuse the task now if its predicted admission wait
        already exceeds ``shed_slo_s`` (unknown drain rate: never shed)."""
        slo = self.config.shed_slo_s
        assert slo is not None
        wait = self.predicted_wait_s()
        if wait is None or wait <= slo:
            return False
        task.state = next_task_state(task.state, TaskTrigger.REJECT)
        self._waits.count("shed")
        out.append(
            Reject(
                task.id,
                (
                    f"shed: predicted queue wait {wait:.1f} s exceeds the SLO ({slo:g} s; "
                    f"{len(self._queue)} tasks waiting)"
                ),
                retry_after_s=max(1.0, wait - slo),
            )
        )
        return True

    def _on_call_finished(self, e: CallFinished, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if task.replica != e.replica_id:
            raise InvalidEvent(
                f"task {e.task_id!r} runs on {task.replica!r}, not {e.replica_id!r}",
                event=e,
                state=task.state,
            )
        if (
            e.prompt_tokens < 0
            or e.output_tokens < 0
            or e.latency_s < 0
            or not 0 <= e.cached_tokens <= e.prompt_tokens
        ):
            raise InvalidEvent("token counts and latency must be >= 0, cached <= prompt", e)
        self._prefill.observe(e.prompt_tokens - e.cached_tokens, e.output_tokens, e.latency_s)
        if self.config.learn_prefill_speed and isinstance(self.retention, CostAwareRetention):
            self.retention.prefill_tokens_per_s = self._prefill.tokens_per_s()
        r = self._replicas[e.replica_id]
        r.running -= 1
        before = task.history
        task.history = e.prompt_tokens + e.output_tokens
        self.admission.observe(task, before, task.history)
        task.calls_done += 1
        task.attained_s += e.latency_s
        task.retries = 0
        task.cold = False
        task.state = next_task_state(task.state, TaskTrigger.FINISH_CALL)
        need = self.admission.reservation(task)
        if self._ledger.resize(task, r, need) and r.reserved > r.budget:
            self._relieve(r, out)  # its history outgrew what it was admitted with
            if r.reserved > r.budget:
                self._release(task, ReleaseCause.OVER_BUDGET, out)
        self._dispatch(r, out)

    def _on_call_failed(self, e: CallFailed, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if task.replica != e.replica_id:
            raise InvalidEvent(
                f"task {e.task_id!r} runs on {task.replica!r}, not {e.replica_id!r}",
                event=e,
                state=task.state,
            )
        task.retries += 1
        if task.retries > self.config.max_call_retries:
            self._terminate(
                task,
                TaskTrigger.FAIL,
                (f"call failed {task.retries} times on {e.replica_id}: {e.reason}"),
                out,
            )
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
            self._release(task, ReleaseCause.DRAINING, out)  # it moves at its tool wait
        elif (
            task.kv_held
            and self._pausable(task)
            and not self.retention.keep(task, expected, pressure)
        ):
            self._release(task, ReleaseCause.TOOL_WAIT, out)
        task.state = next_task_state(task.state, TaskTrigger.START_TOOL)
        if not task.kv_held:
            self._warm_note(task)
            return
        r = self._home(task)
        r.push_waiting(task, self._next_seq())
        if pressure:
            cap = self.retention.waiting_cap(r)
            self._pause_while(r, lambda: r.waiting_tokens > cap, ReleaseCause.WAITING_CAP, out)

    def _on_tool_finished(self, e: ToolFinished, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        self._tools.observe(task.tool, e.time - task.tool_started)
        if task.kv_held:
            r = self._home(task)
            r.waiting_tokens -= task.reserved
            self._make_ready(task, r)
            self._dispatch(r, out)
        else:
            self._place_or_queue(task, out)

    def _on_next_call(self, e: NextCall, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if self._on_draining(task):
            self._release(task, ReleaseCause.DRAINING, out)
        if task.kv_held:
            r = self._home(task)
            self._make_ready(task, r)
            self._dispatch(r, out)
        else:
            self._place_or_queue(task, out)

    def _on_task_finished(self, e: TaskFinished, out: list[Decision]) -> None:
        task = self._get_task(e, e.task_id)
        if task.kv_held:
            self._release(task, ReleaseCause.TASK_DONE, out)
        task.state = next_task_state(task.state, TaskTrigger.FINISH)
        self._forget(task)

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
            r = Replica(
                rid,
                self._next_seq(),
                RunQueue(
                    lambda t, seq: (
                        t.state is TaskState.READY and t.replica == rid and t.ready_seq == seq
                    )
                ),
            )
        state = next_replica_state(r.state, ReplicaTrigger.JOIN)
        self._replicas[r.id] = r
        if r.booked_at is None:
            r.booked_at = e.time
        r.state = state
        r.capacity = e.kv_capacity_tokens
        r.budget = self.admission.budget(e.kv_capacity_tokens)
        r.max_running = e.max_running_calls or self.config.max_running_calls
        self._budget_count(r.budget, +1)
        self._fleet.update(r)
        self._freed = True
        if e.replaces is not None:
            self._replacing.discard(e.replaces)

    def _on_replica_draining(self, e: ReplicaDraining, out: list[Decision]) -> None:
        r = self._get_replica(e, e.replica_id)
        r.state = next_replica_state(r.state, ReplicaTrigger.DRAIN)
        self._fleet.remove(r)
        self._budget_count(r.budget, -1)
        # tasks waiting on a tool move now (placed elsewhere when their tool returns);
        # ready and running calls finish here
        for task in [t for t in r.pinned.values() if t.state is TaskState.TOOL]:
            self._release(task, ReleaseCause.DRAINING, out)
        if not r.pinned:
            out.append(ReplicaDrained(r.id))

    def _on_replica_died(self, e: ReplicaDied, out: list[Decision]) -> None:
        r = self._get_replica(e, e.replica_id)
        was_active = r.state is ReplicaState.ACTIVE
        r.state = next_replica_state(r.state, ReplicaTrigger.DIE)
        self._fleet.remove(r)
        if was_active:
            self._budget_count(r.budget, -1)
        lost = self._ledger.lose(r)
        r.running = 0
        r.run_queue.clear()  # its ready calls are placed again below (still ready)
        if e.replacing:
            self._replacing.add(r.id)
        for task in lost:
            task.cold = True
            task.lost_kv = MoveCause.REPLICA_DIED
            task.dead_replica = r.id
            task.migrations += 1
            self._warm_note(task)
        for task in lost:
            if not self.failover.may_migrate(task):
                self._terminate(
                    task,
                    TaskTrigger.FAIL,
                    (
                        f"replica {r.id} died and the task reached its migration limit "
                        f"({task.migrations - 1} migrations)"
                    ),
                    out,
                )
            elif task.state in (TaskState.READY, TaskState.RUNNING):
                self._place_or_queue(task, out)
            # TOOL / AWAITING: placed again (cold) when its next call is ready
        if self._hopeless():
            self._fail_queued(f"replica {r.id} died and no live replica is left", out)

    def _on_replacement_failed(self, e: ReplacementFailed, out: list[Decision]) -> None:
        self._get_replica(e, e.replica_id)
        self._replacing.discard(e.replica_id)
        if self._hopeless():
            why = f": {e.reason}" if e.reason else ""
            self._fail_queued(f"replica {e.replica_id} died and its replacement failed{why}", out)


_EVENT_TYPES = (
    TaskArrived,
    CallFinished,
    CallFailed,
    ToolStarted,
    ToolFinished,
    NextCall,
    TaskFinished,
    TaskCancelled,
    ReplicaJoined,
    ReplicaDraining,
    ReplicaDied,
    ReplacementFailed,
    WarmedUp,
    Tick,
)
