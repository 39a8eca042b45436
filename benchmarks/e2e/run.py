"""One benchmark run: the phases (the Ray replicas, the replicas without a cache,
the SGLang servers behind the routers), each contestant at its loads, the report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from benchmarks.e2e import calibration as calib
from benchmarks.e2e import sizing
from benchmarks.e2e.contestants import Ours, RoundRobin, SGLangRouter
from benchmarks.e2e.plan import build_workload, middle, schedule, workload_spec
from benchmarks.e2e.product import ObservationText, journal_records, replay_schema, run_product
from benchmarks.e2e.replay import RunTrace, TaskTrace, replay
from benchmarks.e2e.report import TURN_METRIC, summarize, sweep_rows, targets
from benchmarks.e2e.workload import (
    ReplayTask,
    follow_journal,
    plans_from_json,
    plans_to_json,
    shape,
)
from scheduler import SchedulerConfig
from scheduler.config import v1

#: contestants on the Ray replicas with the radix cache on (the executor's first)
POOL = ("ours", "ours_v1", "ours_core", "round_robin")
#: the contestants that run through the Executor, and their scheduler settings
PRODUCT = {"ours": SchedulerConfig(), "ours_v1": v1(SchedulerConfig()),
           "ours_release": SchedulerConfig()}  # fmt: skip
ROUTERS = {"sticky_router": ("manual", ["--assignment-mode", "min_load"]),
           "sglang_router": ("cache_aware", [])}  # fmt: skip


class Bench:
    """What the phases share: the settings, the workload as planned and as the
    executor ran it, the sandboxes, the runs so far."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args, self.console = args, console
        self.workload: list[ReplayTask] = build_workload(args)
        self.followed: list[ReplayTask] | None = None  # the executor's journal of them
        self.plan_source = "the seeded plan (no executor run)"
        self.journal_matches: dict[str, float] = {}
        self.runs: dict[tuple[str, int], RunTrace] = {}
        self.rates: dict[str, float] = {}
        self.probes: dict[str, Any] = {}
        self.measured: list[dict[str, Any]] = []
        self.sandboxes: Any = None
        self.texts: ObservationText | None = None  # the model's text of a given length
        self.sizing: dict[str, Any] = {}
        self._work: Path | None = None
        self.todo = schedule(args.contestants, args.concurrency)

    @property
    def work(self) -> Path:
        """Scratch files of the runs (journals, router logs): made on first use,
        removed by :meth:`close`."""
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix="aex-e2e-"))
        return self._work

    def close(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def record(self, name: str, load: int, run: RunTrace) -> None:
        """Keep a finished run; with ``--json``, also append its summary and trace to
        ``<json>.partial.jsonl`` at once (a killed run leaves what it finished)."""
        self.runs[(name, load)] = run
        self.save({"contestant": name, "concurrency": load, "summary": summarize(run),
                   "trace": run.to_json()})  # fmt: skip

    def save(self, line: dict[str, Any]) -> None:
        """One line of ``<json>.partial.jsonl`` (with ``--json``): a finished run, or
        what the report needs besides the runs (the plans followed, the probes):
        :func:`finish` writes the report from that file alone."""
        import json

        if self.args.json is not None:
            path = Path(f"{self.args.json}.partial.jsonl")
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(line) + "\n")

    @property
    def replayed(self) -> list[ReplayTask]:
        return self.followed if self.followed is not None else self.workload

    def longest(self) -> int:
        return max(sum(w.plan.new_tokens) + sum(w.plan.output_tokens) for w in self.workload)

    def progress(self, name: str, load: int) -> Callable[[TaskTrace], None]:
        done = [0]

        def on_task(trace: TaskTrace) -> None:
            done[0] += 1
            self.console.print(f"  {name}@{load}: {done[0]}/{self.args.tasks} tasks, "
                               f"last {trace.latency_s:.1f} s")  # fmt: skip

        return on_task

    async def measure(self, handles: dict[str, Any], when: str) -> None:
        """Probe each replica alone, one after the other (they share the host's cores)."""
        a = self.args
        self.console.print(f"measuring the engines {when} the runs")
        per = [await calib.measure_engine(h, min(4000, self.longest()), a.history_tokens // 2,
                                          repeats=a.probe_repeats)
               for h in handles.values()]  # fmt: skip
        self.probes[when] = {r: m["probes"] for r, m in zip(handles, per, strict=True)}
        self.measured.extend(per)
        self.rates.update(calib.mean_rates(self.measured))
        self.save({"probes": {when: self.probes[when]}, "engine_rates": self.rates})


