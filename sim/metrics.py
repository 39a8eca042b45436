"""What a simulation run reports: task latency percentiles over the measured
window (tasks arriving in [warmup, duration)), throughput, utilization, KV
occupancy, re-prefilled tokens, rejects."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from scheduler.stats import CoreStats
from sim.engine import EngineStats
from sim.workload import TaskPlan


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); inf values sort last."""
    if not values:
        return float("nan")
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    if math.isinf(xs[hi]) or math.isinf(xs[lo]):
        return xs[hi] if pos > lo else xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class SimResult:
    policy: str
    rate_tasks_per_s: float
    replicas: int
    measured_tasks: int
    completed: int
    rejected: int
    failed: int
    unfinished: int
    task_p50_s: float
    task_p95_s: float
    task_p99_s: float
    task_mean_s: float
    call_p50_s: float
    call_p99_s: float
    admission_wait_p95_s: float
    tasks_per_hour: float
    utilization: float
    prefill_share: float
    kv_occupancy: float
    prefilled_tokens: int
    reprefilled_tokens: int
    reprefilled_tokens_per_task: float
    engine_evictions: int
    sim_time_s: float
    events: int
    wall_s: float
    reject_reasons: dict[str, int]
    # from the scheduler core's own counters (scheduler/stats.py); None for baselines
    queued_share: float | None = None
    """Measured tasks' time waiting for grants (admission + a compute slot) over
    their time from arrival to end."""
    idle_while_waiting_s: float | None = None
    """Time some replica had no call in flight while some task waited for a grant."""
    idle_while_waiting_share: float | None = None  # ... over the core's observed time
    ledger_reserved_share: float | None = None
    """Replicas' reserved KV (the ledger's), time-averaged, over their budgets."""
    reprefill_s: float = 0.0
    """Calls' prefill time spent on their tasks' history again (on the critical path)."""
    warm_ups: int = 0
    warm_prefilled_tokens: int = 0
    """Prefilled by warm-ups (``SchedulerConfig.warm_up``), off the critical path."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None if math.isnan(v) else "inf"
        return d


class TaskRecord(Protocol):
    """What :func:`summarize` reads of one task (``sim.simulator.SimTask`` has it)."""

    @property
    def plan(self) -> TaskPlan: ...
    @property
    def finished(self) -> float | None: ...
    @property
    def rejected(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    @property
    def first_start(self) -> float | None: ...
    @property
    def call_latencies(self) -> Sequence[float]: ...


@dataclass(frozen=True, slots=True)
class RunData:
    """What a finished run hands to :func:`summarize`: plain data, no simulator."""

    policy: str
    rate: float  # task arrivals per second
    replicas: int
    warmup_s: float  # tasks arriving in [warmup_s, duration_s) are measured
    duration_s: float
    tasks: Collection[TaskRecord]
    engines: Sequence[EngineStats]  # one per replica
    snapshots: Mapping[str, Mapping[str, float]]  # "start" / "end": busy_s, ... at time "t"
    sim_time_s: float
    events: int
    rejects: Mapping[str, int]  # reject reason -> count
    core_stats: CoreStats | None = None  # the core's counters, when the policy is ours


def summarize(run: RunData, wall_s: float) -> SimResult:
    lo, hi = run.warmup_s, run.duration_s
    lat: list[float] = []
    waits: list[float] = []
    calls: list[float] = []
    completed = rejected = failed = unfinished = 0
    throughput = 0
    for st in run.tasks:
        if st.finished is not None and lo <= st.finished < hi:
            throughput += 1
        if not lo <= st.plan.arrival < hi:
            continue
        if st.rejected:
            rejected += 1
            continue
        if st.failed:
            failed += 1
            continue
        calls.extend(st.call_latencies)
        if st.first_start is not None:
            waits.append(st.first_start - st.plan.arrival)
        if st.finished is None:
            unfinished += 1
            lat.append(float("inf"))
        else:
            completed += 1
            lat.append(st.finished - st.plan.arrival)
    a, b = run.snapshots.get("start"), run.snapshots.get("end")
    n = len(run.engines)
    if a and b and b["t"] > a["t"]:
        span = (b["t"] - a["t"]) * n
        util = (b["busy_s"] - a["busy_s"]) / span
        prefill = (b["prefill_busy_s"] - a["prefill_busy_s"]) / span
        kv = (b["kv_frac_s"] - a["kv_frac_s"]) / span
    else:
        util = prefill = kv = float("nan")
    prefilled = sum(e.prefilled_tokens for e in run.engines)
    reprefilled = sum(e.reprefilled_tokens for e in run.engines)
    finite = [x for x in lat if math.isfinite(x)]
    return SimResult(
        policy=run.policy,
        rate_tasks_per_s=run.rate,
        replicas=run.replicas,
        measured_tasks=len(lat) + rejected + failed,
        completed=completed,
        rejected=rejected,
        failed=failed,
        unfinished=unfinished,
        task_p50_s=percentile(lat, 50),
        task_p95_s=percentile(lat, 95),
        task_p99_s=percentile(lat, 99),
        task_mean_s=sum(finite) / len(finite) if finite else float("nan"),
        call_p50_s=percentile(calls, 50),
        call_p99_s=percentile(calls, 99),
        admission_wait_p95_s=percentile(waits, 95),
        tasks_per_hour=throughput / (hi - lo) * 3600.0,
        utilization=util,
        prefill_share=prefill,
        kv_occupancy=kv,
        prefilled_tokens=prefilled,
        reprefilled_tokens=reprefilled,
        reprefilled_tokens_per_task=reprefilled / max(1, len(run.tasks)),
        engine_evictions=sum(e.evictions for e in run.engines),
        sim_time_s=run.sim_time_s,
        events=run.events,
        wall_s=wall_s,
        reject_reasons=dict(run.rejects),
        reprefill_s=sum(e.reprefill_s for e in run.engines),
        warm_ups=sum(e.warm_ups for e in run.engines),
        warm_prefilled_tokens=sum(e.warm_prefilled_tokens for e in run.engines),
        **_core_figures(run),
    )


def _core_figures(run: RunData) -> dict[str, Any]:
    s = run.core_stats
    if s is None:
        return {}
    lo, hi = run.warmup_s, run.duration_s
    queued = life = 0.0
    for st in run.tasks:
        w = s.tasks.get(st.plan.task_id)
        if w is None or st.finished is None or not lo <= st.plan.arrival < hi:
            continue
        queued += w.total_s
        life += st.finished - st.plan.arrival
    budget = sum(kv.budget_tokens for kv in s.replicas.values())
    reserved = sum(kv.mean_reserved_tokens for kv in s.replicas.values())
    return {
        "queued_share": queued / life if life > 0 else None,
        "idle_while_waiting_s": s.idle_while_waiting_s,
        "idle_while_waiting_share": (
            s.idle_while_waiting_s / s.observed_s if s.observed_s > 0 else None
        ),
        "ledger_reserved_share": reserved / budget if budget else None,
    }
