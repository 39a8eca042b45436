"""python -m sim: a discrete-event fleet simulation that drives
the production scheduler core (and baselines) with a seeded agent workload.

Examples:
  python -m sim --replicas 8 --rate 1.5 --json out/sim.json --plot out/sim.png
  python -m sim --replicas 64 --sweep --rate-min 4 --rate-max 24 \
      --json out/sweep.json --plot out/sweep.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sim.cli_args import (
    add_engine_args,
    add_scheduler_args,
    add_workload_args,
    engine_spec,
    nonneg_float,
    positive_float,
    positive_int,
    scheduler_config,
    workload_spec,
)
from sim.metrics import SimResult
from sim.simulator import DEFAULT_ORDERING, POLICIES, SimConfig, Simulation
from sim.sweep import SweepResult, sweep_policy

DESCRIPTION = f"""\
Simulate a fleet of SGLang replicas serving agent tasks (sequential model calls
separated by tool calls) under several scheduling policies, on the same seeded
workload, and compare task latency (p50/p95/p99), tasks/hour, utilization, KV
occupancy, re-prefilled tokens and rejects.

Policies:
  ours         the scheduler core (scheduler/core.py) with its default ordering
               ({DEFAULT_ORDERING}): KV-budget admission, sticky placement, KV retention
               across tool waits, failover
  ours-v1      the core with admission v1: each task reserves its expected peak
               history for its whole life (no pause limit, no low water)
  ours-las     the core with least-attained-service ordering
  ours-edf     the core with earliest-deadline-first ordering
  sticky       SGLang router --policy manual --assignment-mode min_load, task id as
               the key: every call of a task to the replica its first call got
               (fewest in-flight calls); no admission control
  thunderagent ThunderAgent (arXiv 2602.13692): programs admitted by their actual
               tokens, the smallest tool-waiting ones paused under KV pressure,
               resumed best-fit-decreasing (re-prefilled); no failover
  continuum    Continuum / CacheTTL (arXiv 2511.02230): sticky, program-level
               FCFS, KV pinned through tools whose moving-average time is under a
               2 s TTL, left to LRU eviction otherwise
  cache_aware  SGLang router's cache_aware policy (approximate prefix match per
               worker, threshold 0.3; shortest queue when imbalanced: max-min > 64
               and max > 1.5 x min); no admission control
  round_robin  stateless round robin: each call to the next replica

