"""Replay a workload through one contestant, ``concurrency`` tasks at a time, and
record every call, tool run and wait on a common clock."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from benchmarks.e2e.contestants import CallResult, Contestant
from benchmarks.e2e.workload import ReplayTask
from executor.dispatch import TaskRefused
from tools.sandbox.base import SandboxBackend

T = TypeVar("T")


@dataclass
class CallTrace:
    k: int
    replica_id: str
    submitted: float  # the task asked for the call (then waited for its grant, if any)
    started: float  # granted: the request went to the engine
    ended: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int = 0  # what the call generated (0: not recorded)


@dataclass
class TaskTrace:
    task_id: str
    started: float
    ended: float = 0.0
    calls: list[CallTrace] = field(default_factory=list)
    tools: list[tuple[float, float]] = field(default_factory=list)

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


@dataclass
class RunTrace:
    contestant: str
    started: float
    ended: float
    tasks: list[TaskTrace]
    kv: list[tuple[float, str, int, int]]  # (t, replica, used tokens, capacity)
    path: str = "replay"  # "executor": the tasks ran through the public Executor
    rejected: int = 0  # tasks the contestant refused (shed)
    #: open loop: the arrival times of the tasks the run's cut left unfinished
    unfinished_arrivals: list[float] = field(default_factory=list)
    #: ours: the scheduler core's figures at the run's end (report.core_summary)
    core: dict[str, Any] = field(default_factory=dict)

    @property
    def unfinished(self) -> int:
        return len(self.unfinished_arrivals)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunTrace:
        tasks = [
            TaskTrace(
                t["task_id"],
                t["started"],
                t["ended"],
                [CallTrace(**c) for c in t["calls"]],
                [tuple(x) for x in t["tools"]],
            )
            for t in data["tasks"]
        ]
        kv = [tuple(x) for x in data["kv"]]
        return cls(
            data["contestant"],
            data["started"],
            data["ended"],
            tasks,
            kv,
            data.get("path", "replay"),
            data.get("rejected", 0),
            list(data.get("unfinished_arrivals", [])),
            dict(data.get("core", {})),
        )


async def replay_task(
    task: ReplayTask, contestant: Contestant, sandboxes: SandboxBackend, clock: Callable[[], float]
) -> TaskTrace | None:
    """One task's calls and tools; None if the contestant refused it."""
    trace = TaskTrace(task.task_id, clock())
    sandbox = await sandboxes.open(task.task_id)
    try:
        ids = list(task.system_ids) + list(task.new_ids[0])
        out: list[int] = []
        for k in range(task.calls):
            if k:
                ids += out + list(task.new_ids[k])
            submitted = clock()
            try:
                r: CallResult = await contestant.call(task, k, ids, task.plan.output_tokens[k])
            except TaskRefused:
                if k:
                    raise
                return None
            ended = clock()
            started = min(ended, submitted + r.queued_s)
            trace.calls.append(
                CallTrace(
                    k,
                    r.replica_id,
                    submitted,
                    started,
                    ended,
                    r.prompt_tokens,
                    r.cached_tokens,
                    len(r.output_ids),
                )
            )
            out = r.output_ids
            if k < task.calls - 1:
                contestant.tool_started(task.task_id)
                t0 = clock()
                result = await sandbox.exec(task.tool_argv(k), timeout=task.tool_timeout(k))
                if result.exit_code != 0:
                    raise RuntimeError(f"{task.task_id}: tool failed: {result.stderr[-300:]!r}")
                trace.tools.append((t0, clock()))
        contestant.finished(task.task_id)
    finally:
        await sandbox.close()
    trace.ended = clock()
    return trace


KvProbe = Callable[[], Awaitable[list[tuple[str, int, int]]]]


async def gather_sampling_kv(
    tasks: list[Awaitable[T]],
    kv_probe: KvProbe | None,
    clock: Callable[[], float],
    kv: list[tuple[float, str, int, int]],
) -> list[T]:
    """Run the tasks to their ends while the replicas' KV use is sampled every 0.5 s."""

    async def sample(probe: KvProbe) -> None:
        while True:
            now = clock()
            for rid, used, cap in await probe():
                kv.append((now, rid, used, cap))
            await asyncio.sleep(0.5)

    sampler = asyncio.ensure_future(sample(kv_probe)) if kv_probe is not None else None
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        if sampler is not None:
            sampler.cancel()


async def replay(
    workload: list[ReplayTask],
    contestant: Contestant,
    sandboxes: SandboxBackend,
    concurrency: int,
    kv_probe: Callable[[], Awaitable[list[tuple[str, int, int]]]] | None = None,
    on_task: Callable[[TaskTrace], None] | None = None,
) -> RunTrace:
    """Every task of ``workload``, at most ``concurrency`` at once, in order."""
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    gate = asyncio.Semaphore(concurrency)
    kv: list[tuple[float, str, int, int]] = []

    async def one(task: ReplayTask) -> TaskTrace | None:
        async with gate:
            trace = await replay_task(task, contestant, sandboxes, clock)
        if on_task is not None and trace is not None:
            on_task(trace)
        return trace

    traces = await gather_sampling_kv([one(t) for t in workload], kv_probe, clock, kv)
    done = [t for t in traces if t is not None]
    return RunTrace(contestant.name, 0.0, clock(), done, kv, rejected=len(traces) - len(done))


async def until_deadline(
    jobs: Sequence[Awaitable[T]], cut_at: float | None, clock: Callable[[], float]
) -> tuple[list[T], list[int]]:
    """Run ``jobs`` to their ends, or until ``clock()`` reaches ``cut_at`` (None: no
    cut): the results of those that ended, the indices of those cancelled."""
    futures = [asyncio.ensure_future(j) for j in jobs]
    if futures:
        timeout = None if cut_at is None else max(0.0, cut_at - clock())
        await asyncio.wait(futures, timeout=timeout)
    cut = [i for i, f in enumerate(futures) if not f.done()]
    for i in cut:
        futures[i].cancel()
    await asyncio.gather(*(futures[i] for i in cut), return_exceptions=True)
    return [f.result() for f in futures if not f.cancelled()], cut


async def replay_open(
    workload: list[ReplayTask],
    contestant: Contestant,
    sandboxes: SandboxBackend,
    times: list[float],
    cut_at: float,
    kv_probe: KvProbe | None = None,
    on_task: Callable[[TaskTrace], None] | None = None,
) -> RunTrace:
    """Open loop: task i of ``workload`` starts at ``times[i]`` (s from the run's
    start) whatever else runs; at ``cut_at`` the tasks not done are cancelled and
    counted unfinished."""
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    kv: list[tuple[float, str, int, int]] = []

    async def one(task: ReplayTask, at: float) -> TaskTrace | None:
        await asyncio.sleep(max(0.0, at - clock()))
        trace = await replay_task(task, contestant, sandboxes, clock)
        if on_task is not None and trace is not None:
            on_task(trace)
        return trace

    async def all_of() -> tuple[list[TaskTrace | None], list[int]]:
        jobs = [one(t, at) for t, at in zip(workload, times, strict=True)]
        return await until_deadline(jobs, cut_at, clock)

    [(traces, cut)] = await gather_sampling_kv([all_of()], kv_probe, clock, kv)
    done = [t for t in traces if t is not None]
    return RunTrace(
        contestant.name,
        0.0,
        clock(),
        done,
        kv,
        rejected=len(traces) - len(done),
        unfinished_arrivals=[times[i] for i in cut],
    )
