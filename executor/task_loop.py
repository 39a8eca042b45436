"""One agent task, from goal to answer: think -> tool -> observe -> think ...

Each step goes through the scheduler (where and when the call may run), the
replica (one SGLang call on the task's append-only token transcript), the
journal (committed before the next step starts), and the task's sandbox (the
tool). A step that is in the journal is never done again: a resumed task
rebuilds its transcript from the journal, reuses every journaled tool result,
and never re-runs a tool whose run was interrupted (its effects are unknown;
the model is told so).

Outcomes: ``succeeded`` (a final answer), ``step_limit`` (``max_steps`` calls
without one), ``failed`` (the scheduler refused the task, a replica refused
its prompt, or its replicas died beyond the migration limit), each with a
clear message. A reply that is not a valid call, or a call with bad
arguments, is shown to the model as an error observation; it never crashes
the task.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from executor.agent import FINAL_ANSWER, Agent
from executor.chat_format import ChatFormat
from executor.dispatch import Dispatcher, Grant, TaskRefused
from executor.errors import ExecutorError, InvalidRequestError, ReplicaUnavailableError
from executor.generation import GenerateResult
from executor.journal import Journal, TaskRecord
from executor.replica_handle import ReplicaHandle
from executor.reply import (
    FinalAnswer,
    InvalidReply,
    Reply,
    ToolCall,
    answer_spec,
    parse_reply,
    reply_format,
    reply_schema,
)
from executor.result import CallStep, FailoverStep, Step, TaskResult, TaskStatus, ToolStep
from executor.telemetry import Telemetry
from tools.context import ToolContext
from tools.result import ToolResult
from tools.sandbox.base import SandboxBackend
from tools.toolbox import Toolbox
from tools.web.policy import WebPolicy

#: Appended to every tool observation: small models otherwise call the tool again
#: after it answered (measured: 0/3 without it, 3/3 with it; see PLATFORM.md).
ANSWER_HINT = "(If this answers the task, call final_answer now.)"
INTERRUPTED = (
    "error: this tool call was interrupted when the executor stopped; its effects are "
    "unknown and it was not run again. Check its effects before repeating it."
)
REPEATED = "(You already made this call; its result is above. Call final_answer now.)"
#: Tokens an observation is expected to add, for the KV reservation of a task.
OBSERVATION_TOKENS = 256


@dataclass
class Services:
    """What a task loop needs from its executor."""

    model: str
    dispatcher: Dispatcher
    replicas: dict[str, ReplicaHandle]
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


class TaskLoop:
    def __init__(
        self, services: Services, agent: Agent, goal: str, task_id: str,
        record: TaskRecord | None = None,
    ) -> None:  # fmt: skip
        self.s = services
        self.agent = agent
        self.goal = goal
        self.task_id = task_id
        self.toolbox = Toolbox(agent.tools)
        self.steps: list[Step] = []
        self.resumed = record is not None
        self.tool_choice = agent.tool_choice
        self.pending: Reply | None = None
        self.pending_tool: dict[str, Any] | None = None  # journaled tool_start/tool_result
        self.last_output: list[int] = []
        self.seen: dict[str, str] = {}  # tool call -> its result (the loop guard)
        self.last_result: str | None = None
        if record is None:
            self.ids = first_prompt(agent, goal, services.chat)
            self.calls = 0
            services.journal.create_task(task_id, agent.describe(), goal, self.ids)
        else:
            self._restore(record)

    # -- resume -------------------------------------------------------------------

    def _restore(self, record: TaskRecord) -> None:
        """Rebuild the loop's state from the journal: transcript, calls made, the
        reply (and tool run) that was in progress."""
        self.ids = record.transcript_ids()
        self.calls = 0
        pending_call: dict[str, Any] | None = None
        starts: dict[str, dict[str, Any]] = {}
        for step in record.steps:
            p = step.payload
            if step.kind == "call":
                self.calls += 1
                pending_call = p
                self.last_output = p["ids"]
                self.steps.append(CallStep(**p["info"]))
            elif step.kind == "tool_start":
                starts[p["call_id"]] = p
                if self.agent.reset_tool_choice:
                    self.tool_choice = "auto"
            elif step.kind == "tool_result":
                info = p["info"]
                self.steps.append(ToolStep(**{**info, "replayed": True}))
                self._remember(ToolCall(info["tool"], info["arguments"]), p["result"]["text"])
            elif step.kind == "observation":
                pending_call = None
            elif step.kind == "failover":
                self.steps.append(FailoverStep(**p["info"]))
        if pending_call is not None:  # a reply whose observation is not journaled yet
            self.pending = parse_reply(pending_call["info"]["reply"], self.agent)
            call_id = f"{self.task_id}-{self.calls}"
            results = record.tool_results()
            if call_id in results:
                self.pending_tool = results[call_id]
            elif call_id in starts:
                self.pending_tool = {"call_id": call_id, "interrupted": True}

    # -- the loop -----------------------------------------------------------------

    def _expected_history(self) -> int:
        if self.s.kv_reserve_tokens is not None:
            return self.s.kv_reserve_tokens
        per_step = self.agent.sampling.max_new_tokens + OBSERVATION_TOKENS
        return len(self.ids) + (self.agent.max_steps - self.calls) * per_step

    async def run(self) -> TaskResult:
        started = time.perf_counter()
        status: TaskStatus = "failed"
        output: str | None = None
        error: str | None = None
        with self.s.telemetry.task_span(
            agent=self.agent.name, task_id=self.task_id, model=self.s.model
        ) as span:
            sandbox = await self.s.sandboxes.open(self.task_id)
            try:
                status, output, error = await self._loop(sandbox)
            except (TaskRefused, InvalidRequestError, ReplicaUnavailableError) as exc:
                error = str(exc)
            finally:
                self.s.dispatcher.cancelled(self.task_id, error or "ended")
                await sandbox.close()
            span.set_attribute("executor.task.status", status)
            if error:
                span.set_attribute("error.type", status)
        self.s.journal.finish(self.task_id, status, output=output, error=error)
        latency = time.perf_counter() - started
        self.s.telemetry.record_task(agent=self.agent.name, latency_s=latency, status=status)
        return TaskResult(
            task_id=self.task_id, agent=self.agent.name, goal=self.goal, status=status,
            output=output, error=error, steps=self.steps, latency_s=latency,
            resumed=self.resumed,
        )  # fmt: skip

    async def _loop(self, sandbox: Any) -> tuple[TaskStatus, str | None, str | None]:
        ctx = ToolContext(sandbox=sandbox, web=self.s.web, task_id=self.task_id)
        while True:
            if self.pending is None:  # (not None when resuming with a reply in hand)
                if self.calls >= self.agent.max_steps:
                    return "step_limit", None, f"no final answer in {self.agent.max_steps} calls"
                await self._call(await self._grant())
            reply, self.pending = self.pending, None
            if isinstance(reply, FinalAnswer):
                self.s.dispatcher.finished(self.task_id)
                return "succeeded", reply.text, None
            if self.calls >= self.agent.max_steps:
                # the last call did not answer: no call is left to read an observation
                self.s.dispatcher.finished(self.task_id)
                return "step_limit", None, f"no final answer in {self.agent.max_steps} calls"
            if isinstance(reply, InvalidReply):
                text = f"error: {reply.reason}. {reply_format()}"
            else:
                assert isinstance(reply, ToolCall)
                text = await self._tool(reply, ctx)
            obs_text, obs_ids = self.s.chat.observation(self.last_output, text)
            self.s.journal.append(self.task_id, "observation", {"ids": obs_ids, "text": obs_text})
            self.ids = self.ids + obs_ids
            self.pending_tool = None

    async def _grant(self) -> Grant:
        if self.calls == 0 or self.s.dispatcher.core.task(self.task_id) is None:
            return await self.s.dispatcher.arrive(
                self.task_id, self.agent.name, self.agent.max_steps, self._expected_history()
            )
        return await self.s.dispatcher.next_call(self.task_id)

    async def _call(self, grant: Grant) -> None:
        """One model call on the granted replica; sets ``self.pending`` to the reply.

        If the replica dies under the call (or is declared dead), the task is placed
        again by the scheduler and the call is retried there: its history is
        replayed, a cold prefill (up to the migration limit)."""
        schema = json.dumps(reply_schema(self.agent, self.tool_choice))
        sampling = {**self.agent.sampling.model_dump(exclude_none=True), "json_schema": schema}
        step = self.calls + 1
        waited = grant.waited_s
        while True:
            request = {"input_ids": self.ids, "sampling": sampling,
                       "rid": _request_id(self.task_id, step)}  # fmt: skip
            with self.s.telemetry.chat_span(
                model=self.s.model, task_id=self.task_id, step=step
            ) as span:
                if grant.moved_from is not None:
                    self._failover(span, step, grant.moved_from)
                try:
                    result = await self._generate(grant.replica_id, request)
                except ReplicaUnavailableError as exc:
                    self.s.telemetry.event(
                        span, "replica_lost", replica=grant.replica_id, reason=exc.reason
                    )
                    grant = await self.s.dispatcher.after_replica_death(
                        self.task_id, grant.replica_id, exc.reason
                    )
                    waited += grant.waited_s
                    continue
                self.s.telemetry.record_call(
                    span, replica_id=result.replica_id, input_tokens=result.prompt_tokens,
                    output_tokens=result.completion_tokens, cached_tokens=result.cached_tokens,
                    queue_wait_s=waited, latency_s=result.latency_s,
                    finish_reason=result.finish_reason,
                )  # fmt: skip
            break
        info = CallStep(
            step=step, replica_id=result.replica_id, prompt_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens, completion_tokens=result.completion_tokens,
            latency_s=result.latency_s, queue_wait_s=waited, finish_reason=result.finish_reason,
            reply=result.text,
        )  # fmt: skip
        self.s.journal.append(
            self.task_id, "call", {"ids": result.output_ids, "info": info.model_dump()}
        )
        self.s.dispatcher.call_finished(
            self.task_id, result.replica_id, prompt_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens, output_tokens=len(result.output_ids),
            latency_s=result.latency_s,
        )  # fmt: skip
        self.calls = step
        self.ids = self.ids + result.output_ids
        self.last_output = result.output_ids
        self.pending = parse_reply(result.text, self.agent)
        self._emit(info)

    def _failover(self, span: Any, step: int, dead: str) -> None:
        """Say (journal, trace, result) that the task's replica died and it moved."""
        failover = FailoverStep(
            step=step, replica_id=dead, reason=self.s.dispatcher.death_reason(dead)
        )
        self.s.telemetry.event(span, "failover", replica=dead, reason=failover.reason)
        self.s.journal.append(self.task_id, "failover", {"info": failover.model_dump()})
        self._emit(failover)

    async def _generate(self, replica_id: str, request: dict[str, Any]) -> GenerateResult:
        """The call on the replica, abandoned as soon as the replica is declared dead
        (by a health check, or by another task's call): a hung engine holds no task."""
        handle = self.s.replicas.get(replica_id)
        lost = self.s.dispatcher.lost(replica_id)
        if handle is None:
            raise ReplicaUnavailableError(replica_id, "not in the pool")
        if not lost.done():
            call = asyncio.ensure_future(handle.agenerate(request))
            try:
                await asyncio.wait({call, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not call.done():
                    call.cancel()
            if not lost.done():
                return call.result()
            # the replica's death is what counts: the call's own error is not reported
            call.add_done_callback(lambda c: c.cancelled() or c.exception())
        raise ReplicaUnavailableError(replica_id, lost.result())

    async def _tool(self, call: ToolCall, ctx: ToolContext) -> str:
        call_id = f"{self.task_id}-{self.calls}"
        if self.agent.reset_tool_choice:
            self.tool_choice = "auto"
        done = self.pending_tool
        if done is not None and done.get("interrupted"):
            step = ToolStep(
                step=self.calls, call_id=call_id, tool=call.tool, arguments=call.arguments,
                ok=False, output=INTERRUPTED, duration_s=0.0, interrupted=True,
            )  # fmt: skip
            self._emit(step)
            return INTERRUPTED
        if done is not None:  # journaled before a crash: reuse, never run again
            return str(done["info"]["output"])
        earlier = self.seen.get(_call_key(call))
        if earlier is not None and self.agent.answer_on_repeat:
            self.tool_choice = FINAL_ANSWER
            return f"{earlier}\n{REPEATED}"
        self.s.journal.append(
            self.task_id, "tool_start",
            {"call_id": call_id, "tool": call.tool, "arguments": call.arguments},
        )  # fmt: skip
        self.s.dispatcher.tool_started(self.task_id, call.tool)
        t0 = time.perf_counter()
        with self.s.telemetry.tool_span(tool=call.tool, call_id=call_id):
            result: ToolResult = await self.toolbox.call(call.tool, call.arguments, ctx)
        text = f"{result.text}\n{ANSWER_HINT}" if result.ok else result.text
        self._remember(call, result.text)
        step = ToolStep(
            step=self.calls, call_id=call_id, tool=call.tool, arguments=call.arguments,
            ok=result.ok, output=text, duration_s=time.perf_counter() - t0,
        )  # fmt: skip
        self.s.journal.append(
            self.task_id, "tool_result",
            {"call_id": call_id, "result": result.to_dict(), "info": step.model_dump()},
        )  # fmt: skip
        self._emit(step)
        return text

    def _remember(self, call: ToolCall, output: str) -> None:
        """Feed the loop guard: the next reply must answer when nothing new can come."""
        if self.agent.answer_on_repeat and output == self.last_result:
            self.tool_choice = FINAL_ANSWER
        self.seen[_call_key(call)] = output
        self.last_result = output

    def _emit(self, step: Step) -> None:
        self.steps.append(step)
        if self.s.on_step is not None:
            self.s.on_step(self.task_id, step)


def _request_id(task_id: str, step: int) -> str:
    """Unique per attempt: a dead driver's call of the same step may still be in the engine."""
    return f"{task_id}-{step}-{uuid.uuid4().hex[:8]}"


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.tool, call.arguments], sort_keys=True)


async def run_loop(loop: TaskLoop) -> TaskResult:
    """Run a task loop; an unexpected error still ends the task as failed, journaled."""
    try:
        return await loop.run()
    except asyncio.CancelledError:
        loop.s.journal.finish(loop.task_id, "failed", error="cancelled")
        raise
    except ExecutorError as exc:
        loop.s.journal.finish(loop.task_id, "failed", error=str(exc))
        raise
