"""``python -m benchmarks.e2e``: its command line, its workload settings, its report file.

python -m benchmarks.e2e --json out/e2e.json                 # the sweep, every contestant
python -m benchmarks.e2e --quick --json out/e2e_quick.json   # CI: one load, four contestants
python -m benchmarks.e2e --open-loop --json out/e2e_open.json  # open loop: the knees
python -m benchmarks.e2e --quick --open-loop --json out/e2e_open_quick.json
python -m benchmarks.e2e --scenario swe_agent --save-trace swe.jsonl  # then python -m sim --trace
python -m benchmarks.e2e --calibrate out/e2e.json            # the calibration again, no engines
python -m benchmarks.e2e --finish out/e2e.json.partial.jsonl --json out/e2e.json
                               # the report of a sweep that wrote none (same settings)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.e2e import CONTESTANTS, EVERY_LOAD, OPEN_CAPABLE, OPEN_LOOP
from benchmarks.e2e import __doc__ as package_doc
from benchmarks.e2e.openloop import FRACTIONS, QUICK_FRACTIONS, SLO_FLOOR_MULTIPLE
from benchmarks.e2e.plan import build_workload, middle, open_schedule, schedule, workload_spec
from benchmarks.e2e.workload import SCENARIOS

__all__ = [
    "CONTESTANTS",
    "build_workload",
    "main",
    "middle",
    "parse_args",
    "open_schedule",
    "schedule",
    "workload_spec",
]

#: --quick: a few tasks at one load, the product path against the core and the sticky
#: router and round robin (under 5 minutes here)
QUICK = {
    "tasks": 4,
    "concurrency": [4],
    "calls": 6,
    "calls_spread": 0.0,
    "history_tokens": 2000,
    "contestants": ["ours", "ours_core", "sticky_router", "round_robin"],
    "probe_repeats": 1,
}


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in CONTESTANTS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"contestants are among {', '.join(CONTESTANTS)}")
    return names


def _loads(text: str) -> list[int]:
    try:
        loads = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        loads = []
    if not loads or min(loads) < 1:
        raise argparse.ArgumentTypeError("--concurrency is a comma-separated list of ints >= 1")
    return loads


def _rates(text: str) -> list[int]:
    try:
        rates = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        rates = []
    if not rates or min(rates) < 1:
        raise argparse.ArgumentTypeError("--rates is a comma-separated list of tasks/hour >= 1")
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e",
        description=package_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario", choices=SCENARIOS, default="default", help="workload shape (default: default)"
    )
    # 12 tasks at 4/8/12 at once: the sweep of 14 runs fits 45 minutes on 2 cores
    # (16 tasks at 6/12/18 took 65 minutes on a loaded host and was not done)
    p.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="tasks per run (default: 12; with --trace, the trace's)",
    )
    p.add_argument(
        "--trace",
        default=None,
        metavar="FILE",
        help="the tasks of an agent trace (JSONL, one task per line: per step "
        "the new input tokens, output tokens and tool seconds; "
        "docs/benchmarks-e2e.md) instead of a scenario",
    )
    p.add_argument(
        "--concurrency",
        type=_loads,
        default=[4, 8, 12],
        help="the load sweep, tasks at once (default: 4,8,12; "
        f"{', '.join(EVERY_LOAD)} at every load, the others at the middle one)",
    )
    p.add_argument("--replicas", type=int, default=2, help="engine replicas (default: 2)")
    p.add_argument("--model", default="tiny", help="registered model (default: tiny)")
    p.add_argument(
        "--contestants",
        type=_names,
        default=None,
        help=f"comma-separated among {', '.join(CONTESTANTS)}; named ones run at every "
        f"load (default: all; open loop: {', '.join(OPEN_LOOP)}, also "
        f"{', '.join(n for n in OPEN_CAPABLE if n not in OPEN_LOOP)})",
    )
    o = p.add_argument_group("open loop (seeded Poisson arrivals; the knee per contestant)")
    o.add_argument(
        "--open-loop",
        action="store_true",
        help="a rate sweep on a grid of rates (default: "
        f"{','.join(map(str, FRACTIONS))} x the workload's ceiling, --quick "
        f"{','.join(map(str, QUICK_FRACTIONS))} x; --rates: a fixed grid): per contestant "
        "the highest rate with task p95 <= the SLO and no task unfinished (and every "
        "lower rate)",
    )
    o.add_argument(
        "--arrival-rate",
        type=int,
        default=None,
        metavar="R",
        help="one open-loop run of each contestant at R tasks/hour",
    )
    o.add_argument(
        "--rates", type=_rates, default=None, help="the open loop's fixed grid, tasks/hour"
    )
    o.add_argument(
        "--slo-s",
        type=float,
        default=None,
        help=f"task p95 SLO (default: {SLO_FLOOR_MULTIPLE:g} x the workload's "
        "median task floor at the probes' engine speed)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI size: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    w = p.add_argument_group("workload (scenario default)")
    w.add_argument("--calls", type=int, default=20, help="mean calls per task (default: 20)")
    w.add_argument(
        "--calls-spread",
        type=float,
        default=0.5,
        help="calls uniform in calls x [1-s, 1+s] (default: 0.5: 10-30)",
    )
    w.add_argument(
        "--history-tokens",
        type=int,
        default=6000,
        help="mean final history per task (default: 6000)",
    )
    w.add_argument("--system-tokens", type=int, default=600, help="shared system prompt")
    w.add_argument("--first-tokens", type=int, default=200, help="task's first message")
    w.add_argument("--output-tokens", type=int, default=24, help="mean output per call")
    w.add_argument("--tool-median", type=float, default=0.3, help="tool latency median (s)")
    w.add_argument("--tool-p99", type=float, default=2.0, help="tool latency p99 (s)")
    w.add_argument("--agents", type=int, default=2, help="agents (system prompts)")
    p.add_argument(
        "--max-total-tokens",
        type=int,
        default=None,
        help="KV pool per replica in tokens (default: 16384 for the default "
        "scenario, 32768 for heavy_tail, swe_agent and traces)",
    )
    p.add_argument("--sandbox", default="bwrap", help="sandbox backend of the tools")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--probe-repeats",
        type=int,
        default=3,
        help="each engine probe is the median of this many (default: 3)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report here (and PNGs)")
    p.add_argument(
        "--save-trace",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the workload's tasks as a trace and stop (no engines): "
        "`python -m sim --trace FILE` simulates the same tasks",
    )
    p.add_argument(
        "--calibrate",
        type=Path,
        default=None,
        metavar="REPORT",
        help="only redo the calibration from a saved report's traces (no engines); "
        "with --json, write the report with it there",
    )
    p.add_argument(
        "--finish",
        type=Path,
        default=None,
        metavar="PARTIAL",
        help="write the report of a sweep that did not (killed, or its report failed) "
        "from its <json>.partial.jsonl, no engines; give the sweep's own settings",
    )
    args = p.parse_args(argv)
    named = args.contestants  # contestants given by name run at every load (and rate)
    args.every_load = tuple(named) if named else EVERY_LOAD
    if args.quick:
        for key, value in QUICK.items():
            setattr(
                args,
                key,
                value if key != "contestants" or args.contestants is None else args.contestants,
            )
    args.open_rates, args.open_fractions = None, None
    if args.arrival_rate is not None or args.open_loop or args.rates:
        if args.arrival_rate is not None and args.arrival_rate < 1:
            p.error("--arrival-rate must be >= 1 task/hour")
        args.open_rates = [args.arrival_rate] if args.arrival_rate is not None else args.rates
        if args.open_rates is None:  # the grid relative to the ceiling, once probed
            args.open_fractions = list(QUICK_FRACTIONS if args.quick else FRACTIONS)
        if args.contestants is None or args.quick and args.contestants == QUICK["contestants"]:
            args.contestants = list(OPEN_LOOP)
        closed_only = [n for n in args.contestants if n not in OPEN_CAPABLE]
        if closed_only:
            p.error(
                f"{', '.join(closed_only)} run closed loop only: the open loop's "
                f"contestants are among {', '.join(OPEN_CAPABLE)}"
            )
    if args.contestants is None:
        args.contestants = list(CONTESTANTS)
    if args.slo_s is not None and args.slo_s <= 0:
        p.error("--slo-s must be > 0")
    if args.trace is not None:
        from sim.traces import TraceError, load_trace

        try:
            held = len(load_trace(args.trace))
        except TraceError as exc:
            p.error(str(exc))
        args.tasks = held if args.tasks is None else args.tasks
    if args.tasks is None:
        args.tasks = 12
    if args.max_total_tokens is None:
        big = args.scenario in ("heavy_tail", "swe_agent") or args.trace is not None
        args.max_total_tokens = 32768 if big else 16384
    if min(args.tasks, args.replicas, args.probe_repeats) < 1:
        p.error("--tasks, --replicas and --probe-repeats must be >= 1")
    return args


def brief(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its traces and time series (what is printed)."""
    out = {k: v for k, v in report.items() if k not in ("traces", "plans", "contestants", "sweep")}
    out["contestants"] = {
        n: {k: v for k, v in s.items() if k != "kv_occupancy"}
        for n, s in report["contestants"].items()
    }
    out["sweep"] = report.get("sweep", [])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    from benchmarks.e2e.plots import plot_cdf, plot_knees, plot_kv, plot_timeline
    from benchmarks.e2e.run import finish, recalibrate, run_all
    from executor.errors import ExecutorError
    from tools.sandbox.base import SandboxUnavailable

    if args.save_trace is not None:
        from sim.traces import save_trace

        workload = build_workload(args)
        prefix = {w.plan.agent: len(w.system_ids) for w in workload}
        save_trace(args.save_trace, [w.plan for w in workload], prefix)
        console.print(f"wrote {len(workload)} tasks to {args.save_trace}")
        return 0
    if args.calibrate is not None:
        try:
            report = json.loads(args.calibrate.read_text())
            report["calibration"] = recalibrate(report)
        except (OSError, KeyError, ValueError) as exc:
            console.print(f"[red]error:[/] {args.calibrate} is not a report with traces: {exc}")
            return 2
        print(json.dumps(report["calibration"], indent=2))
        if args.json:  # the report again, with this calibration
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            console.print(f"wrote {args.json}")
        return 0

    if args.finish is not None:
        try:
            report = finish(args, console, args.finish)
        except (OSError, KeyError, ValueError) as exc:
            console.print(f"[red]error:[/] {args.finish} is not a sweep's partial file: {exc}")
            return 2
    else:
        try:
            report = asyncio.run(run_all(args, console))
        except (ExecutorError, SandboxUnavailable) as exc:
            console.print(f"[red]error:[/] {exc}")
            return 2
    runs = report.pop("_runs")
    if "knees" in report:  # open loop
        print(
            json.dumps(
                {k: v for k, v in report.items() if k not in ("traces", "plans", "points")},
                indent=2,
            )
        )
        print(report["knees_table"])
    else:
        print(json.dumps(brief(report), indent=2))
    print(report.get("waits_table", ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        stem = args.json.with_name(args.json.stem)
        if runs:
            plot_cdf(runs, Path(f"{stem}_cdf.png"))
            plot_timeline(runs, Path(f"{stem}_timeline.png"))
            plot_kv(runs, Path(f"{stem}_kv.png"))
        if "knees" in report:
            plot_knees(
                report["points"],
                report["open_loop"]["slo_s"],
                report["ceiling_per_hour"],
                Path(f"{stem}_knees.png"),
            )
        console.print(f"wrote {args.json} and its PNGs")
    return 0
