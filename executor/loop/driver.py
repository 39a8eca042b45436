"""The task driver: performs the task machine's actions, one at a time.

For each action of the :class:`~executor.loop.machine.TaskMachine` it does the
I/O (the scheduler's permission, the replica's call, the sandboxed tool, the
chat format's rendering), commits what happened to the journal, and gives the
committed step back to the machine, which decides what comes next. The driver
decides nothing about the task itself; it only handles the call's plumbing:
waiting for the scheduler, retrying a call the scheduler re-placed after its
replica died, and saying so (journal, trace, result).

Outcomes: ``succeeded``, ``step_limit``, ``failed`` (the scheduler refused the
task, a replica refused its prompt, or its replicas died beyond the migration
limit), each with a clear message.

One failure channel: whatever goes wrong in a task's run (its sandbox does not
open, a tool backend raises, a bug here) ends the task ``failed``, journaled
with the reason (the exception's type and message), its KV released, its
traceback logged at ERROR, and its result says so; :func:`run_driver` does not
raise. Only cancellation propagates (journaled as ``failed``: ``cancelled``).

Off the event loop: the journal's commits go to its writer thread (``aappend``:
the driver awaits its step on disk before the next), and the chat format renders
and tokenizes on its own thread. The driver tells the dispatcher what happened
(arrived, tool started, tool finished or next call, finished); the fit of every
call is checked here, against the live replicas' KV pools (:mod:`executor.fleet.fit`),
before the scheduler is asked for a place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from executor.agent import Agent
from executor.dispatch import Dispatcher, Grant, TaskRefused
from executor.errors import (
    ExecutorError,
    InvalidRequestError,
    ReplicaUnavailableError,
    ReplicaUnreachableError,
)
from executor.fleet.fit import check_fits, shortfall
from executor.fleet.generation import GenerateRequest, GenerateResult, TokenDelta
from executor.fleet.handle import ReplicaHandle
from executor.fleet.registry import ReplicaRegistry
from executor.loop.chat_format import ChatFormat
from executor.loop.journal import Journal, TaskRecord
from executor.loop.machine import Call, Finish, Observe, RunTool, TaskMachine
from executor.loop.reply import answer_spec, reply_format, reply_schema
from executor.loop.steps import (
    CallPayload,
    FailoverPayload,
    ObservationPayload,
    Payload,
    ToolStartPayload,
)
from executor.result import CallStep, FailoverStep, Step, TaskResult
from executor.sampling import SamplingParams
from executor.telemetry import Telemetry
from tools.context import ToolContext
from tools.sandbox import Sandbox, SandboxBackend
from tools.toolbox import Toolbox
from tools.web.policy import WebPolicy

log = logging.getLogger(__name__)

#: Tokens an observation is expected to add, for the KV reservation of a task.
OBSERVATION_TOKENS = 256

#: The failures a task ends with on purpose: said in its result, no traceback logged.
EXPECTED_FAILURES = (TaskRefused, InvalidRequestError, ReplicaUnavailableError)


def failure_reason(exc: BaseException) -> str:
    """A failed task's error: an expected failure's own message; anything else, the
    exception's type and message."""
    if isinstance(exc, EXPECTED_FAILURES):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Services:
    """What a task driver needs from its executor."""

    model: str
    dispatcher: Dispatcher
    replicas: ReplicaRegistry
    chat: ChatFormat
    journal: Journal
    telemetry: Telemetry
    sandboxes: SandboxBackend
    web: WebPolicy
    on_step: Callable[[str, Step], None] | None = None
    kv_reserve_tokens: int | None = None


def system_prompt(agent: Agent) -> str:
    return f"{agent.instructions}\n\n{reply_format()}"


def first_prompt(agent: Agent, goal: str, chat: ChatFormat) -> list[int]:
    specs = [t.openai_spec() for t in agent.tools] + [answer_spec(agent)]
    return chat.prompt(system_prompt(agent), goal, specs)[1]


def check_task(
    agent: Agent, goal: object, chat: ChatFormat, context_tokens: int | None
) -> list[int]:
    """The task's first prompt, if the task can run at all: a goal that says something,
    and a first call that fits a replica (``context_tokens``; None: not known yet)."""
    if not isinstance(goal, str) or not goal.strip():
        raise ExecutorError("the goal is empty: say what the agent should do")
    ids = first_prompt(agent, goal, chat)
    need = len(ids) + agent.sampling.max_new_tokens
    if shortfall(len(ids), agent.sampling.max_new_tokens, context_tokens):
        raise ExecutorError(
            f"the task's first call needs {need} tokens (a prompt of {len(ids)}: the agent's "
            f"instructions and tools and the goal, plus {agent.sampling.max_new_tokens} for "
            f"the reply) but a replica holds {context_tokens}; shorten the goal or give the "
            "replicas a larger max_total_tokens"
        )
    return ids


