"""End-to-end: the same agent tasks on the same engines, through four contestants.

A seeded workload of agent tasks (10-30 calls each, growing prompts, real tool
runs in bubblewrap sandboxes between the calls; :mod:`benchmarks.agent_workload`)
is replayed ``--concurrency`` tasks at a time through:

- ``ours``: this platform's scheduler (sticky placement, KV budget,
  tool-wait-aware retention, ordering) on Ray replica actors;
- ``round_robin``: each call to the next replica, on the same actors;
- ``sglang_router``: SGLang's router (``cache_aware``) in front of SGLang HTTP
  servers with the same engine settings, on loopback;
- ``no_cache``: ours on replicas with SGLang's radix cache disabled.

Reported per contestant: task latency p50/p95/p99, tasks/hour, prefill tokens
computed, cache hit ratio (SGLang's cached_tokens over prompt tokens), KV
occupancy over time; PNGs: latency CDF, and a timeline of tasks on replicas. The
simulator then replays the same tasks with engine rates measured here, and its
p50/p95 per contestant is set against the measured ones (calibration).

    python -m benchmarks.agents --json out/agents.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

CONTESTANTS = ("ours", "round_robin", "sglang_router", "no_cache")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in CONTESTANTS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"contestants are among {', '.join(CONTESTANTS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.agents", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--tasks", type=int, default=24, help="tasks per contestant (default: 24)")
    p.add_argument("--concurrency", type=int, default=12, help="tasks at once (default: 12)")
    p.add_argument("--replicas", type=int, default=2, help="engine replicas (default: 2)")
    p.add_argument("--model", default="tiny", help="registered model (default: tiny)")
    p.add_argument("--contestants", type=_names, default=list(CONTESTANTS),
                   help="comma-separated (default: all four)")  # fmt: skip
    w = p.add_argument_group("workload")
    w.add_argument("--calls", type=int, default=20, help="mean calls per task (default: 20)")
    w.add_argument("--calls-spread", type=float, default=0.5,
                   help="calls uniform in calls x [1-s, 1+s] (default: 0.5: 10-30)")  # fmt: skip
    w.add_argument("--history-tokens", type=int, default=6000,
                   help="mean final history per task (default: 6000)")  # fmt: skip
    w.add_argument("--system-tokens", type=int, default=600, help="shared system prompt")
    w.add_argument("--first-tokens", type=int, default=200, help="task's first message")
    w.add_argument("--output-tokens", type=int, default=24, help="mean output per call")
    w.add_argument("--tool-median", type=float, default=0.3, help="tool latency median (s)")
    w.add_argument("--tool-p99", type=float, default=2.0, help="tool latency p99 (s)")
    w.add_argument("--agents", type=int, default=2, help="agents (system prompts)")
    p.add_argument("--max-total-tokens", type=int, default=16384,
                   help="KV pool per replica in tokens (default: 16384: the tasks' histories "
                   "fit the fleet once, not twice)")  # fmt: skip
    p.add_argument("--sandbox", default="bwrap", help="sandbox backend of the tools")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-repeats", type=int, default=5,
                   help="each engine probe is the median of this many (default: 5)")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="write the report here (and PNGs)")
    p.add_argument(
        "--calibrate", type=Path, default=None, metavar="REPORT",
        help="only redo the calibration from a saved report's traces (no engines); "
        "with --json, write the report with it there",
    )  # fmt: skip
    args = p.parse_args(argv)
    if min(args.tasks, args.concurrency, args.replicas, args.probe_repeats) < 1:
        p.error("--tasks, --concurrency, --replicas and --probe-repeats must be >= 1")
    return args


def workload_spec(args: argparse.Namespace) -> Any:
    from sim.workload import WorkloadSpec

    return WorkloadSpec(
        calls=args.calls, calls_spread=args.calls_spread, history_tokens=args.history_tokens,
        system_prompt_tokens=args.system_tokens, first_message_tokens=args.first_tokens,
        output_tokens=args.output_tokens, token_spread=0.5, tool_median_s=args.tool_median,
        tool_p99_s=args.tool_p99, agents=args.agents,
    )  # fmt: skip


def summarize(run: Any) -> dict[str, Any]:
    from sim.metrics import percentile

    lat = [t.latency_s for t in run.tasks]
    calls = [c for t in run.tasks for c in t.calls]
    tools = [b - a for t in run.tasks for a, b in t.tools]
    prompt = sum(c.prompt_tokens for c in calls)
    cached = sum(c.cached_tokens for c in calls)
    kv_by_replica: dict[str, list[float]] = {}
    for _, rid, used, cap in run.kv:
        kv_by_replica.setdefault(rid, []).append(used / cap)
    return {
        "p50_s": round(percentile(lat, 50), 2),
        "p95_s": round(percentile(lat, 95), 2),
        "p99_s": round(percentile(lat, 99), 2),
        "tasks_per_hour": round(len(lat) / run.ended * 3600, 1),
        "makespan_s": round(run.ended, 1),
        "calls": len(calls),
        "prefill_tokens": prompt - cached,
        "cache_hit_ratio": round(cached / prompt, 3) if prompt else 0.0,
        "queued_s_total": round(sum(c.started - c.submitted for c in calls), 1),
        "call_s_mean": round(statistics.mean(c.ended - c.started for c in calls), 3),
        "tool_s_mean": round(statistics.mean(tools), 3) if tools else 0.0,
        "time_in_calls": round(sum(c.ended - c.started for c in calls) / sum(lat), 3),
        "kv_occupancy_mean": {
            r: round(statistics.mean(v), 3) for r, v in sorted(kv_by_replica.items())
        },
        "kv_occupancy": [[round(t, 1), r, u] for t, r, u, _ in run.kv],
    }


async def run_all(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from benchmarks import agent_calibration as calib
    from benchmarks.agent_contestants import Ours, RoundRobin, SGLangRouter
    from benchmarks.agent_replay import replay
    from benchmarks.agent_workload import make_workload
    from benchmarks.sglang_http import router_deployment
    from executor.fleet.config import ReplicaConfig
    from executor.fleet.pool import ReplicaPool
    from scheduler import SchedulerConfig
    from tools.sandbox import create_backend

    spec = workload_spec(args)
    workload = make_workload(spec, args.tasks, args.seed)
    longest = max(sum(w.plan.new_tokens) + sum(w.plan.output_tokens) for w in workload)
    config = ReplicaConfig(
        model=args.model, max_total_tokens=args.max_total_tokens, context_length=longest + 1024,
        num_cpus=1, cpu_threads=1,
    )  # fmt: skip
    sched = SchedulerConfig()
    console.print(
        f"{args.tasks} tasks ({sum(w.calls for w in workload)} calls, histories up to "
        f"{longest} tokens), {args.concurrency} at a time, {args.replicas} replicas of "
        f"{args.model}"
    )
    sandboxes = await asyncio.to_thread(create_backend, args.sandbox)
    runs: dict[str, Any] = {}
    rates: dict[str, float] = {}
    probes: dict[str, Any] = {}

    def progress(name: str) -> Any:
        done = [0]

        def on_task(trace: Any) -> None:
            done[0] += 1
            console.print(f"  {name}: {done[0]}/{args.tasks} tasks, last {trace.latency_s:.1f} s")

        return on_task

    measured: list[dict[str, Any]] = []

    async def measure(handles: dict[str, Any], when: str) -> None:
        """Probe each replica alone, one after the other (the replicas share the
        host's cores); the rates are the mean over every replica and every time."""
        console.print(f"measuring the engines {when} the runs (prefill and decode probes)")
        per = [
            await calib.measure_engine(h, min(4000, longest), args.history_tokens // 2,
                                       repeats=args.probe_repeats)
            for h in handles.values()
        ]  # fmt: skip
        probes[when] = {r: m["probes"] for r, m in zip(handles, per, strict=True)}
        measured.extend(per)
        rates.update(calib.mean_rates(measured))
        console.print(f"engine rates: {rates}")

    async def pool_runs(names: list[str], cfg: ReplicaConfig, probe_engines: bool) -> None:
        pool = ReplicaPool(args.replicas, cfg, progress=True)
        await asyncio.to_thread(pool.start)
        try:
            handles = dict(pool.handles)
            if probe_engines:
                await measure(handles, "before")

            async def probe() -> list[tuple[str, int, int]]:
                caps = await asyncio.gather(*(h.acapacity() for h in handles.values()))
                return [(c.replica_id, c.used_tokens, c.max_total_num_tokens) for c in caps]

            for name in names:
                await asyncio.gather(*(h.aflush_cache() for h in handles.values()))
                contestant = (
                    RoundRobin(handles)
                    if name == "round_robin"
                    else Ours(handles, sched, name=name)
                )
                console.print(f"[bold]{name}[/]")
                runs[name] = await replay(
                    workload, contestant, sandboxes, args.concurrency, probe, progress(name)
                )
            if probe_engines and names:  # again: the machine's speed drifts
                await measure(handles, "after")
        finally:
            await asyncio.to_thread(pool.shutdown)

    try:
        # this pool (radix cache on) is also where the engines are probed, so it
        # starts even when neither of its contestants runs
        await pool_runs([n for n in args.contestants if n in ("ours", "round_robin")],
                        config, probe_engines=True)  # fmt: skip
        if "no_cache" in args.contestants:
            nocache = config.model_copy(update={"engine_args": {"disable_radix_cache": True}})
            await pool_runs(["no_cache"], nocache, probe_engines=False)
        if "sglang_router" in args.contestants:
            console.print("[bold]sglang_router[/] (starting SGLang HTTP servers and the router)")
            logs = Path(tempfile.mkdtemp(prefix="aex-router-"))
            with router_deployment(config, args.replicas, logs) as (url, workers):
                router = SGLangRouter(url, workers)
                try:
                    runs["sglang_router"] = await replay(
                        workload, router, sandboxes, args.concurrency, None,
                        progress("sglang_router"),
                    )  # fmt: skip
                finally:
                    await router.close()
    finally:
        await sandboxes.close()

    report: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "calibrate")},
        "engine_rates": rates,
        "engine_probes": probes,
        "contestants": {n: summarize(runs[n]) for n in args.contestants if n in runs},
    }
    report["calibration"] = calibrate(args, rates, runs, report["contestants"])
    report["targets"] = targets(report["contestants"])
    report["traces"] = {n: run.to_json() for n, run in runs.items()}
    report["_runs"] = [runs[n] for n in args.contestants if n in runs]
    return report


