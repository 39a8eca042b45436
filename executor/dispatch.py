"""The runtime's side of the scheduler core: events from asyncio tasks in, decisions applied.

The core (:mod:`scheduler.core`) is sans-I/O; this adapter gives it the time
(``time.monotonic``), turns each task's lifecycle into events, and turns the
core's decisions into effects: a ``RunCall`` resolves the future the task is
awaiting (its permission to call that replica now); ``Reject`` and ``Fail`` raise
in the task; ``Queue``, ``ReleaseKV`` and ``Replace`` are counted for telemetry
(the engine evicts released KV itself, least recently used first).

All of it runs on one event loop thread: the core is never touched concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from executor.errors import ExecutorError, ReplicaUnavailableError
from scheduler import (
    CallFinished,
    Decision,
    Event,
    Fail,
    NextCall,
    Queue,
    Reject,
    ReleaseKV,
    Replace,
    ReplicaDied,
    ReplicaDrained,
    ReplicaJoined,
    ReplicaState,
    RunCall,
    SchedulerCore,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    ToolFinished,
    ToolStarted,
)
from scheduler.states import TERMINAL, TaskState


class TaskRefused(ExecutorError):
    """The scheduler rejected the task (queue full, too large) or failed it (limits)."""


@dataclass
class DispatchStats:
    queued_admission: int = 0
    queued_replica: int = 0
    released_kv_tokens: int = 0
    replacements: list[Replace] = field(default_factory=list)


@dataclass(frozen=True)
class Grant:
    """Permission to run a task's call on a replica, and how long the task waited for it."""

    replica_id: str
    cold: bool
    waited_s: float


class Dispatcher:
    def __init__(
        self,
        core: SchedulerCore,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_drained: Callable[[str], None] | None = None,
    ) -> None:
        self.core = core
        self._clock = clock
        self._on_drained = on_drained
        self._grants: dict[str, asyncio.Future[RunCall]] = {}
        self.stats = DispatchStats()

    def now(self) -> float:
        return max(self._clock(), self.core.now)

    def send(self, event: Event) -> list[Decision]:
        decisions = self.core.handle(event)
        for d in decisions:
            self._apply(d)
        return decisions

    def _apply(self, d: Decision) -> None:
        if isinstance(d, RunCall):
            fut = self._grants.get(d.task_id)
            if fut is not None and not fut.done():
                fut.set_result(d)
        elif isinstance(d, Reject | Fail):
            fut = self._grants.get(d.task_id)
            verb = "rejected" if isinstance(d, Reject) else "failed"
            if fut is not None and not fut.done():
                fut.set_exception(TaskRefused(f"the scheduler {verb} task {d.task_id}: {d.reason}"))
        elif isinstance(d, Queue):
            if d.where == "admission":
                self.stats.queued_admission += 1
            else:
                self.stats.queued_replica += 1
        elif isinstance(d, ReleaseKV):
            self.stats.released_kv_tokens += d.tokens
        elif isinstance(d, Replace):
            self.stats.replacements.append(d)
        elif isinstance(d, ReplicaDrained) and self._on_drained is not None:
            self._on_drained(d.replica_id)

    async def _granted(self, task_id: str, report: Callable[[float], None]) -> Grant:
        """Await the task's next ``RunCall`` after ``report(now)`` has told the core why."""
        fut: asyncio.Future[RunCall] = asyncio.get_running_loop().create_future()
        self._grants[task_id] = fut
        t0 = self.now()
        try:
            report(t0)
            run = await fut
        finally:
            self._grants.pop(task_id, None)
        return Grant(run.replica_id, run.cold, self.now() - t0)

    # -- a task's lifecycle -------------------------------------------------------

    async def arrive(
        self, task_id: str, agent: str, expected_calls: int, expected_history_tokens: int
    ) -> Grant:
        return await self._granted(
            task_id,
            lambda t: self.send(
                TaskArrived(t, task_id, agent, expected_calls, expected_history_tokens)
            ),
        )

    async def next_call(self, task_id: str) -> Grant:
        """The task's next call is ready: after its tool (if one ran) or directly."""
        view = self.core.task(task_id)
        after_tool = view is not None and view.state is TaskState.TOOL
        event = ToolFinished if after_tool else NextCall
        return await self._granted(task_id, lambda t: self.send(event(t, task_id)))

    async def after_replica_death(self, task_id: str, replica_id: str) -> Grant:
        """The task's call died with its replica: report the death (once), await a new place."""

        def report(t: float) -> None:
            view = self.core.replica(replica_id)
            if view is not None and view.state is not ReplicaState.DEAD:
                self.send(ReplicaDied(t, replica_id))
            fut = self._grants[task_id]
            if not fut.done() and all(r.state is ReplicaState.DEAD for r in self.core.replicas()):
                raise ReplicaUnavailableError(replica_id, "it died and no live replica is left")

        return await self._granted(task_id, report)

    def call_finished(
        self,
        task_id: str,
        replica_id: str,
        *,
        prompt_tokens: int,
        cached_tokens: int,
        output_tokens: int,
        latency_s: float,
    ) -> None:
        self.send(
            CallFinished(
                self.now(), task_id, replica_id, prompt_tokens, cached_tokens, output_tokens,
                latency_s,
            )
        )  # fmt: skip

    def tool_started(self, task_id: str, tool: str) -> None:
        """A resumed task is unknown to the core until its next call: nothing to report."""
        if self.core.task(task_id) is not None:
            self.send(ToolStarted(self.now(), task_id, tool))

    def finished(self, task_id: str) -> None:
        self.send(TaskFinished(self.now(), task_id))

    def cancelled(self, task_id: str, reason: str) -> None:
        """Abandon a task in whatever state it is in (a no-op once it is terminal)."""
        view = self.core.task(task_id)
        if view is not None and view.state not in TERMINAL:
            self.send(TaskCancelled(self.now(), task_id, reason))

    # -- replicas -----------------------------------------------------------------

    def replica_joined(self, replica_id: str, kv_capacity_tokens: int) -> None:
        self.send(ReplicaJoined(self.now(), replica_id, kv_capacity_tokens))

    @property
    def queue_depth(self) -> int:
        return self.core.queued