def context_tokens(replicas: ReplicaRegistry) -> int | None:
    """The most tokens one call may have on every live replica (None: none has joined)."""
    return min((h.context_tokens for h in replicas), default=None)


async def generate_unless_lost(
    replicas: ReplicaRegistry,
    dispatcher: Dispatcher,
    replica_id: str,
    request: GenerateRequest | dict[str, Any],
    on_delta: Callable[[TokenDelta], None] | None = None,
) -> GenerateResult:
    """One call on a replica, abandoned as soon as the replica is declared dead (by a
    health check, or by another call): a hung engine holds no task. The driver's calls
    and the gateway's go through it. With ``on_delta``, the call streams: each step's
    tokens go to it as they decode (``ReplicaHandle.astream``)."""
    handle = replicas.get(replica_id)
    lost = dispatcher.lost(replica_id)
    if handle is None:
        raise ReplicaUnavailableError(replica_id, "not in the pool")

    async def streamed(handle: ReplicaHandle, sink: Callable[[TokenDelta], None]) -> GenerateResult:
        async for item in handle.astream(request):
            if isinstance(item, GenerateResult):
                return item
            sink(item)
        raise ReplicaUnreachableError(replica_id, "the stream ended without a result")

    if not lost.done():
        call = asyncio.ensure_future(
            handle.agenerate(request) if on_delta is None else streamed(handle, on_delta)
        )
        racing: set[asyncio.Future[Any]] = {call, lost}
        try:
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not call.done():
                call.cancel()
        if not lost.done():
            return call.result()
        # the replica's death is what counts: the call's own error is not reported
        call.add_done_callback(lambda c: c.cancelled() or c.exception())
    raise ReplicaUnavailableError(replica_id, lost.result())