async def pool_phase(b: Bench, cfg: Any, names: tuple[str, ...], probe: bool) -> None:
    from transformers import AutoTokenizer

    from executor.fleet.pool import ReplicaPool
    from executor.models import resolve

    todo = [(n, load) for n, load in b.todo if n in names]
    if not todo and not probe:
        return
    texts = b.texts or ObservationText(await asyncio.to_thread(
        AutoTokenizer.from_pretrained, str(resolve(cfg.model))))  # fmt: skip
    pool = ReplicaPool(b.args.replicas, cfg, progress=True)
    await asyncio.to_thread(pool.start)
    try:
        handles = dict(pool.handles)
        if probe:
            await b.measure(handles, "before")

        async def kv() -> list[tuple[str, int, int]]:
            caps = await asyncio.gather(*(h.acapacity() for h in handles.values()))
            return [(c.replica_id, c.used_tokens, c.max_total_num_tokens) for c in caps]

        # the executor's runs first at each load: the first one's journal is the plan
        order = sorted(todo, key=lambda x: (x[1], x[0] not in PRODUCT))
        for name, load in order:
            await asyncio.gather(*(h.aflush_cache() for h in handles.values()))
            b.console.print(f"[bold]{name}[/] at {load} tasks at once")
            if name in PRODUCT:
                run, journal = await run_product(
                    name, b.workload, pool, b.sandboxes, load, PRODUCT[name],
                    b.work / f"journal-{name}-{load}.sqlite", texts, kv, b.progress(name, load),
                )  # fmt: skip
                records = journal_records(journal, b.workload)
                journal.close()
                followed = follow_journal(b.workload, records, replay_schema(b.workload, texts))
                if b.followed is None:
                    b.followed, b.plan_source = followed, f"the journal of {name} at {load}"
                    b.save({"plans": plans_to_json(followed), "plan_source": b.plan_source,
                            "reply_schema": followed[0].reply_schema})  # fmt: skip
                same = sum(f.plan == g.plan for f, g in zip(followed, b.followed, strict=True))
                b.journal_matches[f"{name}@{load}"] = round(same / len(followed), 3)
            else:
                contestant = (RoundRobin(handles) if name == "round_robin"
                              else Ours(handles, SchedulerConfig(), name=name))  # fmt: skip
                run = await replay(b.replayed, contestant, b.sandboxes, load, kv,
                                   b.progress(name, load))  # fmt: skip
            b.record(name, load, run)
        if probe and todo and not b.args.quick:  # again: the machine's speed drifts
            await b.measure(handles, "after")
    finally:
        await asyncio.to_thread(pool.shutdown)


