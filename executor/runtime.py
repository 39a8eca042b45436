"""``Executor``: a long-lived runtime for many concurrent agent tasks.

It owns a pool of replicas (Ray actors hosting SGLang engines), the scheduler
core that places and orders their calls, a sandbox backend for the tools, the
journal and the telemetry::

    async with Executor(model="tiny", replicas=2) as ex:   # options: ExecutorConfig
        handles = [ex.submit(agent, goal) for goal in goals]
        for done in asyncio.as_completed([h.future for h in handles]):
            print((await done).output)

Everything runs on the event loop that called :meth:`Executor.start`; the
scheduler core is only touched from it. For plain synchronous code, see
:mod:`executor.sdk` (``run_task``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executor.agent import Agent, AgentDefinitionError
from executor.config import ExecutorConfig
from executor.dispatch import Dispatcher
from executor.errors import ExecutorError
from executor.fleet.control import ControlChannel
from executor.fleet.pool import ReplicaPool
from executor.fleet.registry import ReplicaRegistry
from executor.fleet_lifetime import EngineSessions, Fleet
from executor.loop.chat_format import ChatFormat
from executor.loop.driver import Services, TaskDriver, run_driver
from executor.loop.journal import Journal, JournalError
from executor.loop.machine import Finish
from executor.models import resolve
from executor.result import Step, TaskResult
from executor.telemetry import Telemetry
from executor.warmup import Warmer
from scheduler import SchedulerCore
from tools.builtin import BUILTIN_TOOLS
from tools.sandbox import SandboxBackend, create_backend


@dataclass
class TaskHandle:
    """A submitted task: its id and the future of its result."""

    task_id: str
    future: asyncio.Task[TaskResult]
    driver: TaskDriver | None = field(default=None, repr=False, compare=False)

    async def result(self) -> TaskResult:
        """The task's result, whatever its outcome: a failure, and a cancellation (the
        task's, by :meth:`Executor.close` or a service's cancel), are ``failed`` results.
        Raises only when the caller itself is cancelled while it waits."""
        try:
            return await self.future
        except asyncio.CancelledError:
            waiter = asyncio.current_task()
            if (waiter is not None and waiter.cancelling()) or not self.future.cancelled():
                raise
            return self._cancelled()

    def _cancelled(self) -> TaskResult:
        if self.driver is not None:
            return self.driver.result(Finish("failed", error="cancelled"), 0.0)
        return TaskResult(
            task_id=self.task_id, agent="", goal="", status="failed", error="cancelled"
        )

    def done(self) -> bool:
        return self.future.done()


class Executor:
    def __init__(
        self,
        config: ExecutorConfig | str | None = None,
        /,
        *,
        pool: ReplicaPool | None = None,
        on_step: Callable[[str, Step], None] | None = None,
        **options: Any,
    ) -> None:
        """``config``: the options (an :class:`ExecutorConfig`, or just a model name);
        ``options``: fields of ``ExecutorConfig`` over it (``Executor(model="tiny",
        replicas=2)``). ``pool``: serve on replicas that are already running (the
        executor does not stop them). ``on_step(task_id, step)``: every step of every
        task as it happens."""
        if isinstance(config, str):
            options = {"model": config, **options}
            config = None
        self.config = ExecutorConfig.build(config, **options)
        self.model = self.config.model
        self.on_step = on_step
        self.pool: ReplicaPool | None = pool
        self._owns_pool = pool is None
        self._fleet: Fleet | None = None
        self._warmer: Warmer | None = None
        self._services: Services | None = None
        self._tasks: set[asyncio.Task[TaskResult]] = set()

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> Executor:
        """Open what the executor needs, in order; if a step fails, what the earlier
        ones opened (and this executor owns) is released again, last first."""
        if self._services is not None:
            return self
        c = self.config
        model_path = await asyncio.to_thread(resolve, self.model)  # clear error before Ray
        chat = await asyncio.to_thread(ChatFormat.load, model_path)
        async with contextlib.AsyncExitStack() as opened:
            if isinstance(c.sandbox, SandboxBackend):
                sandboxes = c.sandbox
            else:
                sandboxes = await asyncio.to_thread(create_backend, c.sandbox)
                opened.push_async_callback(sandboxes.close)
            if isinstance(c.journal, Journal):
                journal = c.journal
            else:
                journal = Journal(c.journal)
                opened.callback(journal.close)
            if isinstance(c.telemetry, Telemetry):
                telemetry = c.telemetry
            else:
                telemetry = Telemetry(c.telemetry) if c.telemetry else Telemetry.from_env()
                opened.callback(telemetry.shutdown)
            if self.pool is None:
                pool = ReplicaPool(
                    c.replicas, c.replica_config(), address=c.address, progress=c.progress
                )
                await asyncio.to_thread(pool.start)  # (a pool that fails to start stops itself)
                opened.push_async_callback(self._stop_pool, pool)
                self.pool = pool
            control = ControlChannel(journal.path)
            opened.callback(control.close)
            replicas = ReplicaRegistry()
            sessions = EngineSessions(replicas)
            dispatcher = Dispatcher(
                SchedulerCore(c.scheduler),
                replace_dead=c.heal,
                retry_after_s=c.health.retry_after_s if c.health is not None else 0.0,
                on_release=sessions.release,
            )
            fleet = Fleet(
                self.pool,
                dispatcher,
                heal=c.heal,
                health=c.health,
                control=control,
                replicas=replicas,
                sessions=sessions,
            )
            opened.push_async_callback(fleet.close)
            warmer = Warmer(replicas, dispatcher)  # the core's WarmUp decisions, applied
            warmer.attach()
            for rid in c.replica_ids if c.replica_ids is not None else self.pool.ids:
                fleet.join(rid)
            fleet.start()
            opened.pop_all()  # started: from now on, close() releases them
        self._services = Services(
            model=self.model,
            dispatcher=dispatcher,
            replicas=fleet.replicas,
            chat=chat,
            journal=journal,
            telemetry=telemetry,
            sandboxes=sandboxes,
            web=c.web,
            on_step=self._on_step,
            kv_reserve_tokens=c.kv_reserve_tokens,
        )
        self._fleet = fleet
        self._warmer = warmer
        return self

    async def _stop_pool(self, pool: ReplicaPool) -> None:
        """(A pool this executor started, when a later step of its start failed.)"""
        self.pool = None
        await asyncio.to_thread(pool.shutdown)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        fleet, self._fleet, self._warmer = self._fleet, None, None
        if fleet is not None:
            await fleet.close()
            if fleet.control is not None:
                fleet.control.close()
        s, self._services = self._services, None
        if s is not None:
            await s.sandboxes.close()
            s.telemetry.shutdown()
            if not isinstance(self.config.journal, Journal):
                s.journal.close()
        if self.pool is not None and self._owns_pool:
            await asyncio.to_thread(self.pool.shutdown)
            self.pool = None

    async def __aenter__(self) -> Executor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def services(self) -> Services:
        if self._services is None:
            raise ExecutorError("the executor is not started (await executor.start())")
        return self._services

    @property
    def journal(self) -> Journal:
        return self.services.journal

    @property
    def telemetry(self) -> Telemetry:
        return self.services.telemetry

    @property
    def dispatcher(self) -> Dispatcher:
        return self.services.dispatcher

    @property
    def warmer(self) -> Warmer | None:
        """The one applying the core's ``WarmUp`` decisions (None until started)."""
        return self._warmer

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise ExecutorError("the executor is not started (await executor.start())")
        return self._fleet

    async def join(self, replica_id: str) -> None:
        """Give this executor's scheduler one more of its pool's replicas (a new or a
        healed one): new calls may be placed there from now on."""
        self.fleet.join(replica_id)

    async def drain(self, replica_id: str) -> None:
        """Take a replica out of service without failing anyone: no new placements
        there, its running calls finish, its tasks move at their next tool wait; then
        it is stopped. Returns when it is."""
        await self.fleet.drain(replica_id)

    # -- tasks --------------------------------------------------------------------

    def _check(self, agent: Agent) -> None:
        if not isinstance(agent, Agent):
            raise AgentDefinitionError(f"expected an Agent, got {type(agent).__name__}")
        if agent.model != self.model:
            raise AgentDefinitionError(
                f"agent {agent.name!r} wants model {agent.model!r} but this executor serves "
                f"{self.model!r}"
            )

    def submit(self, agent: Agent, goal: str, *, task_id: str | None = None) -> TaskHandle:
        """Start a task now; it runs concurrently with the others."""
        self._check(agent)
        task_id = task_id or f"task-{uuid.uuid4().hex[:12]}"
        driver = TaskDriver(self.services, agent, goal, task_id)
        return self._spawn(task_id, driver)

    async def asubmit(self, agent: Agent, goal: str, *, task_id: str | None = None) -> TaskHandle:
        """``submit`` off the event loop: the first prompt is rendered and the task
        journaled on the chat format's thread (a service submits here: its other
        requests are not held up meanwhile)."""
        self._check(agent)
        task_id = task_id or f"task-{uuid.uuid4().hex[:12]}"
        driver = await TaskDriver.open(self.services, agent, goal, task_id)
        return self._spawn(task_id, driver)

    def _spawn(self, task_id: str, driver: TaskDriver) -> TaskHandle:
        task = asyncio.get_running_loop().create_task(run_driver(driver), name=task_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        warmer = self._warmer
        if warmer is not None:
            warmer.remember(task_id, driver.prompt_so_far)
            task.add_done_callback(lambda _: warmer.forget(task_id))
        return TaskHandle(task_id, task, driver)

    async def run(self, agent: Agent, goal: str, *, task_id: str | None = None) -> TaskResult:
        return await self.submit(agent, goal, task_id=task_id).result()

    async def resume(self, task_id: str, agent: Agent | None = None) -> TaskResult:
        """Continue a task from its journal (after the driver died): no journaled tool runs again.

        ``agent`` is needed when the task used tools other than the built-ins.
        """
        return await self.resume_handle(task_id, agent).result()

    def resume_handle(self, task_id: str, agent: Agent | None = None) -> TaskHandle:
        """``resume`` without waiting: the resumed task's handle (a service resumes many)."""
        try:
            record = self.journal.get(task_id)
        except JournalError as exc:
            raise ExecutorError(str(exc)) from None
        if record.status != "running":
            raise ExecutorError(
                f"task {task_id} already ended ({record.status}); nothing to resume"
            )
        agent = agent or agent_from_journal(record.agent)
        self._check(agent)
        driver = TaskDriver(self.services, agent, record.goal, task_id, record=record)
        return self._spawn(task_id, driver)

    def _on_step(self, task_id: str, step: Step) -> None:
        self.refresh_gauges()
        if self.on_step is not None:
            self.on_step(task_id, step)

    def refresh_gauges(self) -> None:
        """Set the queue-depth and KV-occupancy gauges from the scheduler core now."""
        s = self._services
        if s is not None:
            s.telemetry.set_queue_depth(s.dispatcher.queue_depth)
            for view in s.dispatcher.core.replicas():
                s.telemetry.set_kv_occupancy(
                    view.replica_id, view.kv_reserved_tokens, view.kv_capacity_tokens
                )


def agent_from_journal(desc: dict[str, Any]) -> Agent:
    """Rebuild a journaled agent whose tools are all built-ins."""
    builtins = {t.name: t for t in BUILTIN_TOOLS}
    unknown = [n for n in desc["tools"] if n not in builtins]
    if unknown:
        raise AgentDefinitionError(
            f"the task's agent used tools that are not built-ins ({', '.join(unknown)}): "
            "pass the agent to resume it"
        )
    fields = {k: v for k, v in desc.items() if k != "tools"}
    return Agent(tools=[builtins[n] for n in desc["tools"]], **fields)
