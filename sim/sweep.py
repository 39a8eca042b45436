"""Find, per policy, the arrival rate at which task p95 reaches the SLO.

p95 grows with load (monotone up to simulation noise), so a bisection on the
rate between ``lo`` (meets the SLO) and ``hi`` (misses it) brackets the knee;
the answer is interpolated linearly between the last bracket's two points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sim.metrics import SimResult
from sim.simulator import SimConfig, Simulation


@dataclass(slots=True)
class SweepResult:
    policy: str
    slo_s: float
    rate_at_slo: float | None  # tasks/s; None when not met even at the lowest rate
    tasks_per_hour_at_slo: float | None
    bound: str  # "bracketed", "below_min" (missed at rate_min), "above_max" (met at rate_max)
    points: list[SimResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "slo_s": self.slo_s,
            "rate_at_slo_tasks_per_s": self.rate_at_slo,
            "tasks_per_hour_at_slo": self.tasks_per_hour_at_slo,
            "bound": self.bound,
            "points": [p.to_json() for p in sorted(self.points, key=lambda p: p.rate_tasks_per_s)],
        }


def _p95(r: SimResult) -> float:
    return r.task_p95_s if not math.isnan(r.task_p95_s) else math.inf


def sweep_policy(
    cfg: SimConfig,
    policy: str,
    slo_s: float,
    rate_min: float,
    rate_max: float,
    iters: int,
    on_point: Callable[[SimResult], None] | None = None,
) -> SweepResult:
    def run(rate: float) -> SimResult:
        r = Simulation(replace(cfg, rate=rate), policy).run()
        if on_point is not None:
            on_point(r)
        return r

    out = SweepResult(policy, slo_s, None, None, "bracketed")
    lo_r = run(rate_min)
    out.points.append(lo_r)
    if _p95(lo_r) > slo_s:
        out.bound = "below_min"
        return out
    hi_r = run(rate_max)
    out.points.append(hi_r)
    if _p95(hi_r) <= slo_s:
        out.bound = "above_max"
        out.rate_at_slo, out.tasks_per_hour_at_slo = rate_max, hi_r.tasks_per_hour
        return out
    lo, hi = rate_min, rate_max
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        r = run(mid)
        out.points.append(r)
        if _p95(r) <= slo_s:
            lo, lo_r = mid, r
        else:
            hi, hi_r = mid, r
    p_lo, p_hi = _p95(lo_r), _p95(hi_r)
    frac = 0.0 if not math.isfinite(p_hi) else (slo_s - p_lo) / max(p_hi - p_lo, 1e-9)
    frac = min(max(frac, 0.0), 1.0)
    out.rate_at_slo = lo + frac * (hi - lo)
    out.tasks_per_hour_at_slo = lo_r.tasks_per_hour + frac * (
        hi_r.tasks_per_hour - lo_r.tasks_per_hour
    )
    return out