async def router_phase(b: Bench, cfg: Any) -> None:
    from benchmarks.sglang_http import (
        LOG_REQUESTS,
        flush_workers,
        served_by,
        sglang_router,
        sglang_servers,
        worker_kv,
    )

    todo = [(n, load) for n, load in b.todo if n in ROUTERS]
    if not todo:
        return
    b.console.print("[bold]routers[/]: starting SGLang HTTP servers")
    client = httpx.AsyncClient()
    logs = b.work / "router-logs"
    try:
        with sglang_servers(cfg, b.args.replicas, logs, LOG_REQUESTS) as workers:

            async def kv() -> list[tuple[str, int, int]]:
                return await worker_kv(client, workers)

            for name in ROUTERS:
                loads = [load for n, load in todo if n == name]
                if not loads:
                    continue
                policy, extra = ROUTERS[name]
                with sglang_router(workers, logs, policy, extra) as url:
                    for load in loads:
                        await flush_workers(client, workers)
                        b.console.print(f"[bold]{name}[/] at {load} tasks at once")
                        router = SGLangRouter(
                            url, workers, name=name, sticky=name == "sticky_router"
                        )
                        try:
                            run = await replay(
                                b.replayed, router, b.sandboxes, load, kv, b.progress(name, load)
                            )  # fmt: skip
                        finally:
                            await router.close()
                        await asyncio.sleep(1.0)  # the servers' logs written
                        attribute(run, router.rids, served_by(logs, workers))
                        b.record(name, load, run)
    finally:
        await client.aclose()


def attribute(run: RunTrace, rids: dict[tuple[str, int], str], server: dict[str, str]) -> None:
    """Name the worker of each router call the router's answer did not name."""
    for t in run.tasks:
        for c in t.calls:
            if c.replica_id == "?":
                c.replica_id = server.get(rids.get((t.task_id, c.k), ""), "?")


async def size_context(b: Bench) -> int:
    """The replicas' context from the prompts the product will render
    (:mod:`benchmarks.e2e.sizing`), not the plan's tokens alone."""
    chat, texts = await asyncio.to_thread(sizing.load_chat, b.args.model)
    b.texts = texts
    peaks = sizing.task_peaks(b.workload, chat, texts, b.args.model)
    b.sizing = sizing.sized_report(b.workload, peaks)
    return sizing.context_tokens(peaks, b.args.max_total_tokens)


async def run_all(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from executor.fleet.config import ReplicaConfig
    from tools.sandbox import create_backend

    b = Bench(args, console)
    cfg = ReplicaConfig(model=args.model, max_total_tokens=args.max_total_tokens,
                        context_length=await size_context(b), num_cpus=1,
                        cpu_threads=1)  # fmt: skip
    console.print(f"{args.scenario}: {shape(b.workload)}; runs: {b.todo}")
    b.sandboxes = await asyncio.to_thread(create_backend, args.sandbox)
    try:
        # this pool (radix cache on) is also where the engines are probed
        await pool_phase(b, cfg, POOL, probe=True)
        nocache = cfg.model_copy(update={"engine_args": {"disable_radix_cache": True}})
        await pool_phase(b, nocache, ("no_cache",), probe=False)
        release = cfg.model_copy(update={"release_in_engine": True})
        await pool_phase(b, release, ("ours_release",), probe=False)
        await router_phase(b, cfg)
    finally:
        await b.sandboxes.close()
        b.close()
    return report(b)


def finish(args: argparse.Namespace, console: Console, partial: Path) -> dict[str, Any]:
    """The report of a sweep that did not write one (killed, or its report step
    failed), from its ``<json>.partial.jsonl`` alone: its runs, the plans it
    followed, its engine probes. ``args``: the sweep's settings."""
    import json

    b = Bench(args, console)
    b.todo = []
    for n, text in enumerate(partial.read_text().splitlines(), 1):
        line = json.loads(text)
        if "trace" in line:
            b.runs[(line["contestant"], int(line["concurrency"]))] = RunTrace.from_json(
                line["trace"]
            )
        elif "plans" in line:
            b.followed = [dataclasses.replace(w, reply_schema=line.get("reply_schema"))
                          for w in plans_from_json(line["plans"])]  # fmt: skip
            b.plan_source = str(line.get("plan_source", b.plan_source))
        elif "probes" in line:
            b.probes.update(line["probes"])
            b.rates = dict(line["engine_rates"])
        else:
            raise ValueError(f"line {n} is neither a run, the plans nor the probes")
    if not b.runs:
        raise ValueError("it holds no finished run")
    return report(b)


def report(b: Bench) -> dict[str, Any]:
    args, mid = b.args, middle(b.args.concurrency)
    summaries = {key: summarize(run) for key, run in b.runs.items()}
    at_mid = {n: summaries[(n, mid)] for n in args.contestants if (n, mid) in summaries}
    out: dict[str, Any] = {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("json", "calibrate", "finish")
        },  # fmt: skip
        "middle_load": mid,
        "workload": {
            "planned": shape(b.workload),
            "replayed": shape(b.replayed),
            "plan_source": b.plan_source,
            "context": b.sizing,
            "journal_matches_plan": b.journal_matches,
            "outputs": "each reply as the executor's reply grammar made it; the others "
            "decode under the same grammar, greedy: the same reply, the same length",
        },  # fmt: skip
        "turn_metric": TURN_METRIC,
        "engine_rates": b.rates,
        "engine_probes": b.probes,
        "contestants": at_mid,
        "sweep": sweep_rows({k: s for k, s in summaries.items() if k[1] != mid}),
        "sweep_all": sweep_rows(summaries),
    }
    out["targets"] = {str(load): targets({n: s for (n, lo), s in summaries.items() if lo == load})
                      for load in sorted(set(args.concurrency))}  # fmt: skip
    out["plans"] = plans_to_json(b.replayed)
    out["traces"] = {f"{n}@{load}": run.to_json() for (n, load), run in b.runs.items()}
    out["calibration"] = calibrate(args, b.rates, {k: r for k, r in b.runs.items() if k[1] == mid},
                                   at_mid, b.replayed) if b.rates else {}  # fmt: skip
    out["_runs"] = [b.runs[(n, mid)] for n in args.contestants if (n, mid) in b.runs]
    return out


