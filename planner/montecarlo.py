"""Monte-Carlo task p95 from the simulator, for the planner's inputs.

The simulator runs the production core on a small fleet at light load with a
workload made to match the inputs: call generation times lognormal with the
given median and p99 (output tokens at a fixed decode rate), tools of the given
latency, histories growing to ``history_tokens``, the prefix cache on or off.
Unlike the formula it also pays warm prefills, batching and real history
growth, so the two differ a little; a large gap means the formula's
assumptions do not hold for these inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.formulas import PlanInputs
from scheduler.config import SchedulerConfig
from sim.metrics import percentile
from sim.model import EngineSpec
from sim.simulator import SimConfig, Simulation
from sim.workload import WorkloadSpec

DECODE_TOK_S = 50.0  # generation seconds -> output tokens (few tokens: history stays as given)


@dataclass(frozen=True, slots=True)
class MonteCarlo:
    tasks: int
    task_median_s: float
    task_p95_s: float
    task_p99_s: float
    rejected: int

    def to_json(self) -> dict[str, float | int | None]:
        def f(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "tasks": self.tasks,
            "task_median_s": f(self.task_median_s),
            "task_p95_s": f(self.task_p95_s),
            "task_p99_s": f(self.task_p99_s),
            "rejected": self.rejected,
        }


def simulate_plan(p: PlanInputs, tasks: int = 300, seed: int = 0) -> MonteCarlo:
    out_median = max(1, round(p.call_median_s * DECODE_TOK_S))
    out_p99 = max(out_median, round(p.call_p99_s * DECODE_TOK_S))
    system, first = 0, max(1, min(p.new_tokens, p.history_tokens // 2))
    history = max(p.history_tokens, first + p.n_calls * out_median)
    workload = WorkloadSpec(
        calls=p.n_calls,
        history_tokens=history,
        system_prompt_tokens=system,
        first_message_tokens=first,
        output_tokens=out_median,
        output_p99_tokens=out_p99,
        token_spread=0.0,
        tool_median_s=p.tool_s,
        tool_p99_s=p.tool_s,
        agents=1,
        expect_margin=1.05,
    )
    engine = EngineSpec(
        prefill_tokens_per_s=p.prefill_tok_s,
        decode_tokens_per_s=DECODE_TOK_S,
        decode_batch_slowdown=0.0,
        kv_room_bytes=p.kv_room_gb * 1e9,
        kv_bytes_per_token=p.kv_bytes_per_token,
        prefix_cache=p.cache,
    )
    task_s = p.n_calls * (p.call_median_s + p.tool_s) + 1.0
    replicas = 4
    rate = 1.0 / task_s  # about one task at a time in the whole fleet: no queueing
    duration = tasks / rate
    cfg = SimConfig(
        replicas=replicas,
        rate=rate,
        duration_s=duration,
        warmup_s=0.0,
        drain_s=20 * task_s,
        seed=seed,
        engine=engine,
        workload=workload,
        scheduler=SchedulerConfig(slo_s=p.slo_s, prefill_tokens_per_s=p.prefill_tok_s),
    )
    sim = Simulation(cfg, "ours")
    res = sim.run()
    lat = [st.finished - st.plan.arrival for st in sim.tasks.values() if st.finished is not None]
    return MonteCarlo(
        tasks=len(lat),
        task_median_s=percentile(lat, 50),
        task_p95_s=res.task_p95_s,
        task_p99_s=res.task_p99_s,
        rejected=res.rejected,
    )
