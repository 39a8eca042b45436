"""``ours`` through the product: the plan's tasks run by the public :class:`Executor`
(journal, telemetry, health checks, a bubblewrap sandbox per task, the real task
loop and its reply grammar) on the benchmark's replicas.

Each task is an agent forced to call one tool, ``replay``, at every step until its
step limit (``tool_choice="required"``, ``reset_tool_choice=False``,
``answer_on_repeat=False``, ``max_steps`` = the plan's calls). The tool runs the
plan's tool command in the task's sandbox (a sleep of the recorded duration,
then a small command) and returns text of the recorded length (the next call's
observation tokens). The agent's instructions are the agent type's system
prompt, the goal the task's first message (both decoded from the plan's ids),
so tasks of one agent share a prefix.

The model's replies are the reply grammar's (``{"name": "replay", "arguments":
{}}``: a dozen tokens, not the plan's output lengths), and the chat template
wraps each observation: the executor's token counts are its own. The other
contestants therefore replay the executor's journal (:func:`journal_records` ->
:func:`benchmarks.e2e.workload.follow_journal`): the same first prompts, the same
observation ids, replies of the same lengths, the plan's tool gaps.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.e2e.contestants import MAX_REPLY_TOKENS
from benchmarks.e2e.replay import (
    CallTrace,
    KvProbe,
    RunTrace,
    TaskTrace,
    gather_sampling_kv,
    until_deadline,
)
from benchmarks.e2e.report import core_summary
from benchmarks.e2e.workload import ReplayTask
from executor import Agent, Executor
from executor.fleet.pool import ReplicaPool
from executor.loop.journal import Journal
from executor.loop.reply import reply_schema
from executor.loop.steps import CallPayload, ObservationPayload
from executor.result import CallStep, ToolStep
from executor.sampling import SamplingParams
from scheduler import SchedulerConfig
from tools import Tool, ToolContext, tool
from tools.result import ToolError
from tools.sandbox import SandboxBackend


class ObservationText:
    """Text of a given length in the model's tokens, from a plan's ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer

    def count(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False))

    def text(self, ids: tuple[int, ...] | list[int]) -> str:
        """The ids decoded; grown or cut until it encodes to about ``len(ids)`` tokens
        (re-encoding merges across the old token boundaries)."""
        want = len(ids)
        text = self.tok.decode(list(ids), skip_special_tokens=True)
        for _ in range(4):
            have = self.count(text)
            if have >= want or not text:
                break
            text += " " + self.tok.decode(list(ids[: want - have]), skip_special_tokens=True)
        while self.count(text) > want and len(text) > 1:
            text = text[: max(1, int(len(text) * want / self.count(text)))]
        return text.strip() or "ok"


def replay_tool(workload: list[ReplayTask], texts: ObservationText) -> Tool:
    """The ``replay`` tool: the task's next recorded tool step (its sandboxed command,
    then text of the next observation's length)."""
    by_id = {w.task_id: w for w in workload}
    obs = {w.task_id: [texts.text(ids) for ids in w.new_ids[1:]] for w in workload}
    done: dict[str, int] = {}

    @tool
    async def replay(ctx: ToolContext) -> str:
        """Run the next step of the task's work and show its output."""
        if ctx.task_id not in by_id:
            raise ToolError(f"no plan for task {ctx.task_id}")
        task = by_id[ctx.task_id]
        k = done.get(task.task_id, 0)
        done[task.task_id] = k + 1
        result = await ctx.require_sandbox().exec(task.tool_argv(k), timeout=task.tool_timeout(k))
        if result.exit_code != 0:
            raise ToolError(f"the recorded command failed: {result.stderr[-300:]!r}")
        return obs[task.task_id][k]

    return replay


