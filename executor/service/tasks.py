"""The service's tasks: one long-lived Executor (one scheduler core), the tasks it runs,
their idempotency keys, their views, and the unfinished ones resumed at start.

The journal is the source of truth: a task's view and its events are read from it,
so they are the same before and after a restart of the service.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from typing import Any

from pydantic import ValidationError

from executor.agent import Agent, AgentDefinitionError
from executor.errors import ExecutorError, validation_problems
from executor.loop.journal import JournalError, TaskRecord
from executor.result import Step, TaskResult
from executor.runtime import Executor, TaskHandle, agent_from_journal
from executor.service.agents import inline_agent
from executor.service.idempotency import IdempotencyStore, KeyReused
from executor.service.models import (
    ReplicaView,
    ServiceStatus,
    SubmitRequest,
    TaskSummary,
    TaskView,
)

log = logging.getLogger("executor.service")
RECENT_RESULTS = 1024  # ended tasks whose TaskResult is kept; older ones: the journal's view


class UnknownAgent(ExecutorError):
    pass


class UnknownTask(ExecutorError):
    pass


class Busy(ExecutorError):
    """Too many tasks at once: try again later (``retry_after_s``: when, if known)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadAgent(ExecutorError):
    pass


class LastReplica(ExecutorError):
    """Draining it would leave no replica serving."""