class TaskDriver:
    def __init__(
        self,
        services: Services,
        agent: Agent,
        goal: str,
        task_id: str,
        record: TaskRecord | None = None,
        *,
        prompt_ids: list[int] | None = None,
    ) -> None:
        """A new task (checked and journaled now), or, with ``record``, a journaled one to
        resume, or, with ``prompt_ids``, a new one already checked and journaled
        (:meth:`open`, off the event loop)."""
        self.services = services
        self.agent = agent
        self.goal = goal
        self.task_id = task_id
        self.toolbox = Toolbox(agent.tools)
        self._samplings: dict[str, SamplingParams] = {}
        self.resumed = record is not None
        self._in_core = False  # the core knows the task (it arrived in this run)
        self._tool_ran = False  # a tool ran since the task's last call
        if prompt_ids is not None:
            self.machine = TaskMachine(agent, task_id, prompt_ids)
        elif record is None:
            ids = check_task(agent, goal, services.chat, context_tokens(services.replicas))
            services.journal.create_task(task_id, agent.describe(), goal, ids)
            self.machine = TaskMachine(agent, task_id, ids)
        else:
            self.machine = TaskMachine.replay(agent, task_id, record.prompt_ids, record.payloads)
        self._emitted = len(self.machine.steps)  # journaled steps are not announced again
        self.machine.resumed()

    @classmethod
    async def open(cls, services: Services, agent: Agent, goal: str, task_id: str) -> TaskDriver:
        """A new task, checked (its first prompt rendered) and journaled, both on the chat
        format's thread: the event loop is not blocked."""
        context = context_tokens(services.replicas)

        def prepare() -> list[int]:  # one hop off the loop: a busy loop makes each costly
            ids = check_task(agent, goal, services.chat, context)
            services.journal.create_task(task_id, agent.describe(), goal, ids)
            return ids

        ids = await services.chat.run(prepare)
        return cls(services, agent, goal, task_id, prompt_ids=ids)

    def prompt_so_far(self) -> list[int]:
        """The task's transcript now (its last prompt and reply, and any observation
        since): what a warm-up prefills ahead of its next call."""
        return list(self.machine.ids)

    async def run(self) -> TaskResult:
        s = self.services
        started = time.perf_counter()
        finish = Finish("failed")
        span_of = s.telemetry.task_span(agent=self.agent.name, task_id=self.task_id, model=s.model)
        with span_of as span:
            sandbox: Sandbox | None = None
            try:
                sandbox = await s.sandboxes.open(self.task_id)
                finish = await self._drive(
                    ToolContext(sandbox=sandbox, web=s.web, task_id=self.task_id)
                )
            except EXPECTED_FAILURES as exc:
                finish = Finish("failed", error=str(exc))
            except Exception as exc:  # a sandbox, a tool backend, a bug: see run_driver
                log.error("task %s failed: %s", self.task_id, failure_reason(exc), exc_info=True)
                finish = Finish("failed", error=failure_reason(exc))
            finally:
                s.dispatcher.cancelled(self.task_id, finish.error or "ended")
                if sandbox is not None:
                    await self._close(sandbox)
            span.set_attribute("executor.task.status", finish.status)
            if finish.error:
                span.set_attribute("error.type", finish.status)
        latency = time.perf_counter() - started
        s.telemetry.record_task(agent=self.agent.name, latency_s=latency, status=finish.status)
        await s.journal.afinish(
            self.task_id, finish.status, output=finish.output, error=finish.error
        )
        return self.result(finish, latency)

    def result(self, finish: Finish, latency_s: float) -> TaskResult:
        """The task's result as it stands, ended with ``finish``."""
        return TaskResult(
            task_id=self.task_id,
            agent=self.agent.name,
            goal=self.goal,
            status=finish.status,
            output=finish.output,
            error=finish.error,
            steps=list(self.machine.steps),
            latency_s=latency_s,
            resumed=self.resumed,
        )

    async def _close(self, sandbox: Sandbox) -> None:
        try:
            await sandbox.close()
        except Exception:  # the task's outcome stands; the host's leftover is logged
            log.error("closing the sandbox of task %s failed", self.task_id, exc_info=True)

    async def _drive(self, ctx: ToolContext) -> Finish:
        self._announce()  # (a resumed task's interrupted tool)
        while True:
            action = self.machine.next_action()
            match action:
                case Finish():
                    after_call = self._in_core and not self._tool_ran
                    self.services.dispatcher.finished(self.task_id, after_call=after_call)
                    return action
                case Call():
                    await self._call(action)
                case RunTool():
                    await self._tool(action, ctx)
                case Observe():
                    chat = self.services.chat
                    text, ids = await chat.aobservation(action.after_ids, action.text)
                    await self._record(ObservationPayload(ids=ids, text=text))

    async def _record(self, payload: Payload) -> None:
        """Commit a step, then give it to the machine: the journal is never behind."""
        await self.services.journal.aappend(self.task_id, payload)
        self.machine.apply(payload)
        self._announce()

    def _announce(self) -> None:
        on_step, steps = self.services.on_step, self.machine.steps
        while self._emitted < len(steps):
            if on_step is not None:
                on_step(self.task_id, steps[self._emitted])
            self._emitted += 1

    # -- a model call ---------------------------------------------------------------

    async def _call(self, action: Call) -> None:
        """One model call on the granted replica. If the replica dies under it (or is
        declared dead), the scheduler places the task again and the call is retried
        there, replaying the history (a cold prefill), up to the migration limit; a
        transient failure is retried where it was, up to the retry limit."""
        s = self.services
        sampling = self._sampling(action.tool_choice)
        limit = context_tokens(s.replicas)
        check_fits(len(action.input_ids), sampling.max_new_tokens, limit, "the replicas")
        grant = await self._ready(action)
        waited = grant.waited_s
        while True:
            request = GenerateRequest(
                input_ids=action.input_ids,
                sampling=sampling,
                rid=_request_id(self.task_id, action.step),
                session_id=self.task_id,
            )
            chat = s.telemetry.chat_span(model=s.model, task_id=self.task_id, step=action.step)
            with chat as span:
                if grant.moved_from is not None:
                    await self._failover(span, action.step, grant.moved_from)
                try:
                    result = await self._generate(grant.replica_id, request)
                except (ReplicaUnavailableError, ReplicaUnreachableError) as exc:
                    # dead: the core places the task again; unreachable: it retries here
                    dead = isinstance(exc, ReplicaUnavailableError)
                    s.telemetry.event(
                        span,
                        "replica_lost" if dead else "call_failed",
                        replica=grant.replica_id,
                        reason=exc.reason,
                    )
                    retry = s.dispatcher.after_replica_death if dead else s.dispatcher.call_failed
                    grant = await retry(self.task_id, grant.replica_id, exc.reason)
                    waited += grant.waited_s
                    continue
                s.telemetry.record_call(
                    span,
                    replica_id=result.replica_id,
                    input_tokens=result.prompt_tokens,
                    output_tokens=result.completion_tokens,
                    cached_tokens=result.cached_tokens,
                    queue_wait_s=waited,
                    latency_s=result.latency_s,
                    finish_reason=result.finish_reason,
                )
            break
        s.dispatcher.call_finished(
            self.task_id,
            result.replica_id,
            prompt_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens,
            output_tokens=len(result.output_ids),
            latency_s=result.latency_s,
        )
        info = CallStep(
            step=action.step,
            replica_id=result.replica_id,
            prompt_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
            queue_wait_s=waited,
            finish_reason=result.finish_reason,
            reply=result.text,
        )
        await self._record(CallPayload(ids=result.output_ids, info=info))

    async def _ready(self, action: Call) -> Grant:
        """Tell the dispatcher what happened: the task arrived (its first call in this
        run), its tool finished, or its next call follows its last one directly."""
        s = self.services
        if not self._in_core:
            grant = await s.dispatcher.arrive(
                self.task_id,
                self.agent.name,
                self.agent.max_steps,
                self._expected_history(),
                prompt_tokens=self._first_prompt_tokens(action.input_ids),
            )
            self._in_core = True
        else:
            grant = await s.dispatcher.next_call(self.task_id, after_tool=self._tool_ran)
        self._tool_ran = False
        return grant

    def _sampling(self, tool_choice: str) -> SamplingParams:
        """The agent's sampling under its reply grammar for ``tool_choice`` (built once
        per choice: a task's calls mostly share one)."""
        sampling = self._samplings.get(tool_choice)
        if sampling is None:
            schema = json.dumps(reply_schema(self.agent, tool_choice))
            sampling = SamplingParams.model_validate(
                {**self.agent.sampling.model_dump(exclude_none=True), "json_schema": schema}
            )
            self._samplings[tool_choice] = sampling
        return sampling

    def _first_prompt_tokens(self, ids: list[int]) -> int:
        """What usage admission reserves the first call with (0: the expected history:
        an explicit ``kv_reserve_tokens`` is what a task starts with)."""
        return 0 if self.services.kv_reserve_tokens is not None else len(ids)

    def _expected_history(self) -> int:
        if self.services.kv_reserve_tokens is not None:
            return self.services.kv_reserve_tokens
        return self.machine.expected_peak_tokens(OBSERVATION_TOKENS)

    async def _failover(self, span: Any, step: int, dead: str) -> None:
        """Say (journal, trace, result) that the task's replica died and it moved."""
        s = self.services
        failover = FailoverStep(step=step, replica_id=dead, reason=s.dispatcher.death_reason(dead))
        s.telemetry.event(span, "failover", replica=dead, reason=failover.reason)
        await self._record(FailoverPayload(info=failover))

    async def _generate(self, replica_id: str, request: GenerateRequest) -> GenerateResult:
        s = self.services
        return await generate_unless_lost(s.replicas, s.dispatcher, replica_id, request)

    # -- a tool -----------------------------------------------------------------------

    async def _tool(self, action: RunTool, ctx: ToolContext) -> None:
        s = self.services
        await self._record(
            ToolStartPayload(call_id=action.call_id, tool=action.tool, arguments=action.arguments)
        )
        s.dispatcher.tool_started(self.task_id, action.tool, known=self._in_core)
        self._tool_ran = self._in_core
        t0 = time.perf_counter()
        with s.telemetry.tool_span(tool=action.tool, call_id=action.call_id):
            result = await self.toolbox.call(action.tool, action.arguments, ctx)
        await self._record(
            self.machine.tool_result(action, result.to_dict(), time.perf_counter() - t0)
        )


