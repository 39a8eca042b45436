"""python -m sim.warmup: warm before return (``SchedulerConfig.warm_up``) on and off.

The same plans (same seed) run twice through the core ("ours"), once with warm-ups
and once without, for each seed; printed as JSON: the re-prefill on the critical
path (tokens of their own history the tasks' calls prefilled again, and the calls'
prefill seconds spent on them), the warm-ups' own prefill (off the path), task
p50/p95 and tasks/hour. Every ``python -m sim`` option applies (``--warm-up`` is set
by this command).

Example (the KV-bound fleet of docs/benchmarks.md):
  python -m sim.warmup --replicas 16 --tool-median-s 8 --tool-p99-s 16 \\
      --rate 2.6 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from scheduler.config import SchedulerConfig
from scheduler.core import SchedulerCore
from sim.cli import build_parser, config_from_args
from sim.simulator import SimConfig, Simulation


def seeds(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("want at least one seed")
    return out


def run_one(cfg: SimConfig, warm: bool) -> dict[str, Any]:
    sched = cfg.scheduler or SchedulerConfig(prefill_tokens_per_s=cfg.engine.prefill_tokens_per_s)
    sim = Simulation(replace(cfg, scheduler=replace(sched, warm_up=warm)), "ours")
    r = sim.run()
    j = r.to_json()  # (inf as "inf")
    core = sim.sched
    counters = core.stats().counters if isinstance(core, SchedulerCore) else {}
    return {
        "seed": cfg.seed,
        "warm_up": warm,
        "critical_reprefill_tokens": r.reprefilled_tokens,
        "critical_reprefill_s": round(r.reprefill_s, 1),
        "warm_ups": r.warm_ups,
        "warm_up_prefilled_tokens": r.warm_prefilled_tokens,
        "warm_ups_cancelled": counters.get("warm_up_cancelled", 0),
        "task_p50_s": j["task_p50_s"],
        "task_p95_s": j["task_p95_s"],
        "tasks_per_hour": round(r.tasks_per_hour, 1),
        "unfinished": r.unfinished,
        "utilization": round(r.utilization, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    p.prog = "python -m sim.warmup"
    p.description = __doc__
    p.add_argument("--seeds", type=seeds, default=[0, 1], help="workload seeds (0,1)")
    a = p.parse_args(argv)
    if a.sweep:
        p.error("--sweep is not supported here: give --rate")
    cfg = config_from_args(a, p)
    rows = []
    for seed in a.seeds:
        for warm in (False, True):
            row = run_one(replace(cfg, seed=seed), warm)
            rows.append(row)
            if not a.quiet:
                print(json.dumps(row), file=sys.stderr, flush=True)
    doc = {
        "command": "python -m sim.warmup " + " ".join(argv if argv is not None else sys.argv[1:]),
        "replicas": cfg.replicas,
        "rate_tasks_per_s": cfg.rate,
        "rows": rows,
    }
    text = json.dumps(doc, indent=2, default=str)
    print(text)
    if a.json:
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
