"""The runtime's side of the scheduler core: events from asyncio tasks in, decisions applied.

The core (:mod:`scheduler.core`) is sans-I/O; this adapter gives it the time
(``time.monotonic``), turns each task's lifecycle into events, and turns the
core's decisions into effects: a ``RunCall`` resolves the future the task is
awaiting (its permission to call that replica now); ``Reject`` and ``Fail`` raise
in the task; ``Queue``, ``ReleaseKV`` and ``Replace`` are counted for telemetry,
and a ``ReleaseKV`` is handed to ``on_release`` (the fleet closes the task's engine
session where replicas release in the engine; elsewhere the engine evicts released
KV itself, least recently used first). It holds no
policy: whether a task waits or fails, where it goes, when it moves, is the
core's decision. Replica deaths are queued for the fleet (:meth:`Dispatcher.deaths`),
which discards the dead actor and starts a replacement.

The task driver says what happened (its task arrived, its tool finished, its next
call is ready, it finished): the dispatcher turns that into the core's event
without reading the core's state to guess it. (``ready`` and ``next_call`` without
``after_tool`` still guess, for callers that do not track it: the gateway.)
Collaborators come with the constructor (``on_release``).

All of it runs on one event loop thread: the core is never touched concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from executor.errors import ExecutorError
from scheduler import (
    CallFailed,
    CallFinished,
    Decision,
    Event,
    Fail,
    MoveCause,
    NextCall,
    Queue,
    Reject,
    ReleaseKV,
    Replace,
    ReplacementFailed,
    ReplicaDied,
    ReplicaDrained,
    ReplicaDraining,
    ReplicaJoined,
    ReplicaState,
    RunCall,
    SchedulerCore,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    Tick,
    ToolFinished,
    ToolStarted,
    WarmUp,
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
    moved_from: str | None = None  # the task's replica died: its history replays here


class Dispatcher:
    def __init__(
        self,
        core: SchedulerCore,
        *,
        replace_dead: bool = False,
        retry_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_release: Callable[[str, str], None] | None = None,
    ) -> None:
        """``replace_dead``: the fleet starts a replica in place of each one that dies
        (the core then lets their tasks wait for it instead of failing them).
        ``retry_after_s``: how long a call that found its replica unreachable waits
        for the replica's death before it is retried there (``HealthConfig``)."""
        self.core = core
        self.replace_dead = replace_dead
        self.retry_after_s = retry_after_s
        self._clock = clock
        # A task's next outcome (a RunCall, or a refusal): awaited by the task, or
        # kept until it asks (a re-placement after a replica death can come first).
        self._outcomes: dict[str, asyncio.Future[RunCall]] = {}
        self._lost: dict[str, asyncio.Future[str]] = {}
        self._drained: dict[str, asyncio.Future[None]] = {}
        self._moved: dict[str, str] = {}  # task -> the dead replica it was moved off
        self.stats = DispatchStats()
        self._deaths: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        # (replica, task) of every KV release: the fleet closes the task's engine session
        self.on_release = on_release
        # a WarmUp decision: a Warmer (executor/warmup.py) prefills the task ahead of its
        # next call; with none, WarmUp is ignored and that call prefills its history itself
        self.on_warm_up: Callable[[WarmUp], None] | None = None
        # a Tick armed for when a queued task may buy its room (SchedulerCore.wake_at)
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = math.inf
        self._wake_loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        return max(self._clock(), self.core.now)

    def send(self, event: Event) -> list[Decision]:
        decisions = self.core.handle(event)
        for d in decisions:
            self._apply(d)
        self._arm()
        return decisions

    def _arm(self) -> None:
        """Arm a ``Tick`` for when time alone lets the queue's head buy its room
        (``SchedulerCore.wake_at``): no other event may come (idle gateway sessions
        send none). One timer: an earlier one re-arms when it fires."""
        wake = self.core.wake_at()
        if wake is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without a loop (a test): the next event decides
            return
        if self._wake is not None:
            if self._wake_loop is loop and self._wake_at <= wake:
                return
            self._wake.cancel()
        self._wake_at, self._wake_loop = wake, loop
        self._wake = loop.call_later(max(0.0, wake - self.now()), self._tick)

    def _tick(self) -> None:
        wake, self._wake = self._wake_at, None
        self.send(Tick(max(self.now(), wake)))

    def _outcome(self, task_id: str, *, fresh: bool = False) -> asyncio.Future[RunCall]:
        """The task's pending outcome; ``fresh``: a new one if the last is already set
        (a later decision supersedes one the task has not taken yet)."""
        fut = self._outcomes.get(task_id)
        if fut is None or (fresh and fut.done()):
            fut = self._outcomes[task_id] = asyncio.get_running_loop().create_future()
        return fut

    def _apply(self, d: Decision) -> None:
        if isinstance(d, RunCall):
            self._outcome(d.task_id, fresh=True).set_result(d)
        elif isinstance(d, Reject | Fail):
            verb = "rejected" if isinstance(d, Reject) else "failed"
            exc = TaskRefused(f"the scheduler {verb} task {d.task_id}: {d.reason}")
            self._outcome(d.task_id, fresh=True).set_exception(exc)
        elif isinstance(d, Queue):
            if d.where == "admission":
                self.stats.queued_admission += 1
            else:
                self.stats.queued_replica += 1
        elif isinstance(d, ReleaseKV):
            self.stats.released_kv_tokens += d.tokens
            if self.on_release is not None:
                self.on_release(d.replica_id, d.task_id)
        elif isinstance(d, Replace):
            self.stats.replacements.append(d)
            if d.cause is MoveCause.REPLICA_DIED and d.from_replica is not None:
                self._moved[d.task_id] = d.from_replica
        elif isinstance(d, ReplicaDrained):
            fut = self._drained.get(d.replica_id)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(d, WarmUp) and self.on_warm_up is not None:
            self.on_warm_up(d)

    async def _granted(self, task_id: str, report: Callable[[float], object]) -> Grant:
        """Await the task's next ``RunCall`` after ``report(now)`` has told the core why
        (unless the core already decided: the task was re-placed after a death)."""
        fut = self._outcome(task_id)
        t0 = self.now()
        try:
            if not fut.done():
                report(t0)
            run = await fut
        finally:
            if self._outcomes.get(task_id) is fut:  # (not a later one parked meanwhile)
                del self._outcomes[task_id]
        return Grant(run.replica_id, run.cold, self.now() - t0, self._moved.pop(task_id, None))

    # -- a task's lifecycle -------------------------------------------------------

    async def arrive(
        self,
        task_id: str,
        agent: str,
        expected_calls: int,
        expected_history_tokens: int,
        prompt_tokens: int = 0,
    ) -> Grant:
        """A new task (``prompt_tokens``: its first call's prompt, exactly)."""
        return await self._granted(
            task_id,
            lambda t: self.send(
                TaskArrived(
                    t,
                    task_id,
                    agent,
                    expected_calls,
                    expected_history_tokens,
                    prompt_tokens=prompt_tokens,
                )
            ),
        )

    async def ready(
        self,
        task_id: str,
        agent: str,
        expected_calls: int,
        expected_history_tokens: int,
        prompt_tokens: int = 0,
    ) -> Grant:
        """The task's next call is ready: its first (or the first of a resumed task, or
        of one the core has forgotten), or a later one."""
        if self.core.task(task_id) is None:
            return await self.arrive(
                task_id, agent, expected_calls, expected_history_tokens, prompt_tokens
            )
        return await self.next_call(task_id)

    async def next_call(self, task_id: str, *, after_tool: bool | None = None) -> Grant:
        """The task's next call is ready: ``after_tool``, its tool finished
        (``ToolFinished``); else directly after its last call (``NextCall``). None: read
        from the core whether a tool ran (for callers that do not track it)."""
        if after_tool is None:
            view = self.core.task(task_id)
            after_tool = view is not None and view.state is TaskState.TOOL
        event = ToolFinished if after_tool else NextCall
        return await self._granted(task_id, lambda t: self.send(event(t, task_id)))

    async def after_replica_death(self, task_id: str, replica_id: str, reason: str) -> Grant:
        """The task's call died with its replica: report the death (once), await a new place."""

        return await self._granted(task_id, lambda t: self.replica_died(replica_id, reason))

    async def call_failed(self, task_id: str, replica_id: str, reason: str) -> Grant:
        """The call failed on a replica that is not known dead (it did not answer this
        time): the core retries it there, or fails the task past its retry limit. The
        retry waits ``retry_after_s`` first: if the replica is declared dead meanwhile
        (a node that died is unreachable for seconds before Ray says so), the task
        moves instead, its retries unspent."""
        lost = self.lost(replica_id)
        if self.retry_after_s > 0 and not lost.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lost), self.retry_after_s)
        if lost.done():  # the core placed the task again when the replica died
            return await self.after_replica_death(task_id, replica_id, lost.result())

        def report(t: float) -> None:
            view = self.core.task(task_id)
            if view is not None and view.state is TaskState.RUNNING:
                self.send(CallFailed(t, task_id, replica_id, reason))

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
                self.now(),
                task_id,
                replica_id,
                prompt_tokens,
                cached_tokens,
                output_tokens,
                latency_s,
            )
        )

    def tool_started(self, task_id: str, tool: str, *, known: bool | None = None) -> None:
        """The task's tool runs. ``known``: whether the core knows the task (the driver
        says; a resumed task is unknown to it until its next call). None: ask the core."""
        if known is None:
            known = self.core.task(task_id) is not None
        if known:
            self.send(ToolStarted(self.now(), task_id, tool))

    def finished(self, task_id: str, *, after_call: bool | None = None) -> None:
        """The task ended. ``after_call``: its last event was a finished call (the driver
        says; else, a resumed task that had nothing left to call, or one that ended at a
        tool, there is no call to finish). None: ask the core."""
        if after_call is None:
            view = self.core.task(task_id)
            after_call = view is not None and view.state is TaskState.AWAITING
        if after_call:
            self.send(TaskFinished(self.now(), task_id))

    def cancelled(self, task_id: str, reason: str) -> None:
        """Abandon a task in whatever state it is in (a no-op once it is terminal)."""
        view = self.core.task(task_id)
        if view is not None and view.state not in TERMINAL:
            self.send(TaskCancelled(self.now(), task_id, reason))
        self._moved.pop(task_id, None)
        fut = self._outcomes.pop(task_id, None)
        if fut is not None and fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: a refusal nobody took is not an error to log

    # -- replicas -----------------------------------------------------------------

    def replica_joined(
        self, replica_id: str, kv_capacity_tokens: int, *, replaces: str | None = None
    ) -> None:
        self.send(ReplicaJoined(self.now(), replica_id, kv_capacity_tokens, replaces=replaces))
        lost = self._lost.get(replica_id)
        if lost is not None and lost.done():  # a replica back under a dead one's id
            del self._lost[replica_id]

    def replica_died(self, replica_id: str, reason: str, *, replace: bool | None = None) -> bool:
        """Report a replica's death (its actor died, its engine died, or it stopped
        answering health checks); its tasks are placed again. ``replace``: a replica
        will be started in its place (default: ``replace_dead``). False if already known."""
        view = self.core.replica(replica_id)
        if view is None or view.state is ReplicaState.DEAD:
            return False
        replacing = self.replace_dead if replace is None else replace
        self.send(ReplicaDied(self.now(), replica_id, replacing=replacing))
        self.lost(replica_id).set_result(reason)
        self._deaths.put_nowait((replica_id, reason))
        return True

    def replacement_failed(self, replica_id: str, reason: str) -> None:
        """The replica started in place of the dead ``replica_id`` did not come up."""
        self.send(ReplacementFailed(self.now(), replica_id, reason))

    async def deaths(self) -> AsyncIterator[tuple[str, str]]:
        """Every death reported, once, in order: ``(replica_id, reason)``."""
        while True:
            yield await self._deaths.get()

    def death_reason(self, replica_id: str) -> str:
        fut = self._lost.get(replica_id)
        return fut.result() if fut is not None and fut.done() else "died"

    def lost(self, replica_id: str) -> asyncio.Future[str]:
        """Resolves (with the reason) when the replica is declared dead: a call in
        flight there races it, so a hung replica cannot hold a task forever."""
        fut = self._lost.get(replica_id)
        if fut is None:
            fut = self._lost[replica_id] = asyncio.get_running_loop().create_future()
        return fut

    def live_replicas(self) -> list[str]:
        return [r.replica_id for r in self.core.replicas() if r.state is not ReplicaState.DEAD]

    async def drain(self, replica_id: str) -> None:
        """Stop placing tasks on the replica and wait until none is left there: running
        calls finish; tasks move at their next tool wait."""
        view = self.core.replica(replica_id)
        if view is None or view.state is ReplicaState.DEAD:
            raise ExecutorError(f"replica {replica_id} is not serving; nothing to drain")
        fut = self._drained.get(replica_id)
        if fut is None:
            fut = self._drained[replica_id] = asyncio.get_running_loop().create_future()
            if view.state is ReplicaState.ACTIVE:
                self.send(ReplicaDraining(self.now(), replica_id))
        try:
            await asyncio.shield(fut)
        finally:
            if fut.done():
                self._drained.pop(replica_id, None)

    @property
    def queue_depth(self) -> int:
        return self.core.queued