def agents_for(
    workload: list[ReplayTask],
    model: str,
    texts: ObservationText,
    tool_: Tool,
    max_steps: dict[str, int],
) -> dict[str, Agent]:
    """One :class:`Agent` per (agent type, step limit): instructions = the type's system
    prompt. Its name is the agent type's alone: the core learns each agent's growth per
    step under its name, and tasks of one type with other step limits are one agent
    (named by the limit, each of the ~14 limits learned from a task or two, so it kept
    the 1,024-token prior for most of the run and reserved ~4x the real growth)."""
    out: dict[str, Agent] = {}
    instructions: dict[str, str] = {}  # per agent type (one system prompt each)
    for w in workload:
        key = f"{w.plan.agent}-{max_steps[w.task_id]}"
        if key not in out:
            if w.plan.agent not in instructions:
                instructions[w.plan.agent] = texts.text(w.system_ids)
            out[key] = Agent(
                name=w.plan.agent,
                instructions=instructions[w.plan.agent],
                tools=[tool_],
                model=model,
                max_steps=max_steps[w.task_id],
                tool_choice="required",
                reset_tool_choice=False,
                answer_on_repeat=False,
                sampling=SamplingParams(max_new_tokens=MAX_REPLY_TOKENS, temperature=0.0),
            )
    return out


class StepClock:
    """Each task's calls and tools on the benchmark's clock, from the executor's
    ``on_step`` callback (a step is announced when it is journaled: a call's end,
    a tool's end; their starts are that less the step's own durations)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.traces: dict[str, TaskTrace] = {}

    def on_step(self, task_id: str, step: Any) -> None:
        trace = self.traces.setdefault(task_id, TaskTrace(task_id, 0.0))
        now = self.clock()
        if isinstance(step, CallStep):
            started = now - step.latency_s
            trace.calls.append(
                CallTrace(
                    step.step - 1,
                    step.replica_id,
                    started - step.queue_wait_s,
                    started,
                    now,
                    step.prompt_tokens,
                    step.cached_tokens,
                    step.completion_tokens,
                )
            )
        elif isinstance(step, ToolStep):
            trace.tools.append((now - step.duration_s, now))


async def run_product(
    name: str,
    workload: list[ReplayTask],
    pool: ReplicaPool,
    sandboxes: SandboxBackend,
    concurrency: int,
    scheduler: SchedulerConfig,
    journal_path: Path,
    texts: ObservationText,
    kv_probe: KvProbe | None = None,
    on_task: Callable[[TaskTrace], None] | None = None,
    times: list[float] | None = None,
    cut_at: float | None = None,
) -> tuple[RunTrace, Journal]:
    """Every task through an :class:`Executor` on ``pool``, ``concurrency`` at a time;
    open loop with ``times``: task i starts at ``times[i]`` (s from the start), and at
    ``cut_at`` those not done are cancelled (unfinished)."""
    tool_ = replay_tool(workload, texts)
    agents = agents_for(
        workload, pool.config.model, texts, tool_, {w.task_id: w.calls for w in workload}
    )
    t0 = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - t0

    steps = StepClock(clock)
    journal = Journal(journal_path)
    ex = Executor(
        model=pool.config.model,
        sandbox=sandboxes,
        journal=journal,
        telemetry="memory",
        scheduler=scheduler,
        pool=pool,
        on_step=steps.on_step,
    )
    await ex.start()

    kv: list[tuple[float, str, int, int]] = []
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []
    rejected: list[str] = []
    goals = {w.task_id: texts.text(w.new_ids[0]) for w in workload}

    async def one(i: int, w: ReplayTask) -> TaskTrace | None:
        if times is not None:
            await asyncio.sleep(max(0.0, times[i] - clock()))
        async with gate:
            started = clock()
            agent = agents[f"{w.plan.agent}-{w.calls}"]
            result = await ex.run(agent, goals[w.task_id], task_id=w.task_id)
            ended = clock()
        if result.status == "failed" and "reject" in (result.error or "").lower():
            rejected.append(w.task_id)
            return None
        if result.status != "step_limit" or len(result.steps) != 2 * w.calls - 1:
            failures.append(f"{w.task_id}: {result.status} {result.error or ''}".strip())
        trace = steps.traces.pop(w.task_id, TaskTrace(w.task_id, 0.0))
        trace.started, trace.ended = started, ended
        if on_task is not None:
            on_task(trace)
        return trace

    async def all_of() -> tuple[list[TaskTrace | None], list[int]]:
        return await until_deadline([one(i, w) for i, w in enumerate(workload)], cut_at, clock)

    try:
        [(traces, cut)] = await gather_sampling_kv([all_of()], kv_probe, clock, kv)
        core = core_summary(ex.dispatcher.core.stats())
        if ex.warmer is not None:  # warm before return: started, warmed, failed or unknown
            w = ex.warmer
            core["warm_ups"] = {"started": w.started, "warmed": w.warmed, "failed": w.failed}
    finally:
        await ex.close()
    if failures:
        raise RuntimeError(f"{name}: tasks did not run their plan: {failures[:3]}")
    run = RunTrace(
        name,
        0.0,
        clock(),
        [t for t in traces if t is not None],
        kv,
        path="executor",
        rejected=len(rejected),
        unfinished_arrivals=[times[i] for i in cut] if times else [],
        core=core,
    )
    return run, journal


def replay_schema(workload: list[ReplayTask], texts: ObservationText) -> str:
    """The reply grammar the product's calls decode under (one tool, required)."""
    tool_ = replay_tool(workload[:1], texts)
    agent = next(
        iter(agents_for(workload[:1], "m", texts, tool_, {workload[0].task_id: 1}).values())
    )
    return json.dumps(reply_schema(agent, "required"))


