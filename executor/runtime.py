"""``Executor``: a long-lived runtime for many concurrent agent tasks.

It owns a pool of replicas (Ray actors hosting SGLang engines), the scheduler
core that places and orders their calls, a sandbox backend for the tools, the
journal and the telemetry::

    async with Executor(model="tiny", replicas=2) as ex:
        handles = [ex.submit(agent, goal) for goal in goals]
        for done in asyncio.as_completed([h.future for h in handles]):
            print((await done).output)

Everything runs on the event loop that called :meth:`Executor.start`; the
scheduler core is only touched from it. For plain synchronous code, see
:mod:`executor.sdk` (``run_task``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from executor.agent import Agent, AgentDefinitionError
from executor.chat_format import ChatFormat
from executor.control import ControlChannel
from executor.dispatch import Dispatcher
from executor.errors import ExecutorError
from executor.fleet import Fleet
from executor.health import HealthConfig
from executor.journal import Journal, JournalError
from executor.models import resolve
from executor.pool import ReplicaPool
from executor.replica_config import ReplicaConfig
from executor.replica_handle import ReplicaHandle
from executor.result import Step, TaskResult
from executor.task_loop import Services, TaskLoop, run_loop
from executor.telemetry import Telemetry, TelemetryExporter
from scheduler import SchedulerConfig, SchedulerCore
from tools.builtin import BUILTIN_TOOLS
from tools.sandbox import SandboxBackend, create_backend
from tools.web.policy import WebPolicy


@dataclass
class TaskHandle:
    """A submitted task: its id and the future of its result."""

    task_id: str
    future: asyncio.Task[TaskResult]

    async def result(self) -> TaskResult:
        return await self.future

    def done(self) -> bool:
        return self.future.done()


class Executor:
    def __init__(
        self,
        model: str = "qwen2.5-coder-0.5b",
        replicas: int = 1,
        *,
        replica_config: ReplicaConfig | None = None,
        address: str | None = None,
        sandbox: str | SandboxBackend = "bwrap",
        journal: Journal | str | Path | None = None,
        telemetry: Telemetry | TelemetryExporter | None = None,
        scheduler: SchedulerConfig | None = None,
        web: WebPolicy | None = None,
        kv_reserve_tokens: int | None = None,
        on_step: Callable[[str, Step], None] | None = None,
        progress: bool = False,
        pool: ReplicaPool | None = None,
        replica_ids: list[str] | None = None,
        health: HealthConfig | None = HealthConfig(),  # noqa: B008 (frozen: shared is fine)
        heal: bool = True,
    ) -> None:
        """``pool``: serve on replicas that are already running (the executor does not
        stop them); ``replica_ids``: only these of the pool's replicas. ``health``: how
        hung replicas are found (None: only deaths a call runs into); ``heal``: start a
        new replica in place of each dead one."""
        self.config = replica_config or ReplicaConfig(model=model)
        if replica_config is not None and replica_config.model != model:
            self.config = replica_config.model_copy(update={"model": model})
        self.model = self.config.model
        self.replica_count = replicas
        self.address = address
        self._sandbox_spec = sandbox
        self._journal_spec = journal
        self._telemetry_spec = telemetry
        self.scheduler_config = scheduler or SchedulerConfig()
        self.web = web or WebPolicy()
        self.kv_reserve_tokens = kv_reserve_tokens
        self.on_step = on_step
        self.progress = progress
        self.pool: ReplicaPool | None = pool
        self._owns_pool = pool is None
        self.replica_ids = replica_ids
        self.health = health
        self.heal = heal
        self._fleet: Fleet | None = None
        self._services: Services | None = None
        self._tasks: set[asyncio.Task[TaskResult]] = set()

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> Executor:
        if self._services is not None:
            return self
        model_path = await asyncio.to_thread(resolve, self.model)  # clear error before Ray
        chat = await asyncio.to_thread(ChatFormat.load, model_path)
        sandboxes = (
            self._sandbox_spec
            if isinstance(self._sandbox_spec, SandboxBackend)
            else await asyncio.to_thread(create_backend, self._sandbox_spec)
        )
        journal = (
            self._journal_spec
            if isinstance(self._journal_spec, Journal)
            else Journal(self._journal_spec)
        )
        telemetry = (
            self._telemetry_spec
            if isinstance(self._telemetry_spec, Telemetry)
            else Telemetry(self._telemetry_spec)
            if self._telemetry_spec is not None
            else Telemetry.from_env()
        )
        if self.pool is None:
            pool = ReplicaPool(
                self.replica_count, self.config, address=self.address, progress=self.progress
            )
            try:
                await asyncio.to_thread(pool.start)
            except BaseException:
                await sandboxes.close()
                raise
            self.pool = pool
        dispatcher = Dispatcher(SchedulerCore(self.scheduler_config))
        replicas: dict[str, ReplicaHandle] = {}
        fleet = Fleet(
            self.pool, replicas, dispatcher, heal=self.heal, health=self.health,
            control=ControlChannel(journal.path),
        )  # fmt: skip
        for rid in self.replica_ids if self.replica_ids is not None else self.pool.ids:
            fleet.join(rid)
        self._services = Services(
            model=self.model, dispatcher=dispatcher, replicas=replicas, chat=chat,
            journal=journal, telemetry=telemetry, sandboxes=sandboxes, web=self.web,
            on_step=self._on_step, kv_reserve_tokens=self.kv_reserve_tokens,
        )  # fmt: skip
        self._fleet = fleet
        fleet.start()
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            await fleet.close()
            if fleet.control is not None:
                fleet.control.close()
        s, self._services = self._services, None
        if s is not None:
            await s.sandboxes.close()
            s.telemetry.shutdown()
            if not isinstance(self._journal_spec, Journal):
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
        if not isinstance(goal, str) or not goal.strip():
            raise ExecutorError("the goal is empty: say what the agent should do")
        task_id = task_id or f"task-{uuid.uuid4().hex[:12]}"
        loop = TaskLoop(self.services, agent, goal, task_id)
        return self._spawn(task_id, loop)

    def _spawn(self, task_id: str, loop: TaskLoop) -> TaskHandle:
        task = asyncio.get_running_loop().create_task(run_loop(loop), name=task_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return TaskHandle(task_id, task)

    async def run(self, agent: Agent, goal: str, *, task_id: str | None = None) -> TaskResult:
        return await self.submit(agent, goal, task_id=task_id).result()

    async def resume(self, task_id: str, agent: Agent | None = None) -> TaskResult:
        """Continue a task from its journal (after the driver died): no journaled tool runs again.

        ``agent`` is needed when the task used tools other than the built-ins.
        """
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
        loop = TaskLoop(self.services, agent, record.goal, task_id, record=record)
        return await self._spawn(task_id, loop).result()

    def _on_step(self, task_id: str, step: Step) -> None:
        s = self._services
        if s is not None:
            s.telemetry.set_queue_depth(s.dispatcher.queue_depth)
            for view in s.dispatcher.core.replicas():
                s.telemetry.set_kv_occupancy(
                    view.replica_id, view.kv_reserved_tokens, view.kv_capacity_tokens
                )
        if self.on_step is not None:
            self.on_step(task_id, step)


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