Engine model: calls on a replica share its compute (chunked prefill + batched
decode); KV bytes per token from the model shape; the engine evicts cached
history LRU when a call needs room. Latencies are from arrival to the task's
last answer (admission waits included). Tasks arriving in [warmup, duration)
are measured; a task still running at duration + drain counts as infinitely
slow.
"""


def parse_kill(text: str) -> tuple[float, int]:
    try:
        t, idx = text.split(":")
        return float(t), int(idx)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--kill wants TIME:REPLICA_INDEX (e.g. 300:0), got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sim",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--replicas", type=positive_int, default=8, help="fleet size (8)")
    g.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        help="task arrivals per second (Poisson); default 0.19 x replicas",
    )
    g.add_argument(
        "--tasks-per-hour",
        type=positive_float,
        default=None,
        help="the same load in tasks/hour (instead of --rate)",
    )
    g.add_argument(
        "--duration", type=positive_float, default=900.0, help="seconds of arrivals (900)"
    )
    g.add_argument(
        "--warmup",
        type=nonneg_float,
        default=200.0,
        help="tasks arriving before this are not measured (200)",
    )
    g.add_argument(
        "--drain",
        type=nonneg_float,
        default=900.0,
        help="after the arrivals stop, wait at most this long (900)",
    )
    g.add_argument("--seed", type=int, default=0, help="workload seed (0)")
    g.add_argument(
        "--policies",
        default="ours,cache_aware,round_robin",
        help=f"comma-separated, from: {', '.join(POLICIES)} (ours,cache_aware,round_robin)",
    )
    g.add_argument(
        "--slo",
        type=positive_float,
        default=60.0,
        help="task p95 SLO in s: EDF deadlines, plot line, --sweep target (60)",
    )
    g.add_argument(
        "--kill",
        type=parse_kill,
        action="append",
        default=[],
        metavar="TIME:INDEX",
        help="kill replica INDEX at TIME (repeatable)",
    )
    s = p.add_argument_group("sweep: the load where p95 reaches the SLO, per policy")
    s.add_argument("--sweep", action="store_true", help="bisect the rate instead of one run")
    s.add_argument(
        "--rate-min",
        type=positive_float,
        default=None,
        help="lowest rate tried (default 0.05 x replicas)",
    )
    s.add_argument(
        "--rate-max",
        type=positive_float,
        default=None,
        help="highest rate tried (default 0.5 x replicas)",
    )
    s.add_argument("--sweep-iters", type=positive_int, default=7, help="bisection steps (7)")
    o = p.add_argument_group("output")
    o.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results here")
    o.add_argument(
        "--plot", type=Path, default=None, metavar="PATH", help="write a PNG comparing the policies"
    )
    o.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_engine_args(p)
    add_workload_args(p)
    add_scheduler_args(p)
    return p


def config_from_args(a: argparse.Namespace, p: argparse.ArgumentParser) -> SimConfig:
    if a.rate is not None and a.tasks_per_hour is not None:
        p.error("give --rate or --tasks-per-hour, not both")
    rate = (
        a.rate
        if a.rate is not None
        else (a.tasks_per_hour / 3600.0 if a.tasks_per_hour is not None else 0.19 * a.replicas)
    )
    if a.warmup >= a.duration:
        p.error(f"--warmup ({a.warmup:g}) must be shorter than --duration ({a.duration:g})")
    for t, idx in a.kill:
        if not 0 <= idx < a.replicas:
            p.error(f"--kill replica index {idx} is not in [0, {a.replicas})")
        if t < 0:
            p.error("--kill time must be >= 0")
    engine = engine_spec(a, p)
    try:
        return SimConfig(
            replicas=a.replicas,
            rate=rate,
            duration_s=a.duration,
            warmup_s=a.warmup,
            drain_s=a.drain,
            seed=a.seed,
            engine=engine,
            workload=workload_spec(a, p),
            scheduler=scheduler_config(a, p, a.slo, engine.prefill_tokens_per_s),
            kills=tuple(a.kill),
        )
    except ValueError as exc:
        p.error(str(exc))


def _fmt(x: float) -> str:
    return "inf" if isinstance(x, float) and math.isinf(x) else f"{x:,.1f}"


def print_table(results: list[SimResult]) -> None:
    cols: list[tuple[str, Callable[[SimResult], str]]] = [
        ("policy", lambda r: r.policy),
        ("p50 s", lambda r: _fmt(r.task_p50_s)),
        ("p95 s", lambda r: _fmt(r.task_p95_s)),
        ("p99 s", lambda r: _fmt(r.task_p99_s)),
        ("tasks/h", lambda r: f"{r.tasks_per_hour:,.0f}"),
        ("util", lambda r: f"{r.utilization:.2f}"),
        ("KV occ", lambda r: f"{r.kv_occupancy:.2f}"),
        ("re-prefill tok/task", lambda r: f"{r.reprefilled_tokens_per_task:,.0f}"),
        ("rejects", lambda r: str(r.rejected)),
        ("unfinished", lambda r: str(r.unfinished)),
    ]
    rows = [[c[0] for c in cols]] + [[f(r) for _, f in cols] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    for row in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    policies = [x.strip() for x in a.policies.split(",") if x.strip()]
    bad = [x for x in policies if x not in POLICIES]
    if bad or not policies:
        p.error(f"unknown policy {', '.join(bad) or '(none)'}; choose from {', '.join(POLICIES)}")
    cfg = config_from_args(a, p)

    def progress(policy: str, t: float, settled: int, live: int) -> None:
        if not a.quiet:
            print(
                f"  [{policy}] sim t={t:,.0f}s settled={settled:,} live={live:,}",
                file=sys.stderr,
                flush=True,
            )

    meta: dict[str, Any] = {
        "config": {
            k: v for k, v in asdict(replace(cfg, workload=replace(cfg.workload, trace=()))).items()
        },  # a trace: its file, not its tasks
        "trace": str(a.trace) if a.trace is not None else None,
        "slo_s": a.slo,
        "kv_capacity_tokens_per_replica": cfg.engine.kv_capacity_tokens,
        "default_ordering": DEFAULT_ORDERING,
    }
    if a.sweep:
        rmin = a.rate_min or 0.05 * a.replicas
        rmax = a.rate_max or 0.5 * a.replicas
        if rmin >= rmax:
            p.error("--rate-min must be below --rate-max")
        sweeps: list[SweepResult] = []
        for pol in policies:

            def on_point(r: SimResult, pol: str = pol) -> None:
                if not a.quiet:
                    print(
                        f"[{pol}] rate={r.rate_tasks_per_s:.3f}/s p95={_fmt(r.task_p95_s)}s "
                        f"tasks/h={r.tasks_per_hour:,.0f} ({r.wall_s:.1f}s wall)",
                        file=sys.stderr,
                        flush=True,
                    )

            sweeps.append(sweep_policy(cfg, pol, a.slo, rmin, rmax, a.sweep_iters, on_point))
        print(f"load where task p95 reaches {a.slo:g}s ({a.replicas} replicas):")
        for s in sweeps:
            if s.rate_at_slo is None:
                print(f"  {s.policy:12s} missed the SLO already at {rmin:g} tasks/s")
            else:
                more = " (or more: met at --rate-max)" if s.bound == "above_max" else ""
                print(
                    f"  {s.policy:12s} {s.rate_at_slo:.3f} tasks/s = "
                    f"{s.rate_at_slo * 3600:,.0f} tasks/h offered, "
                    f"{s.tasks_per_hour_at_slo:,.0f} tasks/h done{more}"
                )
        doc = {**meta, "sweep": [s.to_json() for s in sweeps]}
        if a.plot:
            from sim.plot import plot_sweep

            plot_sweep(sweeps, a.plot)
    else:
        results = []
        for pol in policies:
            if not a.quiet:
                print(
                    f"running {pol} at {cfg.rate:.3f} tasks/s on {cfg.replicas} replicas",
                    file=sys.stderr,
                    flush=True,
                )
            results.append(Simulation(replace(cfg), pol, progress=progress).run())
        print_table(results)
        doc = {**meta, "results": [r.to_json() for r in results]}
        if a.plot:
            from sim.plot import plot_comparison

            plot_comparison(results, a.plot, a.slo)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