def calibrate(
    args: argparse.Namespace, rates: dict[str, float], runs: dict[str, Any],
    measured: dict[str, dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The simulator on the run's own tasks (rebuilt from the seed) and arrivals,
    with the probes' engine terms, at the speed the engines ran during each
    contestant's run, and with the slowdown a replica's calls showed while another
    one was busy (both from the calls that ran alone on their replica: a
    contestant with too few, such as the router, whose calls name no replica,
    takes the others'). ``probes_only``: the probes' terms alone."""
    from benchmarks import agent_calibration as calib
    from benchmarks.agent_workload import make_workload
    from scheduler import SchedulerConfig

    spec = workload_spec(args)
    workload = make_workload(spec, args.tasks, args.seed)
    alone = {name: calib.alone_calls(run, workload, rates) for name, run in runs.items()}
    pooled = [x for xs in alone.values() for x in xs]
    contention = calib.fit_contention(pooled)
    out = {}
    for name, run in runs.items():
        own = len(alone[name]) >= calib.MIN_ALONE_CALLS
        calls = alone[name] if own else pooled
        speed = calib.engine_slowdown(calls, contention)
        engine = calib.scaled({**rates, "host_contention": contention}, speed)

        def sim(r: dict[str, float], name: str = name, run: Any = run) -> dict[str, Any]:
            return calib.simulate_trials(name, run, workload, spec, r, args.replicas,
                                         args.max_total_tokens, SchedulerConfig())  # fmt: skip

        out[name] = calib.compare(measured[name], sim(engine))
        out[name]["engine_speed"] = {
            "slowdown": round(speed, 3), "host_contention": contention,
            "calls_alone": len(calls),
            "from": "its own calls" if own else "the other contestants' calls",
        }  # fmt: skip
        plain = calib.compare(measured[name], sim({**rates, "host_contention": 0.0}))
        out[name]["probes_only"] = {k: plain[k] for k in ("simulated", "error")}
    return out


def recalibrate(report: dict[str, Any]) -> dict[str, Any]:
    """Calibration again from a report's saved traces (no engine needed)."""
    from benchmarks.agent_replay import RunTrace

    settings = report["settings"]
    args = argparse.Namespace(**settings)
    runs = {n: RunTrace.from_json(t) for n, t in report["traces"].items()}
    return calibrate(args, report["engine_rates"], runs, report["contestants"])


def targets(c: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "ours" in c:
        others = [n for n in c if n != "ours"]
        out["ours_lowest_p95"] = all(c["ours"]["p95_s"] <= c[n]["p95_s"] for n in others)
        if "round_robin" in c:
            ratio = c["ours"]["tasks_per_hour"] / c["round_robin"]["tasks_per_hour"]
            out["ours_vs_round_robin_tasks_per_hour"] = round(ratio, 2)
            out["ours_at_least_1_5x_round_robin"] = ratio >= 1.5
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    from benchmarks.agent_plots import plot_cdf, plot_timeline
    from executor.errors import ExecutorError

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

    try:
        report = asyncio.run(run_all(args, console))
    except ExecutorError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    runs = report.pop("_runs")
    text = json.dumps(report, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "contestants"} | {
        "contestants": {n: {k: v for k, v in s.items() if k != "kv_occupancy"}
                        for n, s in report["contestants"].items()}}, indent=2))  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        plot_cdf(runs, args.json.with_name(args.json.stem + "_cdf.png"))
        plot_timeline(runs, args.json.with_name(args.json.stem + "_timeline.png"))
        console.print(f"wrote {args.json} and its PNGs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