def _request_id(task_id: str, step: int) -> str:
    """Unique per attempt: a dead driver's call of the same step may still be in the engine."""
    return f"{task_id}-{step}-{uuid.uuid4().hex[:8]}"


async def run_driver(driver: TaskDriver) -> TaskResult:
    """Run a task to its end: never raises but for cancellation. Whatever escapes the
    driver (its journal or telemetry failing, a bug) still ends the task ``failed``
    with the reason, journaled, its KV released, and a result that says so."""
    started = time.perf_counter()
    try:
        return await driver.run()
    except asyncio.CancelledError:
        _end(driver, "cancelled")
        raise
    except Exception as exc:
        reason = failure_reason(exc)
        log.error("task %s failed: %s", driver.task_id, reason, exc_info=True)
        _end(driver, reason)
        return driver.result(Finish("failed", error=reason), time.perf_counter() - started)


def _end(driver: TaskDriver, reason: str) -> None:
    """The task failed outside the driver's own handling: release its place in the
    scheduler (its KV) and journal the failure, each as far as it still can be done."""
    s = driver.services
    try:
        s.dispatcher.cancelled(driver.task_id, reason)
    except Exception:
        log.error("releasing task %s in the scheduler failed", driver.task_id, exc_info=True)
    try:
        s.journal.finish(driver.task_id, "failed", error=reason)
    except Exception:
        log.error("journaling the end of task %s failed", driver.task_id, exc_info=True)