def calibrate(
    args: argparse.Namespace, rates: dict[str, float], runs: dict[tuple[str, int], RunTrace],
    measured: dict[str, dict[str, Any]], workload: list[ReplayTask],
) -> dict[str, Any]:  # fmt: skip
    """The simulator on the runs' own tasks (as replayed) and arrivals, with the probes'
    engine terms, at the speed the engines ran during each contestant's run, and with
    the slowdown a replica's calls showed while another one was busy (both from the
    calls that ran alone on their replica: a contestant with too few takes the
    others'). ``probes_only``: the probes' terms alone."""
    spec = workload_spec(args)
    byname = {n: r for (n, _), r in runs.items() if "p50_s" in measured.get(n, {})}
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
        engine = calib.scaled({**rates, "host_contention": contention},
                              speed * phases[0], speed * phases[1])  # fmt: skip

        def sim(r: dict[str, float], name: str = name, run: RunTrace = run) -> dict[str, Any]:
            return calib.simulate_trials(name, run, workload, spec, r, args.replicas,
                                         args.max_total_tokens, SchedulerConfig())  # fmt: skip

        out[name] = calib.compare(measured[name], sim(engine))
        out[name]["engine_speed"] = {
            "slowdown": round(speed, 3), "host_contention": contention,
            "prefill_slowdown": round(speed * phases[0], 3),
            "decode_slowdown": round(speed * phases[1], 3),
            "calls_alone": len(calls),
            "from": "its own calls" if own else "the other contestants' calls",
        }  # fmt: skip
        plain = calib.compare(measured[name], sim({**rates, "host_contention": 0.0}))
        out[name]["probes_only"] = {k: plain[k] for k in ("simulated", "error")}
        real = measured[name].get("tasks_per_hour")
        if loads[name] and real:  # the same tasks in a closed loop: its throughput
            closed = calib.simulate(name, run, workload, spec, engine, args.replicas,
                                    args.max_total_tokens, SchedulerConfig(),
                                    concurrency=loads[name])  # fmt: skip
            got = closed.get("tasks_per_hour", 0.0)
            out[name]["closed_loop"] = {
                "concurrency": loads[name], "measured_tasks_per_hour": real,
                "simulated_tasks_per_hour": got, "error": round(got / real - 1.0, 3),
            }  # fmt: skip
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
