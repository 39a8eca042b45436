"""A benchmark's report from its runs: the closed loop's (per contestant and load,
the sweep, the targets, the ceiling, the simulator's calibration) and the open
loop's (per contestant and rate, the knees, the ceiling). ``b`` is a
:class:`benchmarks.e2e.run.Bench` (its settings, workload, runs and probes)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from benchmarks.e2e import calibration as calib
from benchmarks.e2e import ceiling, openloop
from benchmarks.e2e.plan import build_workload, middle, workload_spec
from benchmarks.e2e.replay import RunTrace
from benchmarks.e2e.report import TURN_METRIC, summarize, sweep_rows, targets, waits_table
from benchmarks.e2e.workload import ReplayTask, plans_from_json, plans_to_json, shape
from scheduler import SchedulerConfig
from sim.metrics import percentile
from sim.simulator import SimConfig, Simulation


def workload_ceiling(b: Any, loads: list[int] | None) -> dict[str, Any]:
    """The ceiling of the replayed workload at the engine speed of the runs (none
    without the engines' probes)."""
    if not b.rates or not b.runs:
        return {}
    engine, basis = ceiling.measured_engine(
        b.rates, list(b.runs.values()), b.replayed, b.args.max_total_tokens
    )
    return {**ceiling.ceiling(b.replayed, engine, b.args.replicas, loads), "engine_speed": basis}


def report_open(b: Any) -> dict[str, Any]:
    """The open loop's report: per (contestant, rate) its figures, each contestant's
    knee, the ceiling."""
    if b.slo_s is None:
        raise ValueError("the open loop's SLO is not known (no probes): give --slo-s")
    ceil = workload_ceiling(b, None)
    top = ceil.get("ceiling_per_hour")
    summaries = {}
    for (name, rate), run in b.runs.items():
        s = {**summarize(run), **openloop.open_summary(run, len(b.workload), rate, b.slo_s)}
        summaries[(name, rate)] = {**s, **ceiling.shares(s, top or 0.0)}
    knees = openloop.knees(summaries, top)
    try:  # a prediction that fails must not cost the sweep's report
        simulated = predict_open(b, summaries) if b.rates else {}
    except (ValueError, KeyError, ZeroDivisionError) as exc:
        simulated = {"error": f"{type(exc).__name__}: {exc}"}
    for name, rate_ in simulated.get("knees", {}).items():
        knees[name]["simulated_rate_per_hour"] = rate_
    return {
        "simulated": simulated,
        "settings": settings(b.args),
        "open_loop": {
            "rates_per_hour": b.open_rates,
            "slo_s": b.slo_s,
            "slo_basis": b.slo_basis,
            "grid": b.grid,
            "knee": openloop.knee.__doc__,
        },
        "workload": {
            "planned": shape(b.workload),
            "replayed": shape(b.replayed),
            "plan_source": b.plan_source,
            "context": b.sizing,
        },
        "engine_rates": b.rates,
        "engine_probes": b.probes,
        "ceiling": ceil,
        "ceiling_per_hour": top,
        "knees": knees,
        "targets": openloop.open_targets(knees, summaries),
        "knees_table": openloop.table(knees, top),
        "waits_table": waits_table(summaries, "tasks/h"),
        "points": [
            {"contestant": n, **{k: v for k, v in s.items() if k != "kv_occupancy"}}
            for (n, _), s in sorted(summaries.items(), key=lambda x: (x[0][1], x[0][0]))
        ],
        "contestants": {},
        "plans": plans_to_json(b.replayed),
        "traces": {f"{n}@{r}/h": run.to_json() for (n, r), run in b.runs.items()},
        "_runs": [],
    }


def simulate_open(
    name: str,
    workload: list[ReplayTask],
    times: list[float],
    cut_at: float,
    spec: Any,
    terms: dict[str, float],
    replicas: int,
    kv_tokens: int,
    tools: dict[str, tuple[float, ...]],
) -> list[float | None]:
    """The simulator on an open-loop run's tasks (the same plans, arrivals and cut;
    each tool as long as its real run took, the plan's where it did not finish):
    each task's latency, None where it was unfinished (or shed) at the cut."""
    policy, cache = calib.SIM_POLICY[name]
    plans = [
        dataclasses.replace(w.plan, arrival=t, tool_s=tools.get(w.task_id, w.plan.tool_s))
        for w, t in zip(workload, times, strict=True)
    ]
    last = max(times)
    cfg = SimConfig(
        replicas=replicas,
        rate=1.0,
        duration_s=last + 1e-3,
        warmup_s=0.0,
        drain_s=max(0.0, cut_at - last),
        engine=calib.engine_spec(terms, kv_tokens, cache),
        workload=spec,
        scheduler=SchedulerConfig(),
    )
    sim = Simulation(cfg, policy, workload=plans)
    sim.run()
    out: list[float | None] = []
    for p in plans:
        st = sim.tasks.get(p.task_id)
        if st is not None and st.finished is not None and st.finished <= cut_at:
            out.append(st.finished - p.arrival)
        else:
            out.append(None)
    return out


def predict_open(b: Any, summaries: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """The simulator's p95 at each open-loop point (engine terms at the runs'
    measured speed and host contention) against the measured one, and the knee it
    predicts per contestant from the same plans and arrivals."""
    terms, basis = ceiling.measured_terms(b.rates, list(b.runs.values()), b.replayed)
    spec = workload_spec(b.args)
    points: dict[tuple[str, int], dict[str, Any]] = {}
    for (name, rate), run in b.runs.items():
        if name not in calib.SIM_POLICY:
            continue
        times = openloop.arrivals(len(b.replayed), rate, b.args.seed)
        calls = {w.task_id: w.calls for w in b.replayed}
        tools = {
            t.task_id: tuple(e - s for s, e in t.tools)
            for t in run.tasks
            if len(t.tools) == calls.get(t.task_id, 0) - 1
        }
        lat = simulate_open(
            name,
            b.replayed,
            times,
            openloop.deadline(times, b.slo_s),
            spec,
            terms,
            b.args.replicas,
            b.args.max_total_tokens,
            {k: v for k, v in tools.items() if v},
        )
        cut = openloop.deadline(times, b.slo_s)
        censored = [x if x is not None else cut - t for x, t in zip(lat, times, strict=True)]
        p95 = percentile(censored, 95)
        real = summaries[(name, rate)]["p95_s"]
        points[(name, rate)] = {
            "rate_per_hour": rate,
            "p95_s": round(p95, 2),
            "shed": 0,
            "meets_slo": None not in lat and p95 <= b.slo_s,
            "goodput_per_hour": round(
                rate * sum(x is not None and x <= b.slo_s for x in lat) / len(lat), 1
            ),
            "p95_error": round(p95 / real - 1.0, 3) if real else None,
        }
    errors = [abs(p["p95_error"]) for p in points.values() if p["p95_error"] is not None]
    return {
        "engine": basis,
        "points": [{"contestant": n, **p} for (n, _), p in sorted(points.items())],
        "knees": {n: k["rate_per_hour"] for n, k in openloop.knees(points, None).items()},
        "p95_within_25pct": round(sum(e <= 0.25 for e in errors) / len(errors), 3)
        if errors
        else None,
    }


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("json", "calibrate", "finish")
    }


def report(b: Any) -> dict[str, Any]:
    if b.open_loop:
        return report_open(b)
    args, mid = b.args, middle(b.args.concurrency)
    summaries = {key: summarize(run) for key, run in b.runs.items()}
    ceil = workload_ceiling(b, args.concurrency)
    for (_, load), s in summaries.items():
        s.update(
            ceiling.shares(
                s, ceil.get("by_load", {}).get(str(load), {}).get("ceiling_per_hour", 0.0)
            )
        )
    at_mid = {n: summaries[(n, mid)] for n in args.contestants if (n, mid) in summaries}
    out: dict[str, Any] = {
        "settings": settings(args),
        "middle_load": mid,
        "workload": {
            "planned": shape(b.workload),
            "replayed": shape(b.replayed),
            "plan_source": b.plan_source,
            "context": b.sizing,
            "journal_matches_plan": b.journal_matches,
            "outputs": "each reply as the executor's reply grammar made it; the others "
            "decode under the same grammar, greedy: the same reply, the same length",
        },
        "turn_metric": TURN_METRIC,
        "engine_rates": b.rates,
        "engine_probes": b.probes,
        "ceiling": ceil,
        "contestants": at_mid,
        "sweep": sweep_rows({k: s for k, s in summaries.items() if k[1] != mid}),
        "sweep_all": sweep_rows(summaries),
        "waits_table": waits_table(summaries, "load"),
    }
    out["targets"] = {
        str(load): targets({n: s for (n, lo), s in summaries.items() if lo == load})
        for load in sorted(set(args.concurrency))
    }
    out["plans"] = plans_to_json(b.replayed)
    out["traces"] = {f"{n}@{load}": run.to_json() for (n, load), run in b.runs.items()}
    out["calibration"] = (
        calibrate(
            args, b.rates, {k: r for k, r in b.runs.items() if k[1] == mid}, at_mid, b.replayed
        )
        if b.rates
        else {}
    )
    out["_runs"] = [b.runs[(n, mid)] for n in args.contestants if (n, mid) in b.runs]
    return out


def calibrate(
    args: argparse.Namespace,
    rates: dict[str, float],
    runs: dict[tuple[str, int], RunTrace],
    measured: dict[str, dict[str, Any]],
    workload: list[ReplayTask],
) -> dict[str, Any]:
    """The simulator on the runs' own tasks (as replayed) and arrivals, with the probes'
    engine terms, at the speed the engines ran during each contestant's run, and with
    the slowdown a replica's calls showed while another one was busy (both from the
    calls that ran alone on their replica: a contestant with too few takes the
    others'). ``probes_only``: the probes' terms alone."""
    spec = workload_spec(args)
    byname = {
        n: r
        for (n, _), r in runs.items()
        if "p50_s" in measured.get(n, {}) and n in calib.SIM_POLICY
    }
    loads = {n: load for (n, load) in runs}
    alone = {n: calib.alone_calls(run, workload, rates) for n, run in byname.items()}
    pooled = [x for xs in alone.values() for x in xs]
    contention = calib.fit_contention(pooled)
    phases = calib.fit_phases(pooled, contention)
    out = {}
    for name, run in byname.items():
        own = len(alone[name]) >= calib.MIN_ALONE_CALLS
        calls = alone[name] if own else pooled
        speed = calib.engine_slowdown(calls, contention, phases)
        engine = calib.scaled(
            {**rates, "host_contention": contention}, speed * phases[0], speed * phases[1]
        )

        def sim(r: dict[str, float], name: str = name, run: RunTrace = run) -> dict[str, Any]:
            return calib.simulate_trials(
                name,
                run,
                workload,
                spec,
                r,
                args.replicas,
                args.max_total_tokens,
                SchedulerConfig(),
            )

        out[name] = calib.compare(measured[name], sim(engine))
        out[name]["engine_speed"] = {
            "slowdown": round(speed, 3),
            "host_contention": contention,
            "prefill_slowdown": round(speed * phases[0], 3),
            "decode_slowdown": round(speed * phases[1], 3),
            "calls_alone": len(calls),
            "from": "its own calls" if own else "the other contestants' calls",
        }
        plain = calib.compare(measured[name], sim({**rates, "host_contention": 0.0}))
        out[name]["probes_only"] = {k: plain[k] for k in ("simulated", "error")}
        real = measured[name].get("tasks_per_hour")
        if loads[name] and real:  # the same tasks in a closed loop: its throughput
            closed = calib.simulate(
                name,
                run,
                workload,
                spec,
                engine,
                args.replicas,
                args.max_total_tokens,
                SchedulerConfig(),
                concurrency=loads[name],
            )
            got = closed.get("tasks_per_hour", 0.0)
            out[name]["closed_loop"] = {
                "concurrency": loads[name],
                "measured_tasks_per_hour": real,
                "simulated_tasks_per_hour": got,
                "error": round(got / real - 1.0, 3),
            }
    return out


def recalibrate(report: dict[str, Any]) -> dict[str, Any]:
    """Calibration again from a report's saved plans and traces (no engine needed)."""
    args = argparse.Namespace(**report["settings"])
    mid = report.get("middle_load")
    runs = {}
    for key, t in report["traces"].items():
        name, _, load = key.partition("@")
        if not load or int(load) == mid:
            runs[(name, int(load or 0))] = RunTrace.from_json(t)
    plans = report.get("plans")
    workload = plans_from_json(plans) if plans else build_workload(args)
    return calibrate(args, report["engine_rates"], runs, report["contestants"], workload)