class TaskService:
    def __init__(
        self, executor: Executor, agents: dict[str, Agent], *, max_active: int = 256
    ) -> None:
        self.executor = executor
        self.agents = agents
        self.max_active = max_active
        self.handles: dict[str, TaskHandle] = {}  # running or queued tasks only
        self.results: OrderedDict[str, TaskResult] = OrderedDict()  # the latest ended
        self.cancelled: set[str] = set()
        self.resumed: set[str] = set()
        self._drains: set[asyncio.Task[None]] = set()
        self.drained: set[str] = set()  # replicas this service drained (the core: dead)
        self._changed: dict[str, set[asyncio.Event]] = {}
        self.idempotency: IdempotencyStore | None = None
        self._preparing = 0  # submits being prepared off the loop (they hold a slot)

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.executor.start()
        self.idempotency = IdempotencyStore(self.executor.journal.path)
        self.resume_unfinished()

    async def close(self) -> None:
        await self.executor.close()
        if self.idempotency is not None:
            self.idempotency.close()

    def on_step(self, task_id: str, step: Step) -> None:
        self._wake(task_id)

    def _wake(self, task_id: str) -> None:
        for event in self._changed.get(task_id, ()):
            event.set()

    def resume_unfinished(self) -> list[str]:
        """Continue every task the journal has as running (a crash left them so)."""
        journal = self.executor.journal
        resumed = []
        for task_id in journal.unfinished():
            if task_id in self.handles:
                continue
            record = journal.get(task_id)
            try:
                agent = self.agents.get(str(record.agent.get("name"))) or agent_from_journal(
                    record.agent
                )
                self._track(self.executor.resume_handle(task_id, agent))
            except ExecutorError as exc:
                log.warning("cannot resume task %s: %s", task_id, exc)
                journal.finish(task_id, "failed", error=f"not resumed after a restart: {exc}")
                continue
            resumed.append(task_id)
            self.resumed.add(task_id)
        if resumed:
            log.info("resumed %d unfinished task(s): %s", len(resumed), ", ".join(resumed))
        return resumed

    # -- tasks --------------------------------------------------------------------

    def agent_for(self, req: SubmitRequest) -> Agent:
        if isinstance(req.agent, str):
            agent = self.agents.get(req.agent)
            if agent is None:
                raise UnknownAgent(
                    f"no agent {req.agent!r}; this service has: {', '.join(self.agents) or '-'}"
                )
        else:
            try:
                agent = inline_agent(req.agent, self.executor.model)
            except ValidationError as exc:
                raise BadAgent(validation_problems(exc, "agent")) from None
            except AgentDefinitionError as exc:
                raise BadAgent(str(exc)) from None
        if req.max_steps is not None:
            agent = agent.model_copy(update={"max_steps": req.max_steps})
        return agent

    def active(self) -> int:
        return self._preparing + sum(1 for h in self.handles.values() if not h.done())

    def submit(self, req: SubmitRequest, key: str | None, digest: str) -> tuple[str, bool]:
        """(task id, whether it is new). Raises ``KeyReused``, ``Busy``, ``UnknownAgent``,
        ``BadAgent``."""
        agent = self.agent_for(req)
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        if key is not None:
            assert self.idempotency is not None
            first = self.idempotency.claim(key, digest, task_id)
            if first != task_id:
                return first, False
        try:
            self._admit()
            self._track(self.executor.submit(agent, req.goal, task_id=task_id))
        except (ExecutorError, KeyReused):
            if key is not None and self.idempotency is not None:
                self.idempotency.release(key, task_id)
            raise
        return task_id, True

    async def asubmit(self, req: SubmitRequest, key: str | None, digest: str) -> tuple[str, bool]:
        """``submit`` off the event loop: the key's claim (a commit) in a thread, the task
        through ``Executor.asubmit``; a slot is held while it is prepared."""
        agent = self.agent_for(req)
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        store = self.idempotency
        if key is not None:
            assert store is not None
            first = await asyncio.to_thread(store.claim, key, digest, task_id)
            if first != task_id:
                return first, False
        try:
            self._admit()
            self._preparing += 1
            try:
                handle = await self.executor.asubmit(agent, req.goal, task_id=task_id)
            finally:
                self._preparing -= 1
            self._track(handle)
        except (ExecutorError, KeyReused):
            if key is not None and store is not None:
                await asyncio.to_thread(store.release, key, task_id)
            raise
        return task_id, True

    def _admit(self) -> None:
        queue_limit = self.executor.config.scheduler.admission_queue_limit
        if self.active() >= self.max_active:
            raise Busy(f"{self.max_active} tasks are running or queued (the service's limit)")
        if self.executor.dispatcher.queue_depth >= queue_limit:
            raise Busy(f"the admission queue is full ({queue_limit} tasks)")
        slo = self.executor.config.scheduler.shed_slo_s  # opt-in SLO-aware shedding
        wait = self.executor.dispatcher.core.predicted_wait_s() if slo is not None else None
        if slo is not None and wait is not None and wait > slo:
            raise Busy(
                f"shed: predicted queue wait {wait:.1f} s exceeds the SLO ({slo:g} s)",
                retry_after_s=wait - slo,
            )

    def _track(self, handle: TaskHandle) -> None:
        self.handles[handle.task_id] = handle
        handle.future.add_done_callback(lambda _: self._finished(handle.task_id))

    def _finished(self, task_id: str) -> None:
        """The task ended and its journal says how: forget its handle (the service's
        memory stays bounded by the tasks running, not by all it ever ran)."""
        handle = self.handles.pop(task_id, None)
        self.cancelled.discard(task_id)
        if handle is not None and not handle.future.cancelled():
            if handle.future.exception() is None:  # (retrieved: a failure is in its view)
                # the result as the driver made it (which steps were replayed after a
                # restart is not in the journal's steps): kept for the latest tasks only
                self.results[task_id] = handle.future.result()
                while len(self.results) > RECENT_RESULTS:
                    self.results.popitem(last=False)
        elif handle is not None:  # cancelled, maybe before it ever ran: journal its end
            journal = self.executor.journal
            if journal.get(task_id).status == "running":
                journal.finish(task_id, "failed", error="cancelled")
        self._wake(task_id)

    def cancel(self, task_id: str) -> ServiceStatus:
        record = self.record(task_id)
        handle = self.handles.get(task_id)
        if handle is not None and not handle.done():
            self.cancelled.add(task_id)
            handle.future.cancel()
            return "cancelled"
        return self.status(record)

    def record(self, task_id: str) -> TaskRecord:
        try:
            return self.executor.journal.get(task_id)
        except JournalError:
            raise UnknownTask(f"no task {task_id!r}") from None

    def status(self, record: TaskRecord) -> ServiceStatus:
        if record.status == "running":
            handle = self.handles.get(record.task_id)
            if handle is not None and handle.done():
                return "cancelled" if record.task_id in self.cancelled else "failed"
            view = self.executor.dispatcher.core.task(record.task_id)
            if view is not None and view.state.value == "queued":
                return "queued"
            return "running"
        if record.status == "failed" and record.error == "cancelled":
            return "cancelled"
        status: ServiceStatus = record.status  # type: ignore[assignment]
        return status

    def view(self, task_id: str) -> TaskView:
        result = self.results.get(task_id)
        if result is not None:
            return TaskView(**{**result.model_dump(), "status": result.status})
        record = self.record(task_id)
        steps: list[Any] = [
            info for p in record.payloads if (info := getattr(p, "info", None)) is not None
        ]
        return TaskView(
            task_id=task_id,
            agent=str(record.agent.get("name")),
            goal=record.goal,
            status=self.status(record),
            output=record.output,
            error=record.error,
            steps=steps,
            latency_s=record.updated_at - record.created_at,
            resumed=task_id in self.resumed,
        )

    def page(self, status: str | None, limit: int, offset: int) -> list[TaskSummary]:
        return self._summaries(status, self._records(status, limit, offset))

    async def apage(self, status: str | None, limit: int, offset: int) -> list[TaskSummary]:
        """``page`` with the journal's reads (a record per row) in a thread, off the loop."""
        records = await asyncio.to_thread(self._records, status, limit, offset)
        return self._summaries(status, records)

    def _records(
        self, status: str | None, limit: int, offset: int
    ) -> list[tuple[dict[str, Any], TaskRecord]]:
        journal_status = {"queued": "running", "cancelled": "failed"}.get(status or "", status)
        rows = self.executor.journal.list(limit, status=journal_status, offset=offset)
        return [(row, self.executor.journal.get(row["task_id"])) for row in rows]

    def _summaries(
        self, status: str | None, records: list[tuple[dict[str, Any], TaskRecord]]
    ) -> list[TaskSummary]:
        out = []
        for row, record in records:
            s = self.status(record)
            if status is None or s == status:
                out.append(TaskSummary(**{**row, "status": s}))
        return out

    def watch(self, task_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._changed.setdefault(task_id, set()).add(event)
        return event

    def unwatch(self, task_id: str, event: asyncio.Event) -> None:
        watchers = self._changed.get(task_id)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._changed[task_id]

    # -- replicas -----------------------------------------------------------------

    def replicas(self) -> list[ReplicaView]:
        return [
            ReplicaView(
                replica_id=v.replica_id,
                state="drained" if v.replica_id in self.drained else v.state.value,
                kv_capacity_tokens=v.kv_capacity_tokens,
                kv_reserved_tokens=v.kv_reserved_tokens,
                running_calls=v.running_calls,
            )
            for v in self.executor.dispatcher.core.replicas()
        ]

    def drain(self, replica_id: str) -> None:
        """Start draining a replica (its tasks move at their next tool wait)."""
        if len(self.executor.dispatcher.live_replicas()) < 2:
            raise LastReplica(f"replica {replica_id} is the last one serving; add one first")

        async def drain() -> None:
            try:
                await self.executor.drain(replica_id)
            except ExecutorError as exc:
                log.warning("drain of %s failed: %s", replica_id, exc)
                return
            self.drained.add(replica_id)

        task = asyncio.get_running_loop().create_task(drain())
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    def ready(self) -> bool:
        try:
            return bool(self.executor.dispatcher.live_replicas())
        except ExecutorError:  # not started yet
            return False
