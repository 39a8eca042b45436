"""Calibration: the simulator replays the benchmark's own tasks, with the engine rates
measured on this machine, and its task latencies are set against the real ones.

The real runs keep a fixed concurrency, so each task's arrival in the simulator
is the time the real task started (same order, same plans); latency is from
that start to the task's end in both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
import time
from typing import Any

import numpy as np
from scipy.optimize import nnls

from benchmarks.e2e.replay import RunTrace
from benchmarks.e2e.workload import ReplayTask
from executor.fleet.handle import ReplicaHandle
from scheduler import SchedulerConfig
from sim.metrics import percentile
from sim.model import EngineSpec, attention_units
from sim.simulator import SimConfig, Simulation
from sim.workload import WorkloadSpec

#: SGLang's chunked_prefill_size on this CPU backend
CHUNK_TOKENS = 4096

#: a run's engine speed is measured from at least this many of its calls alone on a
#: replica, or else from every contestant's (a median of fewer was further off than
#: the pooled one: in the second load-8 draw, ours' 29 calls gave +24% / +34% at
#: p50 / p95, the pooled ones -1% / -4%)
MIN_ALONE_CALLS = 50
#: the prefill and decode factors are fitted to at least this many calls alone
MIN_FIT_CALLS = 20
#: ... and the host contention from at least this many with the host to themselves
MIN_IDLE_HOST_CALLS = 10

#: contestant -> (simulator policy, prefix cache)
SIM_POLICY = {
    "ours": ("ours", True),
    "ours_v1": ("ours-v1", True),
    "ours_release": ("ours", True),  # the simulator's release is the core's bookkeeping
    "ours_core": ("ours", True),
    "sticky_router": ("sticky", True),
    "round_robin": ("round_robin", True),
    "sglang_router": ("cache_aware", True),
    "no_cache": ("ours", False),
    "gateway": ("ours", True),  # the gateway's calls go through the same core
    "gateway_keyless": ("ours", True),
    "gateway_rendered": ("ours", True),
}


async def measure_engine(
    handle: ReplicaHandle,
    prompt_tokens: int = 4000,
    context_tokens: int = 3000,
    batch: int = 4,
    chunk_tokens: int = CHUNK_TOKENS,
    repeats: int = 5,
) -> dict[str, Any]:
    """Timed probes of one replica, as the client sees them, and the simulator's
    engine terms fitted to them (:func:`fit_prefill`, :func:`fit_decode`):

    - prefills (one output token) of cold prompts of 1/4, 1/2 and all of
      ``prompt_tokens``, and of new tokens behind a cached prefix (1/16 behind
      1/4, 1/16 and 1/4 behind 3/4);
    - decode steps of 1 and ``batch`` sequences with 1/8 of ``prompt_tokens`` and
      ``context_tokens`` of cached history each.

    Each probe's time is the median of ``repeats``. Probe one replica at a time:
    replicas on one host slow each other, and the calibration takes that from the
    run's own calls (:func:`fit_contention`), not from the probes."""
    one = {"max_new_tokens": 1, "temperature": 0.0}
    salt = iter(range(200, 10_000))

    def ids(n: int) -> list[int]:  # a first token no other probe has: nothing shared
        return [next(salt)] + [100 + (i * 37) % 3800 for i in range(n - 1)]

    async def seconds(prompts: list[list[int]], sampling: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(
            *(handle.agenerate({"input_ids": p, "sampling": sampling}) for p in prompts)
        )
        return time.perf_counter() - t0

    p = prompt_tokens
    prefill: list[tuple[int, int, float]] = []  # (new tokens, prompt tokens, seconds)
    for cached, new in (
        (0, p // 4),
        (0, p // 2),
        (0, p),
        (p // 4, p // 16),
        (p * 3 // 4, p // 16),
        (p * 3 // 4, p // 4),
    ):
        runs = []
        for _ in range(repeats):
            await handle.aflush_cache()
            prefix = ids(cached) if cached else []
            if prefix:
                await seconds([prefix], one)  # cached now
            runs.append(await seconds([prefix + ids(new)], one))
        prefill.append((new, cached + new, round(statistics.median(runs), 5)))

    steps = 64
    many = {"max_new_tokens": steps + 1, "ignore_eos": True, "temperature": 0.0}
    decode: list[tuple[int, int, float]] = []  # (sequences, context each, step seconds)
    for ctx in (p // 8, context_tokens):
        await handle.aflush_cache()
        prompts = [ids(ctx) for _ in range(batch)]
        await seconds(prompts, one)  # cached: the timed calls below only decode
        for m in (1, batch):
            runs = [
                (await seconds(prompts[:m], many) - await seconds(prompts[:m], one)) / steps
                for _ in range(repeats)
            ]
            decode.append((m, ctx, round(max(1e-6, statistics.median(runs)), 6)))
    return {
        **fit_prefill(prefill, chunk_tokens),
        **fit_decode(decode),
        "probes": {"prefill": prefill, "decode": decode},
    }


def fit_prefill(points: list[tuple[int, int, float]], chunk_tokens: int) -> dict[str, float]:
    """``seconds = call_overhead_s + new / prefill_tokens_per_s +
    first_chunk_attention_s x first + prefill_attention_s x behind`` (non-negative
    least squares; ``first, behind`` from :func:`attention_units`) over
    ``(new tokens, prompt tokens, seconds)`` points."""
    rows = [(1.0, n, *attention_units(n, prompt, chunk_tokens)) for n, prompt, _ in points]
    coef, _ = nnls(np.array(rows, dtype=float), np.array([t for *_, t in points]))
    overhead, per_token, first, behind = (float(c) for c in coef)
    return {
        "call_overhead_s": round(overhead, 5),
        "prefill_tokens_per_s": round(1.0 / max(per_token, 1e-7), 1),  # 1e7: no linear term
        "first_chunk_attention_s": float(f"{first:.4g}"),
        "prefill_attention_s": float(f"{behind:.4g}"),
    }


def fit_decode(points: list[tuple[int, int, float]]) -> dict[str, float]:
    """``step seconds = d0 + d1 x sequences + decode_context_s x their contexts``
    (non-negative least squares) over ``(sequences, context each, step seconds)``
    points, as :class:`EngineSpec`'s rate, batch slowdown and context term."""
    rows = [(1.0, m, m * ctx) for m, ctx, _ in points]
    coef, _ = nnls(np.array(rows, dtype=float), np.array([t for *_, t in points]))
    d0, d1, per_context = max(float(coef[0]), 1e-6), float(coef[1]), float(coef[2])
    return {
        "decode_tokens_per_s": round(1.0 / (d0 + d1), 2),
        "decode_batch_slowdown": round(d1 / d0, 4),
        "decode_context_s": float(f"{per_context:.4g}"),
    }


#: the engine terms of a measurement (the rest of it is its probes)
RATE_KEYS = (
    "call_overhead_s",
    "prefill_tokens_per_s",
    "first_chunk_attention_s",
    "prefill_attention_s",
    "decode_tokens_per_s",
    "decode_batch_slowdown",
    "decode_context_s",
)


def mean_rates(per_replica: list[dict[str, Any]]) -> dict[str, float]:
    """Engine terms averaged over measurements (every replica, every time probed)."""
    return {k: float(f"{statistics.mean(r[k] for r in per_replica):.5g}") for k in RATE_KEYS}


def engine_spec(rates: dict[str, float], kv_tokens: int, cache: bool = True) -> EngineSpec:
    """The simulator's engine with these terms (those a report lacks are 0)."""
    return EngineSpec(
        prefill_tokens_per_s=rates["prefill_tokens_per_s"],
        decode_tokens_per_s=rates["decode_tokens_per_s"],
        decode_batch_slowdown=rates["decode_batch_slowdown"],
        chunk_tokens=CHUNK_TOKENS,
        kv_room_bytes=float(kv_tokens),
        kv_bytes_per_token=1,
        max_running_requests=64,
        prefix_cache=cache,
        prefill_attention_s=rates.get("prefill_attention_s", 0.0),
        first_chunk_attention_s=rates.get("first_chunk_attention_s", 0.0),
        decode_context_s=rates.get("decode_context_s", 0.0),
        call_overhead_s=rates.get("call_overhead_s", 0.0),
        host_contention=rates.get("host_contention", 0.0),
    )


@dataclasses.dataclass(frozen=True)
class AloneCall:
    """A call that ran alone on its replica: its time, the probes' model of its two
    phases, and how many other replicas were busy meanwhile."""

    seconds: float
    prefill_s: float  # as the probes model it
    decode_s: float  # the decode and the call's overhead, as the probes model them
    others: int

    @property
    def ratio(self) -> float:
        """Measured over modeled time."""
        return self.seconds / (self.prefill_s + self.decode_s)


def alone_calls(
    run: RunTrace, workload: list[ReplayTask], rates: dict[str, float]
) -> list[AloneCall]:
    """How the engines ran in this run against the probes' model: each call that
    ran alone on its replica (:class:`AloneCall`). A run whose calls name no
    replica has none."""
    engine = engine_spec({**rates, "host_contention": 0.0}, 1)
    output = {w.task_id: w.plan.output_tokens for w in workload}
    calls = [(c, t.task_id) for t in run.tasks for c in t.calls if c.replica_id != "?"]
    out = []
    for c, task_id in calls:
        during = {
            o.replica_id
            for o, _ in calls
            if o is not c and o.started < c.ended and o.ended > c.started
        }
        if c.replica_id in during:
            continue
        new, prompt = c.prompt_tokens - c.cached_tokens, c.prompt_tokens
        total = engine.call_seconds_alone(new, output[task_id][c.k], prompt)
        prefill = engine.prefill_seconds(new, prompt) - engine.call_overhead_s
        out.append(AloneCall(c.ended - c.started, prefill, total - prefill, len(during)))
    return out


def fit_contention(calls: list[AloneCall]) -> float:
    """:class:`EngineSpec`'s ``host_contention`` from :func:`alone_calls`: how much
    slower calls ran while other replicas were busy than with the host to
    themselves (medians), per other busy replica; 0 without
    ``MIN_IDLE_HOST_CALLS`` of the latter."""
    idle = [c.ratio for c in calls if not c.others]
    busy = [c for c in calls if c.others]
    if len(idle) < MIN_IDLE_HOST_CALLS or not busy:
        return 0.0
    ratio = statistics.median(c.ratio for c in busy) / statistics.median(idle)
    per = statistics.median(c.others for c in busy)
    return round(max(0.0, ratio - 1.0) / per, 4)


def fit_phases(calls: list[AloneCall], contention: float) -> tuple[float, float]:
    """How much slower than the probes the two phases ran, ``(prefill, decode)``
    factors (non-negative least squares over the calls, the host contention taken
    out; ``(1, 1)`` with fewer than ``MIN_FIT_CALLS``). The probes decode free
    text; the runs decode under the executor's reply grammar, which on this CPU
    backend costs more per token than the prefill's slowdown alone would say."""
    if len(calls) < MIN_FIT_CALLS:
        return 1.0, 1.0
    a = np.array([(c.prefill_s, c.decode_s) for c in calls], dtype=float)
    y = np.array([c.seconds / (1.0 + contention * c.others) for c in calls])
    coef, _ = nnls(a, y)
    prefill, decode = (float(x) for x in coef)
    if not prefill or not decode:  # one phase explains nothing: one factor for both
        prefill = decode = statistics.median(y / a.sum(axis=1))
    return round(prefill, 3), round(decode, 3)


def engine_slowdown(
    calls: list[AloneCall], contention: float, phases: tuple[float, float] = (1.0, 1.0)
) -> float:
    """The engines' speed in a run as a factor on the probes' times with the phases
    scaled by ``phases``: the median of :func:`alone_calls`' ratios, less the host
    contention (1 without calls)."""
    if not calls:
        return 1.0
    p, d = phases
    return statistics.median(
        c.seconds / (1.0 + contention * c.others) / (p * c.prefill_s + d * c.decode_s)
        for c in calls
    )


def scaled(rates: dict[str, float], factor: float, decode: float | None = None) -> dict[str, float]:
    """The engine terms of an engine whose prefill is ``factor`` times as slow and
    its decode (and per-call overhead) ``decode`` times (``factor`` if not given)."""
    decode = factor if decode is None else decode
    out = dict(rates)
    for key, by in (("prefill_tokens_per_s", factor), ("decode_tokens_per_s", decode)):
        out[key] = rates[key] / by
    for key, by in (
        ("call_overhead_s", decode),
        ("first_chunk_attention_s", factor),
        ("prefill_attention_s", factor),
        ("decode_context_s", decode),
    ):
        if key in rates:
            out[key] = rates[key] * by
    return out


def simulate(
    contestant: str,
    run: RunTrace,
    workload: list[ReplayTask],
    spec: WorkloadSpec,
    rates: dict[str, float],
    replicas: int,
    kv_tokens: int,
    scheduler: SchedulerConfig,
    jitter_s: float = 0.0,
    seed: int = 0,
    concurrency: int | None = None,
) -> dict[str, float]:
    """The simulator on the run's tasks: each arrives when the real one started, and
    each tool takes as long as its real run did (the sandbox's start included),
    moved by up to ``jitter_s`` either way (uniform, seeded). With ``concurrency``,
    a closed loop instead (that many at once, in the real start order, the next as
    one ends), and its tasks/hour."""
    policy, cache = SIM_POLICY[contestant]
    real = {t.task_id: t for t in run.tasks}
    rnd = random.Random(seed)

    def tools(w: ReplayTask) -> tuple[float, ...]:
        measured = real[w.task_id].tools
        if len(measured) != len(w.plan.tool_s):
            raise ValueError(
                f"{w.task_id}: the trace has {len(measured)} tool runs, "
                f"the plan {len(w.plan.tool_s)}"
            )
        return tuple(
            max(0.0, end - start + (rnd.uniform(-jitter_s, jitter_s) if jitter_s else 0.0))
            for start, end in measured
        )

    plans = sorted(
        (
            dataclasses.replace(w.plan, arrival=real[w.task_id].started, tool_s=tools(w))
            for w in workload
        ),
        key=lambda p: p.arrival,
    )
    engine = engine_spec(rates, kv_tokens, cache)
    cfg = SimConfig(
        replicas=replicas,
        rate=1.0,
        duration_s=plans[-1].arrival + 1.0,
        warmup_s=0.0,
        drain_s=3600.0,
        engine=engine,
        workload=spec,
        scheduler=scheduler,
        concurrency=concurrency,
    )
    sim = Simulation(cfg, policy, workload=plans)
    sim.run()
    ends = [(st.finished, st.plan.arrival) for st in sim.tasks.values() if st.finished is not None]
    lat = [end - start for end, start in ends]
    out = {
        "p50_s": round(percentile(lat, 50), 2),
        "p95_s": round(percentile(lat, 95), 2),
        "completed": len(lat),
    }
    if concurrency and ends:
        last = max(end for end, _ in ends)
        out["tasks_per_hour"] = round(len(ends) * 3600.0 / max(last, 1e-9), 1)
    return out


def simulate_trials(
    contestant: str,
    run: RunTrace,
    workload: list[ReplayTask],
    spec: WorkloadSpec,
    rates: dict[str, float],
    replicas: int,
    kv_tokens: int,
    scheduler: SchedulerConfig,
    trials: int = 9,
    jitter_s: float = 0.03,
) -> dict[str, Any]:
    """:func:`simulate` once on the measured times and ``trials - 1`` times with the
    tools moved by up to ``jitter_s``: the median p50/p95 and their range.

    A real run is one draw of a system that is sensitive to timing where KV pools
    overflow (which task's history is evicted first decides which replica
    falls behind), so one simulated trajectory is a noisy estimate of it."""
    runs = [
        simulate(
            contestant,
            run,
            workload,
            spec,
            rates,
            replicas,
            kv_tokens,
            scheduler,
            jitter_s=jitter_s if i else 0.0,
            seed=i,
        )
        for i in range(max(1, trials))
    ]
    out: dict[str, Any] = {"trials": len(runs), "jitter_s": jitter_s}
    for key in ("p50_s", "p95_s"):
        xs = [r[key] for r in runs]
        out[key] = round(statistics.median(xs), 2)
        out[key.replace("_s", "_range_s")] = [min(xs), max(xs)]
    out["completed"] = min(r["completed"] for r in runs)
    return out


def compare(measured: dict[str, float], simulated: dict[str, Any]) -> dict[str, Any]:
    def err(key: str) -> float:
        return round(simulated[key] / measured[key] - 1.0, 3) if measured[key] else float("nan")

    errors = {"p50": err("p50_s"), "p95": err("p95_s")}
    return {
        "measured": {k: measured[k] for k in ("p50_s", "p95_s")},
        "simulated": simulated,
        "error": errors,
        "within_25pct": all(abs(e) <= 0.25 for e in errors.values()),
    }
