"""python -m planner: task latency and the tail, and fleet sizing.

Examples:
  python -m planner                       # the 70B / 20-call / 30K-token defaults
  python -m planner --no-cache --json out/plan.json
  python -m planner --tasks-per-hour 60000 --html out/plan.html
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from planner.formulas import PlanInputs, inputs_dict, plan
from sim.cli_args import nonneg_float, positive_float, positive_int
from sim.model import DTYPE_BYTES, ModelShape

DESCRIPTION = """\
The published task-latency model of an agent fleet, with fleet sizing:

  per-call latency  = generation (+ cache off: re-prefill of the growing history,
                      history / prefill rate)
  task median       = n x (call median + tool latency)
  P(hit a p99 call) = 1 - 0.99^n
  task p95          = median + P(hit) x (call p99 - call median)
  cold prefill      = history / prefill rate;  warm prefill = new tokens / prefill rate
  tasks per replica = KV room / (KV bytes per token x history)

Beside the formula's p95 it prints a Monte-Carlo p95 from the fleet simulator
(the production scheduler core on a simulated engine, at light load) and the
verdict against the SLO. --html writes the same calculator as one
self-contained interactive page (sliders, live numbers, a latency plot).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m planner",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = PlanInputs()
    p.add_argument(
        "--calls",
        type=positive_int,
        default=d.n_calls,
        help=f"model calls per task, n ({d.n_calls})",
    )
    p.add_argument(
        "--call-median",
        type=nonneg_float,
        default=d.call_median_s,
        help=f"call generation time, median, s ({d.call_median_s})",
    )
    p.add_argument(
        "--call-p99",
        type=nonneg_float,
        default=d.call_p99_s,
        help=f"call generation time, p99, s ({d.call_p99_s})",
    )
    p.add_argument(
        "--tool", type=nonneg_float, default=d.tool_s, help=f"tool latency per call, s ({d.tool_s})"
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache",
        dest="cache",
        action="store_true",
        default=True,
        help="prefix cache on: history stays resident (default)",
    )
    cache.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="prefix cache off: every call re-prefills its history",
    )
    p.add_argument(
        "--prefill",
        type=positive_float,
        default=d.prefill_tok_s,
        help=f"prefill rate, tokens/s ({d.prefill_tok_s:,.0f})",
    )
    p.add_argument(
        "--history",
        type=positive_int,
        default=d.history_tokens,
        help=f"history at the last call, tokens ({d.history_tokens:,})",
    )
    p.add_argument(
        "--new-tokens",
        type=nonneg_float,
        default=d.new_tokens,
        help=f"new tokens per call, tokens ({d.new_tokens})",
    )
    p.add_argument(
        "--kv-room-gb",
        type=positive_float,
        default=d.kv_room_gb,
        help=f"KV room per replica, GB ({d.kv_room_gb:g})",
    )
    p.add_argument(
        "--kv-bytes-per-token",
        type=positive_int,
        default=None,
        help="KV bytes per token (default: from the model shape below)",
    )
    p.add_argument("--layers", type=positive_int, default=80, help="model layers (80)")
    p.add_argument("--kv-heads", type=positive_int, default=8, help="KV heads (8)")
    p.add_argument("--head-dim", type=positive_int, default=128, help="head dim (128)")
    p.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="KV dtype")
    p.add_argument(
        "--slo", type=positive_float, default=d.slo_s, help=f"task p95 SLO, s ({d.slo_s:g})"
    )
    p.add_argument(
        "--tasks-per-hour",
        type=nonneg_float,
        default=0.0,
        help="size a fleet for this load (Little's law over the KV bound)",
    )
    p.add_argument(
        "--mc-tasks",
        type=positive_int,
        default=300,
        help="tasks in the simulator's Monte-Carlo run (300)",
    )
    p.add_argument("--no-mc", action="store_true", help="skip the simulator Monte-Carlo")
    p.add_argument("--seed", type=int, default=0, help="Monte-Carlo seed (0)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write JSON here")
    p.add_argument(
        "--html", type=Path, default=None, metavar="PATH", help="write the interactive page here"
    )
    return p


def inputs_from_args(a: argparse.Namespace, p: argparse.ArgumentParser) -> PlanInputs:
    kv = (
        a.kv_bytes_per_token
        or ModelShape(a.layers, a.kv_heads, a.head_dim, a.dtype).kv_bytes_per_token
    )
    try:
        return PlanInputs(
            n_calls=a.calls,
            call_median_s=a.call_median,
            call_p99_s=a.call_p99,
            tool_s=a.tool,
            cache=a.cache,
            prefill_tok_s=a.prefill,
            history_tokens=a.history,
            new_tokens=int(a.new_tokens),
            kv_room_gb=a.kv_room_gb,
            kv_bytes_per_token=kv,
            slo_s=a.slo,
            tasks_per_hour=a.tasks_per_hour,
        )
    except ValueError as exc:
        p.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    inputs = inputs_from_args(a, p)
    result = plan(inputs)
    mc: dict[str, Any] | None = None
    if not a.no_mc:
        from planner.montecarlo import simulate_plan

        mc = simulate_plan(inputs, tasks=a.mc_tasks, seed=a.seed).to_json()
    doc: dict[str, Any] = {**result, "inputs": inputs_dict(inputs), "monte_carlo": mc}
    if mc is not None:
        doc["task_p95_mc_s"] = mc["task_p95_s"]
    w = 34
    print(f"{'calls per task':{w}} {inputs.n_calls}")
    print(
        f"{'call median / p99 (per call), s':{w}} "
        f"{result['call_median_s']:.3f} / {result['call_p99_s']:.3f}"
    )
    print(
        f"{'prefill cold / warm, s':{w}} "
        f"{result['prefill_cold_s']:.3f} / {result['prefill_warm_s']:.3f}"
    )
    print(f"{'P(task hits a p99 call)':{w}} {result['p_hit_p99']:.1%}")
    print(f"{'task median, s':{w}} {result['task_median_s']:.1f}")
    mc_txt = ""
    if mc is not None:
        v = mc["task_p95_s"]
        mc_txt = (
            f"   (simulator Monte-Carlo: {v:.1f}, {mc['tasks']} tasks)"
            if v
            else ("   (simulator Monte-Carlo: n/a)")
        )
    print(f"{'task p95 (formula), s':{w}} {result['task_p95_s']:.1f}{mc_txt}")
    print(
        f"{'tasks resident per replica':{w}} {result['tasks_per_replica']:.1f} "
        f"({result['kv_gb_per_task']:.1f} GB KV per task)"
    )
    if "replicas_needed" in result:
        print(
            f"{'replicas for the load':{w}} {result['replicas_needed']} "
            f"({result['concurrent_tasks']:,.0f} tasks in flight)"
        )
    print(f"{'verdict':{w}} {result['verdict']} (SLO {inputs.slo_s:g} s)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        safe = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in doc.items()
        }
        a.json.write_text(json.dumps(safe, indent=2) + "\n")
    if a.html:
        from planner.html_page import render

        a.html.parent.mkdir(parents=True, exist_ok=True)
        a.html.write_text(render(inputs, result, mc))
        print(f"wrote {a.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
