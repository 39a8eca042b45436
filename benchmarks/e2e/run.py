"""One benchmark run: the phases (the Ray replicas, the replicas without a cache,
the SGLang servers behind the routers), each contestant at its loads, the report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from benchmarks.e2e import EVERY_LOAD, ceiling, openloop, sizing
from benchmarks.e2e import calibration as calib
from benchmarks.e2e.contestants import Ours, RoundRobin, SGLangRouter
from benchmarks.e2e.plan import build_workload, open_schedule, schedule
from benchmarks.e2e.product import (
    GATEWAYS,
    ObservationText,
    journal_records,
    replay_schema,
    run_gateway,
    run_product,
)
from benchmarks.e2e.replay import KvProbe, RunTrace, TaskTrace, replay, replay_open
from benchmarks.e2e.report import core_summary, summarize
from benchmarks.e2e.results import recalibrate, report
from benchmarks.e2e.workload import (
    ReplayTask,
    follow_journal,
    plans_from_json,
    plans_to_json,
    shape,
)
from scheduler import SchedulerConfig
from scheduler.config import v1

__all__ = ["Bench", "finish", "recalibrate", "report", "run_all"]

#: contestants on the Ray replicas with the radix cache on (the executor's first); the
#: gateway's service runs on the same replicas (its own Executor and core, a run each)
POOL = ("ours", "ours_v1", "ours_core", "round_robin", *GATEWAYS)
#: the contestants that run through the Executor, and their scheduler settings
PRODUCT = {
    "ours": SchedulerConfig(),
    "ours_v1": v1(SchedulerConfig()),
    "ours_release": SchedulerConfig(),
}
ROUTERS = {
    "sticky_router": ("manual", ["--assignment-mode", "min_load"]),
    "sglang_router": ("cache_aware", []),
}
#: a contestant that brings its own servers (the gateway): its name -> its phase, run
#: after the others when the schedule has it: ``phase(b, cfg)`` starts what it needs on
#: replicas of ``cfg`` and runs each of its ``b.todo`` entries through ``b.drive`` (the
#: closed or open loop alike) and ``b.record``. With its name in CONTESTANTS (and in
#: EVERY_LOAD / OPEN_CAPABLE), that is all a new contestant needs.
PHASES: dict[str, Callable[[Bench, Any], Awaitable[None]]] = {}


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
        #: open loop: the rates (tasks/hour) of the sweep, each run one of them; with
        #: ``open_fractions`` (no --rates), set from the ceiling once the engines are probed
        self.open_rates: list[int] = list(getattr(args, "open_rates", None) or [])
        self.open_fractions: list[float] = list(getattr(args, "open_fractions", None) or [])
        self.open_loop = bool(self.open_rates or self.open_fractions)
        self.grid = (
            f"relative: {self.open_fractions} x the ceiling (probes' engine speed)"
            if self.open_fractions
            else "fixed (--rates)"
        )
        self.slo_s: float | None = getattr(args, "slo_s", None)
        self.slo_basis = "given (--slo-s)" if self.slo_s is not None else ""
        self.todo = (
            open_schedule(args.contestants, self.open_rates)
            if self.open_loop
            else schedule(
                args.contestants, args.concurrency, getattr(args, "every_load", EVERY_LOAD)
            )
        )

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
        self.save(
            {
                "contestant": name,
                "concurrency": load,
                "summary": summarize(run),
                "trace": run.to_json(),
            }
        )

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

    async def flushed(self, flush: Callable[[], Awaitable[bool]], timeout_s: float = 120) -> None:
        """The engines' caches dropped before a run: SGLang refuses while requests run,
        which an open-loop run's cut can leave behind (a cancelled call's request
        goes on in the engine): ask again until they are idle."""
        deadline = time.monotonic() + timeout_s
        while not await flush():
            if time.monotonic() > deadline:
                self.console.print(
                    "[yellow]warning:[/] the engines did not go idle in "
                    f"{timeout_s:g} s: the run starts with their cache"
                )
                return
            await asyncio.sleep(0.5)

    def label(self, load: int) -> str:
        return f"{load} tasks/hour (open loop)" if self.open_loop else f"{load} tasks at once"

    def open_args(self, rate: int) -> dict[str, Any]:
        """Open loop at ``rate``: the arrival times and the cut (empty: closed loop)."""
        if not self.open_loop:
            return {}
        if self.slo_s is None:
            raise ValueError("the open loop's SLO is not known: the engines were not probed")
        times = openloop.arrivals(len(self.workload), rate, self.args.seed)
        return {"times": times, "cut_at": openloop.deadline(times, self.slo_s)}

    async def drive(self, contestant: Any, load: int, kv: KvProbe) -> RunTrace:
        """The replayed workload through ``contestant``: ``load`` tasks at once, or
        (open loop) arriving at ``load`` tasks/hour."""
        on_task = self.progress(contestant.name, load)
        if self.open_loop:
            o = self.open_args(load)
            return await replay_open(
                self.replayed, contestant, self.sandboxes, o["times"], o["cut_at"], kv, on_task
            )
        return await replay(self.replayed, contestant, self.sandboxes, load, kv, on_task)

    @property
    def replayed(self) -> list[ReplayTask]:
        return self.followed if self.followed is not None else self.workload

    def longest(self) -> int:
        return max(sum(w.plan.new_tokens) + sum(w.plan.output_tokens) for w in self.workload)

    def progress(self, name: str, load: int) -> Callable[[TaskTrace], None]:
        done = [0]

        def on_task(trace: TaskTrace) -> None:
            done[0] += 1
            self.console.print(
                f"  {name}@{load}: {done[0]}/{self.args.tasks} tasks, last {trace.latency_s:.1f} s"
            )

        return on_task

    async def measure(self, handles: dict[str, Any], when: str) -> None:
        """Probe each replica alone, one after the other (they share the host's cores)."""
        a = self.args
        self.console.print(f"measuring the engines {when} the runs")
        per = [
            await calib.measure_engine(
                h, min(4000, self.longest()), a.history_tokens // 2, repeats=a.probe_repeats
            )
            for h in handles.values()
        ]
        self.probes[when] = {r: m["probes"] for r, m in zip(handles, per, strict=True)}
        self.measured.extend(per)
        self.rates.update(calib.mean_rates(self.measured))
        engine = calib.engine_spec({**self.rates, "host_contention": 0.0}, 1)
        ceil = ceiling.ceiling(self.workload, engine, self.args.replicas)
        if self.open_fractions and not self.open_rates:  # the grid: before the runs
            self.open_rates = openloop.grid(ceil["ceiling_per_hour"], tuple(self.open_fractions))
            self.grid += f" = {ceil['ceiling_per_hour']:g} tasks/hour"
            self.todo = open_schedule(self.args.contestants, self.open_rates)
            self.save({"open_rates": self.open_rates, "grid": self.grid})
        if self.open_loop and self.slo_s is None:  # before the runs: their cut needs it
            floor = ceil["task_floor_s"]
            self.slo_s = round(openloop.SLO_FLOOR_MULTIPLE * floor["p50"], 1)
            self.slo_basis = (
                f"{openloop.SLO_FLOOR_MULTIPLE:g} x the median task floor "
                f"({floor['p50']} s at the probes' engine speed)"
            )
            self.save({"slo_s": self.slo_s, "slo_basis": self.slo_basis})
        self.save({"probes": {when: self.probes[when]}, "engine_rates": self.rates})


async def pool_phase(b: Bench, cfg: Any, names: tuple[str, ...], probe: bool) -> None:
    from transformers import AutoTokenizer

    from executor.fleet.pool import ReplicaPool
    from executor.models import resolve

    if not probe and not any(n in names for n, _ in b.todo):
        return
    texts = b.texts or ObservationText(
        await asyncio.to_thread(AutoTokenizer.from_pretrained, str(resolve(cfg.model)))
    )
    pool = ReplicaPool(b.args.replicas, cfg, progress=True)
    await asyncio.to_thread(pool.start)
    try:
        handles = dict(pool.handles)
        if probe:
            await b.measure(handles, "before")
        todo = [(n, load) for n, load in b.todo if n in names]  # the grid set by the probes

        async def kv() -> list[tuple[str, int, int]]:
            caps = await asyncio.gather(*(h.acapacity() for h in handles.values()))
            return [(c.replica_id, c.used_tokens, c.max_total_num_tokens) for c in caps]

        # the executor's runs first at each load: the first one's journal is the plan
        order = sorted(todo, key=lambda x: (x[1], x[0] not in PRODUCT))
        for name, load in order:

            async def flush() -> bool:
                return all(await asyncio.gather(*(h.aflush_cache() for h in handles.values())))

            await b.flushed(flush)
            b.console.print(f"[bold]{name}[/] at {b.label(load)}")
            if name in PRODUCT:
                run, journal = await run_product(
                    name,
                    b.workload,
                    pool,
                    b.sandboxes,
                    load,
                    PRODUCT[name],
                    b.work / f"journal-{name}-{load}.sqlite",
                    texts,
                    kv,
                    b.progress(name, load),
                    **b.open_args(load),
                )
                records = journal_records(journal, b.workload)
                journal.close()
                if run.unfinished:  # cut (open loop): its journal is not the whole plan
                    b.record(name, load, run)
                    continue
                followed = follow_journal(b.workload, records, replay_schema(b.workload, texts))
                if b.followed is None:
                    b.followed, b.plan_source = followed, f"the journal of {name} at {load}"
                    b.save(
                        {
                            "plans": plans_to_json(followed),
                            "plan_source": b.plan_source,
                            "reply_schema": followed[0].reply_schema,
                        }
                    )
                same = sum(f.plan == g.plan for f, g in zip(followed, b.followed, strict=True))
                b.journal_matches[f"{name}@{load}"] = round(same / len(followed), 3)
            elif name in GATEWAYS:
                b.texts = texts
                run = await run_gateway(b, name, pool, load, kv)
            else:
                contestant = (
                    RoundRobin(handles)
                    if name == "round_robin"
                    else Ours(handles, SchedulerConfig(), name=name)
                )
                run = await b.drive(contestant, load, kv)
                if isinstance(contestant, Ours):  # the core's own figures
                    run.core = core_summary(contestant.dispatcher.core.stats())
            b.record(name, load, run)
        if probe and todo and not b.args.quick:  # again: the machine's speed drifts
            await b.measure(handles, "after")
    finally:
        await asyncio.to_thread(pool.shutdown)


async def router_phase(b: Bench, cfg: Any) -> None:
    from benchmarks.sglang_http import (
        LOG_REQUESTS,
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
                        await b.flushed(lambda: flush_servers(client, workers))
                        b.console.print(f"[bold]{name}[/] at {b.label(load)}")
                        router = SGLangRouter(
                            url, workers, name=name, sticky=name == "sticky_router"
                        )
                        try:
                            run = await b.drive(router, load, kv)
                        finally:
                            await router.close()
                        await asyncio.sleep(1.0)  # the servers' logs written
                        attribute(run, router.rids, served_by(logs, workers))
                        b.record(name, load, run)
    finally:
        await client.aclose()


async def flush_servers(client: httpx.AsyncClient, workers: dict[str, str]) -> bool:
    """Drop the SGLang HTTP servers' caches: True when every one did."""
    try:
        codes = [
            (await client.post(f"{url}/flush_cache", timeout=30)).status_code
            for url in workers.values()
        ]
    except httpx.HTTPError:
        return False
    return all(c == 200 for c in codes)


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
    cfg = ReplicaConfig(
        model=args.model,
        max_total_tokens=args.max_total_tokens,
        context_length=await size_context(b),
        num_cpus=1,
        cpu_threads=1,
    )
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
        for name, phase in PHASES.items():  # contestants with servers of their own
            if any(n == name for n, _ in b.todo):
                await phase(b, cfg)
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
            b.followed = [
                dataclasses.replace(w, reply_schema=line.get("reply_schema"))
                for w in plans_from_json(line["plans"])
            ]
            b.plan_source = str(line.get("plan_source", b.plan_source))
        elif "probes" in line:
            b.probes.update(line["probes"])
            b.rates = dict(line["engine_rates"])
        elif "open_rates" in line:
            b.open_rates, b.grid = [int(r) for r in line["open_rates"]], str(line["grid"])
        elif "slo_s" in line:
            b.slo_s, b.slo_basis = float(line["slo_s"]), str(line["slo_basis"])
        else:
            raise ValueError(f"line {n} is neither a run, the plans nor the probes")
    if not b.runs:
        raise ValueError("it holds no finished run")
    return report(b)
