"""The workload's ceiling: what no contestant can beat on these engines.

- A task's **floor**: its tools plus each of its calls warm and alone on a replica
  (call 0 prefills its whole first prompt; call k only its new tokens behind a
  cached history of everything before; each decodes its output alone), at the
  engine speed given (the run's measured one: the probes' terms scaled by the
  run's calls alone, :func:`measured_engine`).
- The fleet's **engine-time bound**: ``replicas`` engines each busy with one call at
  a time at its floor: ``replicas x 3600 / (mean engine seconds per task)``
  tasks/hour (no batching, no host contention counted: a bound, not a forecast).
- Closed loop at ``k`` tasks at once, the **latency bound** ``k x 3600 / (mean
  floor)``; open loop has none (arrivals are not limited).

The ceiling is the lower of the bounds that apply; each contestant's tasks/hour
and goodput are also given as a share of it (a share does not drift with the
machine's speed as the absolute figures do).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.e2e import calibration as calib
from benchmarks.e2e.replay import RunTrace
from benchmarks.e2e.workload import ReplayTask
from sim.model import EngineSpec


def call_floors(task: ReplayTask, engine: EngineSpec) -> list[float]:
    """Each call of ``task`` warm and alone: its new tokens prefilled behind its
    cached history, its output decoded alone (seconds)."""
    plan, out, prompt = task.plan, [], 0
    for k in range(plan.calls):
        new = plan.new_tokens[k]
        prompt += new + (plan.output_tokens[k - 1] if k else 0)
        out.append(engine.call_seconds_alone(new, plan.output_tokens[k], prompt))
    return out


def task_floor(task: ReplayTask, engine: EngineSpec) -> float:
    """Its tools plus its calls warm and alone (seconds)."""
    return sum(task.plan.tool_s) + sum(call_floors(task, engine))


def ceiling(
    workload: list[ReplayTask],
    engine: EngineSpec,
    replicas: int,
    loads: list[int] | None = None,
) -> dict[str, Any]:
    """The ceiling's figures: the floors, the engine-time bound and, per closed-loop
    load, the latency bound and the lower of the two (``ceiling_per_hour`` alone:
    open loop, the engine-time bound)."""
    floors = [task_floor(w, engine) for w in workload]
    engine_s = [sum(call_floors(w, engine)) for w in workload]
    engine_bound = replicas * 3600.0 / statistics.mean(engine_s)
    out: dict[str, Any] = {
        "task_floor_s": {
            "p50": round(statistics.median(floors), 2),
            "mean": round(statistics.mean(floors), 2),
            "max": round(max(floors), 2),
        },
        "engine_s_per_task_mean": round(statistics.mean(engine_s), 3),
        "replicas": replicas,
        "engine_bound_per_hour": round(engine_bound, 1),
        "ceiling_per_hour": round(engine_bound, 1),
    }
    if loads:
        by_load = {}
        for k in sorted(set(loads)):
            latency = k * 3600.0 / statistics.mean(floors)
            by_load[str(k)] = {
                "latency_bound_per_hour": round(latency, 1),
                "ceiling_per_hour": round(min(latency, engine_bound), 1),
            }
        out["by_load"] = by_load
    return out


def measured_terms(
    rates: dict[str, float], runs: list[RunTrace], workload: list[ReplayTask]
) -> tuple[dict[str, float], dict[str, Any]]:
    """The engine terms at the speed the engines ran in these runs: the probes' terms
    scaled by the prefill and decode slowdowns fitted to every run's calls alone on
    their replica (:mod:`benchmarks.e2e.calibration`), with the host contention
    fitted to them; and the basis of the fit."""
    calls = [c for run in runs for c in calib.alone_calls(run, workload, rates)]
    contention = calib.fit_contention(calls)
    phases = calib.fit_phases(calls, contention)
    speed = calib.engine_slowdown(calls, contention, phases)
    terms = calib.scaled(
        {**rates, "host_contention": contention}, speed * phases[0], speed * phases[1]
    )
    basis = {
        "calls_alone": len(calls),
        "host_contention": contention,
        "prefill_slowdown": round(speed * phases[0], 3),
        "decode_slowdown": round(speed * phases[1], 3),
    }
    return terms, basis


def measured_engine(
    rates: dict[str, float], runs: list[RunTrace], workload: list[ReplayTask], kv_tokens: int
) -> tuple[EngineSpec, dict[str, Any]]:
    """:func:`measured_terms` as the engine of a floor: alone, host contention out."""
    terms, basis = measured_terms(rates, runs, workload)
    return calib.engine_spec({**terms, "host_contention": 0.0}, kv_tokens), basis


def shares(summary: dict[str, Any], ceiling_per_hour: float) -> dict[str, float]:
    """A summary's tasks/hour and goodput as shares of the ceiling."""
    out = {}
    for key in ("tasks_per_hour", "goodput_per_hour"):
        if key in summary and ceiling_per_hour > 0:
            out[key.replace("_per_hour", "_ceiling_share")] = round(
                summary[key] / ceiling_per_hour, 3
            )
    return out