def journal_records(
    journal: Journal, workload: list[ReplayTask]
) -> dict[str, tuple[list[int], list[int], list[list[int]]]]:
    """Each task's first prompt, replies' lengths and observations' ids, as journaled."""
    out = {}
    for w in workload:
        record = journal.get(w.task_id)
        replies = [len(p.ids) for p in record.payloads if isinstance(p, CallPayload)]
        observations = [list(p.ids) for p in record.payloads if isinstance(p, ObservationPayload)]
        out[w.task_id] = (list(record.prompt_ids), replies, observations)
    return out


#: the gateway contestants: their name -> (whether each task sends its session id,
#: whether the gateway reuses the last reply's ids exactly; off: ``X-Exact-Reuse: off``)
GATEWAYS = {
    "gateway": (True, True),
    "gateway_keyless": (False, True),
    "gateway_rendered": (True, False),
}
#: the in-process service's bearer token (loopback only, for this run)
GATEWAY_TOKEN = "e2e-bench"


async def run_gateway(b: Any, name: str, pool: ReplicaPool, load: int, kv: KvProbe) -> RunTrace:
    """One run of a gateway contestant: the service (its own Executor and scheduler
    core on ``pool``'s replicas, the FastAPI app of :mod:`executor.service.app`) served
    by uvicorn in this process on 127.0.0.1 and a free port, the replayed tasks through
    the official ``openai`` client (:class:`~benchmarks.e2e.contestants.Gateway`); the
    run's ``core``: that service's ``SchedulerCore.stats()``."""
    import openai
    import uvicorn

    from benchmarks.e2e.contestants import Gateway
    from executor.config import ExecutorConfig
    from executor.fleet.actor import free_port
    from executor.service.app import create_app
    from executor.service.server import build_service

    service = build_service(
        ExecutorConfig(
            model=pool.config.model,
            journal=b.work / f"journal-{name}-{load}.sqlite",
            sandbox=b.args.sandbox,
        ),
        {},
        pool=pool,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, token=GATEWAY_TOKEN),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=GATEWAY_TOKEN, max_retries=0, timeout=None
    )
    try:
        while not server.started:
            if serving.done():
                raise RuntimeError(f"{name}: the service did not start: {serving.exception()}")
            await asyncio.sleep(0.05)
        keyed, exact = GATEWAYS[name]
        gateway = Gateway(client, pool.config.model, b.texts, keyed, name, exact=exact)
        run: RunTrace = await b.drive(gateway, load, kv)
        run.core = core_summary(service.executor.dispatcher.core.stats())
        run.path = "gateway"
        return run
    finally:
        await client.close()
        server.should_exit = True
        await serving
