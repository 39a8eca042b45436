"""python -m sim.host_tier: when does a host-memory KV tier (SGLang HiCache) beat
recomputing a released history? A grid of tool-wait lengths x host capacities
per replica, on the 70B profile (``EngineSpec`` defaults), at one load.

A history that leaves the GPU (released by the scheduler, or evicted LRU by the
engine) goes to host DRAM (``--host-gb`` per replica, LRU) and comes back at
``--gbps`` instead of being re-prefilled. Per call, a reload of ``n`` tokens
costs ``n x KV bytes per token / bandwidth`` (30K tokens x 320 KB at 50 GB/s:
0.2 s, against 2.7 s of prefill at 11,300 tok/s); whether it happens depends on
the history still being in the host tier when the task calls again, that is on
the tool wait against the tier's capacity and the rate histories are written to
it.

Example:
  python -m sim.host_tier --replicas 16 --rate 2.4 --tool-medians 2,8,30 \\
      --host-gb 0,64,256,1024 --policies ours,sticky --json out/host_tier.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from sim.cli_args import positive_float, positive_int
from sim.model import EngineSpec
from sim.simulator import POLICIES, SimConfig, Simulation
from sim.workload import WorkloadSpec


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated numbers, got {text!r}") from None


def run_point(
    base: SimConfig, policy: str, tool_median: float, host_gb: float, gbps: float
) -> dict[str, object]:
    cfg = replace(
        base,
        engine=replace(base.engine, host_tier_bytes=host_gb * 1e9, host_tier_gbps=gbps),
        workload=replace(base.workload, tool_median_s=tool_median, tool_p99_s=2 * tool_median),
    )
    sim = Simulation(cfg, policy)
    r = sim.run()
    tasks = max(1, len(sim.tasks))
    return {
        "policy": policy,
        "tool_median_s": tool_median,
        "host_gb": host_gb,
        "gbps": gbps,
        "task_p50_s": r.task_p50_s,
        "task_p95_s": r.task_p95_s,
        "tasks_per_hour": r.tasks_per_hour,
        "unfinished": r.unfinished,
        "reprefilled_tokens_per_task": r.reprefilled_tokens_per_task,
        "reloaded_tokens_per_task": sum(e.stats.reloaded_tokens for e in sim.engines.values())
        / tasks,
        "utilization": r.utilization,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sim.host_tier",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--replicas", type=positive_int, default=16)
    p.add_argument("--rate", type=positive_float, default=2.4, help="tasks/s (2.4)")
    p.add_argument(
        "--tool-medians",
        type=floats,
        default=[2.0, 8.0, 30.0],
        help="tool latency medians, s (p99 = 2 x median) (2,8,30)",
    )
    p.add_argument(
        "--host-gb",
        type=floats,
        default=[0.0, 64.0, 256.0, 1024.0],
        help="host tier GB per replica (0,64,256,1024)",
    )
    p.add_argument("--gbps", type=positive_float, default=50.0, help="load bandwidth (50)")
    p.add_argument("--policies", default="ours,sticky")
    p.add_argument("--duration", type=positive_float, default=900.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    policies = [x for x in a.policies.split(",") if x]
    if any(x not in POLICIES for x in policies):
        p.error(f"unknown policy in {a.policies!r}; choose from {', '.join(POLICIES)}")
    engine = EngineSpec()
    base = SimConfig(
        replicas=a.replicas,
        rate=a.rate,
        duration_s=a.duration,
        warmup_s=200.0,
        drain_s=900.0,
        seed=a.seed,
        engine=engine,
        workload=WorkloadSpec(),
    )
    history = base.workload.history_tokens
    print(
        f"one {history:,}-token history: recompute "
        f"{history / engine.prefill_tokens_per_s:.2f} s, reload at {a.gbps:g} GB/s "
        f"{replace(engine, host_tier_gbps=a.gbps).host_load_seconds(history):.2f} s; "
        f"break-even bandwidth "
        f"{engine.kv_bytes_per_token * engine.prefill_tokens_per_s / 1e9:.1f} GB/s"
    )
    rows = []
    print(
        "policy  tool median s  host GB  p50 s  p95 s  tasks/h  re-prefill tok/task  "
        "reloaded tok/task  unfinished"
    )
    for pol in policies:
        for tm in a.tool_medians:
            for gb in a.host_gb:
                row = run_point(base, pol, tm, gb, a.gbps)
                rows.append(row)
                print(
                    f"{pol:6s}  {tm:13g}  {gb:7g}  {row['task_p50_s']:5.1f}  "
                    f"{row['task_p95_s']:5.1f}  {row['tasks_per_hour']:7,.0f}  "
                    f"{row['reprefilled_tokens_per_task']:19,.0f}  "
                    f"{row['reloaded_tokens_per_task']:17,.0f}  {row['unfinished']:10}",
                    flush=True,
                )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(
            json.dumps(
                {"config": vars(a) | {"json": str(a.json)}, "rows": rows}, indent=2, default=str
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
