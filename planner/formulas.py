"""The task-latency and fleet-sizing model, as published in docs/ARCHITECTURE.md ("The planner").

* per-call latency = generation (``call_median`` / ``call_p99``) plus, with the
  prefix cache off, the re-prefill of the full growing history
  (history / prefill rate). The history grows linearly to ``history_tokens``
  over the ``n`` calls, so the cache-off term of call k is
  ``history x k / n / prefill`` and its mean over the task is
  ``history x (n + 1) / (2 n) / prefill``;
* task median = n x (call median + tool latency);
* P(task hits a p99 call) = 1 - 0.99^n;
* task p95 estimate = median + P(hit) x (call p99 - call median);
* cold prefill = history / prefill rate; warm = new tokens / prefill rate;
* tasks resident per replica = KV room / (KV bytes per token x history).

The HTML page (:mod:`planner.html_page`) implements the same
formulas in JavaScript; a headless-Chromium test checks they agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PlanInputs:
    n_calls: int = 20
    call_median_s: float = 0.5
    call_p99_s: float = 2.0
    tool_s: float = 2.0
    cache: bool = True
    prefill_tok_s: float = 11_300.0
    history_tokens: int = 30_000
    new_tokens: int = 300
    kv_room_gb: float = 160.0
    kv_bytes_per_token: int = 327_680
    slo_s: float = 60.0
    tasks_per_hour: float = 0.0  # > 0: size a fleet for this load

    def __post_init__(self) -> None:
        if self.n_calls < 1:
            raise ValueError("n_calls must be >= 1")
        if self.call_median_s < 0 or self.call_p99_s < self.call_median_s:
            raise ValueError("need 0 <= call median <= call p99")
        if self.tool_s < 0:
            raise ValueError("tool latency must be >= 0")
        if self.prefill_tok_s <= 0 or self.kv_room_gb <= 0 or self.kv_bytes_per_token <= 0:
            raise ValueError("prefill rate, KV room and KV bytes per token must be > 0")
        if self.history_tokens < 1 or self.new_tokens < 0:
            raise ValueError("history must be >= 1 token and new tokens >= 0")
        if self.slo_s <= 0 or self.tasks_per_hour < 0:
            raise ValueError("SLO must be > 0 and tasks/hour >= 0")


def reprefill_mean_s(p: PlanInputs) -> float:
    """Mean per-call re-prefill of the growing history with the cache off."""
    if p.cache:
        return 0.0
    return p.history_tokens * (p.n_calls + 1) / (2 * p.n_calls) / p.prefill_tok_s


def plan(p: PlanInputs) -> dict[str, Any]:
    n = p.n_calls
    extra = reprefill_mean_s(p)
    call_median = p.call_median_s + extra
    call_p99 = p.call_p99_s + extra
    task_median = n * (call_median + p.tool_s)
    p_hit = 1.0 - 0.99**n
    task_p95 = task_median + p_hit * (call_p99 - call_median)
    kv_per_task = p.kv_bytes_per_token * p.history_tokens
    tasks_per_replica = p.kv_room_gb * 1e9 / kv_per_task
    out: dict[str, Any] = {
        "task_median_s": task_median,
        "task_p95_s": task_p95,
        "p_hit_p99": p_hit,
        "verdict": "meets SLO" if task_p95 <= p.slo_s else "misses SLO",
        "prefill_cold_s": p.history_tokens / p.prefill_tok_s,
        "prefill_warm_s": p.new_tokens / p.prefill_tok_s,
        "tasks_per_replica": tasks_per_replica,
        "call_median_s": call_median,
        "call_p99_s": call_p99,
        "kv_gb_per_task": kv_per_task / 1e9,
        "tasks_per_hour_per_replica": (
            tasks_per_replica * 3600.0 / task_median if task_median > 0 else math.inf
        ),
        "slo_s": p.slo_s,
    }
    if p.tasks_per_hour > 0:
        concurrent = p.tasks_per_hour * task_median / 3600.0  # Little's law
        out["concurrent_tasks"] = concurrent
        out["replicas_needed"] = math.ceil(concurrent / tasks_per_replica)
    return out


def inputs_dict(p: PlanInputs) -> dict[str, Any]:
    return asdict(p)
