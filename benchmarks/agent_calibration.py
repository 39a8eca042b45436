"""Calibration: the simulator replays the benchmark's own tasks, with the engine rates
measured on this machine, and its task latencies are set against the real ones.

The real runs keep a fixed concurrency, so each task's arrival in the simulator
is the time the real task started (same order, same plans); latency is from
that start to the task's end in both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from typing import Any

from benchmarks.agent_replay import RunTrace
from benchmarks.agent_workload import ReplayTask
from executor.replica_handle import ReplicaHandle
from scheduler import SchedulerConfig
from scheduler.sim.metrics import percentile
from scheduler.sim.model import EngineSpec
from scheduler.sim.simulator import SimConfig, Simulation
from scheduler.sim.workload import WorkloadSpec

#: contestant -> (simulator policy, prefix cache)
SIM_POLICY = {
    "ours": ("ours", True),
    "round_robin": ("round_robin", True),
    "sglang_router": ("cache_aware", True),
    "no_cache": ("ours", False),
}


async def measure_engine(
    handle: ReplicaHandle, prompt_tokens: int = 4000, context_tokens: int = 2000, batch: int = 4
) -> dict[str, float]:
    """Prefill and decode rates of one replica. Decode is timed with ``context_tokens``
    of cached history behind each sequence (on a CPU, attention over the history makes
    a decode step slower as it grows), alone and ``batch`` at a time."""
    ids = [100 + (i * 37) % 3800 for i in range(prompt_tokens)]
    one = {"max_new_tokens": 1, "temperature": 0.0}
    await handle.aflush_cache()
    cold = await handle.agenerate({"input_ids": ids, "sampling": one})
    prefill = len(ids) / cold.latency_s
    steps = 64
    many = {"max_new_tokens": steps, "ignore_eos": True, "temperature": 0.0}
    contexts = [[200 + i] + ids[: context_tokens - 1] for i in range(batch)]
    for ctx in contexts:  # cached: the timed calls below only decode
        await handle.agenerate({"input_ids": ctx, "sampling": one})

    async def step_s(n: int) -> float:
        async def timed(sampling: dict[str, Any]) -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(
                handle.agenerate({"input_ids": c, "sampling": sampling}) for c in contexts[:n]
            ))  # fmt: skip
            return time.perf_counter() - t0

        return max(1e-6, (await timed(many) - await timed(one)) / (steps - 1))

    step1, stepn = await step_s(1), await step_s(batch)
    d1 = max(0.0, (stepn - step1) / (batch - 1))
    d0 = max(1e-6, step1 - d1)
    return {
        "prefill_tokens_per_s": round(prefill, 1),
        "decode_tokens_per_s": round(1.0 / step1, 2),
        "decode_batch_slowdown": round(d1 / d0, 4),
        "decode_context_tokens": context_tokens,
    }


def tool_overhead(run: RunTrace, workload: list[ReplayTask]) -> float:
    """Median seconds a real tool run took beyond its planned sleep (the sandbox's
    start, the command, the exit): measured, and added to the simulator's tools."""
    planned = {w.task_id: w.plan.tool_s for w in workload}
    extra = [(b - a) - planned[t.task_id][k] for t in run.tasks for k, (a, b) in enumerate(t.tools)]
    return max(0.0, statistics.median(extra)) if extra else 0.0


def simulate(
    contestant: str, run: RunTrace, workload: list[ReplayTask], spec: WorkloadSpec,
    rates: dict[str, float], replicas: int, kv_tokens: int, scheduler: SchedulerConfig,
    tool_overhead_s: float = 0.0,
) -> dict[str, float]:  # fmt: skip
    policy, cache = SIM_POLICY[contestant]
    starts = {t.task_id: t.started for t in run.tasks}
    plans = sorted(
        (
            dataclasses.replace(
                w.plan, arrival=starts[w.task_id],
                tool_s=tuple(s + tool_overhead_s for s in w.plan.tool_s),
            )
            for w in workload
        ),
        key=lambda p: p.arrival,
    )  # fmt: skip
    engine = EngineSpec(
        prefill_tokens_per_s=rates["prefill_tokens_per_s"],
        decode_tokens_per_s=rates["decode_tokens_per_s"],
        decode_batch_slowdown=rates["decode_batch_slowdown"],
        chunk_tokens=4096,  # SGLang's chunked_prefill_size on this CPU backend
        kv_room_bytes=float(kv_tokens), kv_bytes_per_token=1,
        max_running_requests=64, prefix_cache=cache,
    )  # fmt: skip
    cfg = SimConfig(
        replicas=replicas, rate=1.0, duration_s=plans[-1].arrival + 1.0, warmup_s=0.0,
        drain_s=3600.0, engine=engine, workload=spec, scheduler=scheduler,
    )  # fmt: skip
    sim = Simulation(cfg, policy, workload=plans)
    sim.run()
    lat = [st.finished - st.plan.arrival for st in sim.tasks.values() if st.finished is not None]
    return {
        "p50_s": round(percentile(lat, 50), 2),
        "p95_s": round(percentile(lat, 95), 2),
        "completed": len(lat),
    }


def compare(measured: dict[str, float], simulated: dict[str, float]) -> dict[str, Any]:
    def err(key: str) -> float:
        return round(simulated[key] / measured[key] - 1.0, 3) if measured[key] else float("nan")

    errors = {"p50": err("p50_s"), "p95": err("p95_s")}
    return {
        "measured": {k: measured[k] for k in ("p50_s", "p95_s")},
        "simulated": simulated,
        "error": errors,
        "within_25pct": all(abs(e) <= 0.25 for e in errors.values()),
    }
