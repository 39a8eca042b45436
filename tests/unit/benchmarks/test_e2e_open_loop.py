"""The end-to-end benchmark's open loop and ceiling, engine-free: seeded arrivals,
the knee on a grid, goodput and shed accounting, the open-loop replay's cut, the
ceiling's arithmetic, and the reports' keys."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks.e2e import OPEN_LOOP
from benchmarks.e2e import calibration as calib
from benchmarks.e2e import cli as e2e_cli
from benchmarks.e2e import run as e2e_run
from benchmarks.e2e.ceiling import call_floors, ceiling, shares, task_floor
from benchmarks.e2e.contestants import CallResult
from benchmarks.e2e.openloop import (
    FRACTIONS,
    QUICK_FRACTIONS,
    arrivals,
    deadline,
    grid,
    knee,
    knees,
    open_summary,
)
from benchmarks.e2e.replay import CallTrace, RunTrace, TaskTrace, replay_open
from benchmarks.e2e.workload import ReplayTask
from executor.dispatch import TaskRefused
from sim.model import EngineSpec
from sim.workload import TaskPlan

SMALL = [
    "--tasks",
    "3",
    "--replicas",
    "1",
    "--calls",
    "4",
    "--calls-spread",
    "0",
    "--history-tokens",
    "1500",
    "--system-tokens",
    "300",
    "--first-tokens",
    "100",
    "--output-tokens",
    "8",
    "--tool-median",
    "0.1",
    "--tool-p99",
    "0.3",
]
RATES_ = {"prefill_tokens_per_s": 1000.0, "decode_tokens_per_s": 10.0, "decode_batch_slowdown": 0.0}


def test_arrivals_are_seeded_poisson_at_the_rate() -> None:
    a = arrivals(2000, 360, seed=3)
    assert a == arrivals(2000, 360, seed=3)  # reproducible
    assert a != arrivals(2000, 360, seed=4) and a[:5] != arrivals(5, 720, seed=3)
    assert all(x < y for x, y in zip(a, a[1:], strict=False))
    gaps = [y - x for x, y in zip([0.0, *a], a, strict=False)]
    assert statistics.mean(gaps) == pytest.approx(10.0, rel=0.08)  # 360/h: 10 s apart
    assert statistics.stdev(gaps) == pytest.approx(10.0, rel=0.12)  # exponential: sd = mean
    assert deadline([1.0, 5.0, 3.0], 60.0) == 65.0
    with pytest.raises(ValueError):
        arrivals(3, 0, seed=0)


def _point(rate: int, meets: bool, goodput: float = 0.0) -> dict[str, Any]:
    return {
        "rate_per_hour": rate,
        "meets_slo": meets,
        "goodput_per_hour": goodput,
        "p95_s": 10.0 if meets else 99.0,
        "shed": 0,
    }


def test_the_knee_is_the_highest_rate_met_with_every_lower_one() -> None:
    grid = [
        _point(120, True, 120),
        _point(240, True, 230),
        _point(360, False, 200),
        _point(480, True, 470),
    ]  # a lucky point after a miss: not the knee
    k = knee(list(reversed(grid)))
    assert k["rate_per_hour"] == 240 and k["goodput_per_hour"] == 230
    assert k["bound"] == "bracketed"
    assert knee([_point(120, True, 119), _point(240, True, 238)])["bound"] == "above_grid"
    low = knee([_point(120, False), _point(240, False)])
    assert low["rate_per_hour"] == 0.0 and low["bound"] == "below_grid"
    both = knees({("ours", 120): _point(120, True, 110), ("rr", 120): _point(120, False)}, 440.0)
    assert both["ours"]["ceiling_share"] == 0.25 and both["rr"]["ceiling_share"] == 0.0
    assert set(both["ours"]) >= {
        "rate_per_hour",
        "goodput_per_hour",
        "ceiling_share",
        "p95_s",
        "shed",
    }


def _trace(task_id: str, start: float, latency: float) -> TaskTrace:
    return TaskTrace(
        task_id, start, start + latency, [CallTrace(0, "r0", start, start, start + 0.1, 100, 0)]
    )


def test_goodput_counts_tasks_within_the_slo_and_shed_apart() -> None:
    """10 offered at 600/h, SLO 30 s: 6 finished (4 within the SLO), 2 shed, 2 cut."""
    tasks = [_trace(f"t{i}", float(i), lat) for i, lat in enumerate([5, 10, 20, 30, 31, 50])]
    run = RunTrace("ours", 0.0, 100.0, tasks, [], rejected=2, unfinished_arrivals=[60.0, 90.0])
    s = open_summary(run, offered=10, rate_per_hour=600, slo_s=30.0)
    assert (s["finished"], s["good"], s["shed"], s["unfinished"]) == (6, 4, 2, 2)
    assert s["goodput_per_hour"] == 240.0  # 600/h x 4 of 10 within the SLO
    assert s["completed_per_hour"] == 360.0
    assert s["meets_slo"] is False  # two unfinished
    # censored at the cut: the one that arrived at 60 s had waited 40 s at least
    assert s["p95_s"] >= 40.0
    met = open_summary(RunTrace("ours", 0.0, 40.0, tasks[:4], []), 4, 600, 30.0)
    assert met["meets_slo"] and met["goodput_per_hour"] == 600.0 and met["p95_s"] <= 30.0


class _Sandbox:
    async def exec(self, argv: list[str], timeout: float | None = None) -> Any:
        from tools.sandbox.base import ExecResult

        return ExecResult(exit_code=0, stdout=b"", stderr=b"")

    async def close(self) -> None:
        pass


class _Sandboxes:
    async def open(self, task_id: str) -> _Sandbox:
        return _Sandbox()


class _Contestant:
    """Each call takes ``call_s`` (``slow`` tasks 10x); ``refuse``: refused at arrival."""

    name = "fake"

    def __init__(self, call_s: float, slow: set[str], refuse: set[str]) -> None:
        self.call_s, self.slow, self.refuse = call_s, slow, refuse

    async def call(self, task: ReplayTask, k: int, ids: list[int], out: int) -> CallResult:
        if task.task_id in self.refuse:
            raise TaskRefused(task.task_id, "full")
        await asyncio.sleep(self.call_s * (10 if task.task_id in self.slow else 1))
        return CallResult("r0", [1] * out, len(ids), 0, self.call_s)

    def tool_started(self, task_id: str) -> None:
        pass

    def finished(self, task_id: str) -> None:
        pass


def _tasks(n: int, calls: int = 2) -> list[ReplayTask]:
    return [
        ReplayTask(
            TaskPlan(f"t{i}", "a", 0.0, (4,) * calls, (2,) * calls, (0.0,) * (calls - 1), 100),
            (),
            ((5, 6, 7, 8),) * calls,
        )
        for i in range(n)
    ]


def test_open_loop_replay_starts_tasks_at_their_arrivals_and_cuts_at_the_deadline() -> None:
    tasks = _tasks(4)
    times = [0.0, 0.1, 0.2, 0.3]
    fake = _Contestant(0.02, slow={"t3"}, refuse={"t1"})
    run = asyncio.run(replay_open(tasks, fake, _Sandboxes(), times, cut_at=0.45))  # type: ignore[arg-type]
    done = {t.task_id: t for t in run.tasks}
    assert set(done) == {"t0", "t2"} and run.rejected == 1 and run.unfinished_arrivals == [0.3]
    for t in run.tasks:  # started at its arrival, whatever else ran
        assert t.started == pytest.approx(times[int(t.task_id[1:])], abs=0.05)
    assert run.ended == pytest.approx(0.45, abs=0.1)
    back = RunTrace.from_json(json.loads(json.dumps(run.to_json())))
    assert back.unfinished == 1 and back.rejected == 1


def test_the_ceiling_by_hand() -> None:
    """prefill 1,000 tok/s, decode 10 tok/s, nothing else: a call is new/1000 + out/10."""
    engine = EngineSpec(
        prefill_tokens_per_s=1000.0,
        decode_tokens_per_s=10.0,
        decode_batch_slowdown=0.0,
        call_overhead_s=0.0,
    )
    a = ReplayTask(TaskPlan("a", "x", 0.0, (100, 50), (10, 20), (1.0,), 500), (), ((), ()))
    b = ReplayTask(
        TaskPlan("b", "x", 0.0, (300, 100, 200), (10, 10, 10), (2.0, 3.0), 900), (), ((), (), ())
    )
    assert call_floors(a, engine) == pytest.approx([0.1 + 1.0, 0.05 + 2.0])
    assert task_floor(a, engine) == pytest.approx(1.0 + 3.15)
    assert task_floor(b, engine) == pytest.approx(5.0 + 0.6 + 3.0)  # tools + 600 tok + 30 out
    c = ceiling([a, b], engine, replicas=2, loads=[1, 4])
    assert c["task_floor_s"] == {"p50": pytest.approx(6.38, abs=0.01), "mean": 6.38, "max": 8.6}
    # engine: 3.15 s and 3.6 s of calls a task, mean 3.375: 2 x 3600 / 3.375 = 2133.3/h
    assert c["engine_bound_per_hour"] == pytest.approx(2133.3, abs=0.1)
    # closed loop at 1: 3600 / 6.375 = 564.7/h (latency-bound); at 4: 2258.8 > engine
    assert c["by_load"]["1"] == {"latency_bound_per_hour": 564.7, "ceiling_per_hour": 564.7}
    assert c["by_load"]["4"]["ceiling_per_hour"] == pytest.approx(2133.3, abs=0.1)
    assert c["ceiling_per_hour"] == c["engine_bound_per_hour"]  # open loop
    assert shares({"tasks_per_hour": 282.35, "goodput_per_hour": 100.0}, 564.7) == {
        "tasks_ceiling_share": 0.5,
        "goodput_ceiling_share": 0.177,
    }


def test_open_loop_arguments() -> None:
    a = e2e_cli.parse_args(["--open-loop"])  # the grid: fractions of the ceiling
    assert a.open_rates is None and a.open_fractions == list(FRACTIONS)
    assert a.contestants == list(OPEN_LOOP)
    q = e2e_cli.parse_args(["--quick", "--open-loop"])
    assert q.open_fractions == list(QUICK_FRACTIONS) and q.contestants == list(OPEN_LOOP)
    assert q.tasks <= 6 and len(q.open_fractions) <= 3
    fixed = e2e_cli.parse_args(["--open-loop", "--rates", "100,200"])
    assert fixed.open_rates == [100, 200] and fixed.open_fractions is None
    one = e2e_cli.parse_args(["--arrival-rate", "300", "--slo-s", "45"])
    assert one.open_rates == [300] and one.slo_s == 45.0
    assert e2e_cli.parse_args([]).open_rates is None
    for bad in (["--rates", "100,x"], ["--slo-s", "0"], ["--arrival-rate", "0"]):
        with pytest.raises(SystemExit):
            e2e_cli.parse_args(bad)
    b = e2e_run.Bench(e2e_cli.parse_args([*SMALL, "--rates", "600,300"]), Console(quiet=True))
    assert b.todo == [(n, r) for r in (300, 600) for n in OPEN_LOOP]  # lowest rate first


def test_the_default_grid_brackets_the_ceiling() -> None:
    """The default grid: fractions of the ceiling, rounded to 10 tasks/hour, lowest
    first, below and above the ceiling; the Bench sets it (and its schedule) from the
    probes, and the report says it was relative."""
    assert grid(700.0) == [210, 350, 490, 630, 770]
    assert grid(40.0, (0.1, 0.11, 1.1)) == [10, 40]  # at least 10, no repeats
    with pytest.raises(ValueError):
        grid(0.0)
    b = e2e_run.Bench(e2e_cli.parse_args([*SMALL, "--open-loop"]), Console(quiet=True))
    assert b.open_loop and b.todo == []  # nothing to run before the probes

    async def probe(*_: Any, **__: Any) -> dict[str, Any]:
        return {"probes": [], **RATES_}

    with pytest.MonkeyPatch.context() as m:
        m.setattr(calib, "measure_engine", probe)
        m.setattr(calib, "mean_rates", lambda _: dict(RATES_))
        asyncio.run(b.measure({"r0": None}, "before"))
    engine = calib.engine_spec({**RATES_, "host_contention": 0.0}, 1)
    top = ceiling(b.workload, engine, b.args.replicas)["ceiling_per_hour"]
    assert b.open_rates == grid(top) and min(b.open_rates) < top < max(b.open_rates)
    assert b.todo == [(n, r) for r in b.open_rates for n in OPEN_LOOP]
    assert "relative" in b.grid and b.slo_s is not None


def _fake_run(name: str, b: Any, latency: float, cut: int = 0) -> RunTrace:
    tasks = [
        TaskTrace(
            w.task_id,
            float(i),
            float(i) + latency,
            [
                CallTrace(k, f"r{k % 2}", i, i, i + 0.5, 400 + 100 * k, 300 + 90 * k)
                for k in range(w.calls)
            ],
            [(0.0, 0.1)] * (w.calls - 1),
        )
        for i, w in enumerate(b.workload[cut:])
    ]
    return RunTrace(
        name, 0.0, 30.0, tasks, [(0.5, "r0", 100, 1000)], unfinished_arrivals=[1.0] * cut
    )


def test_open_report_has_the_knees_and_the_ceiling() -> None:
    b = e2e_run.Bench(
        e2e_cli.parse_args([*SMALL, "--rates", "300,600", "--slo-s", "20"]), Console(quiet=True)
    )
    b.rates = dict(RATES_)
    for name, rate in b.todo:  # round robin misses at 600 (one task cut), the rest meet
        cut = 1 if (name, rate) == ("round_robin", 600) else 0
        b.record(name, rate, _fake_run(name, b, 10.0 + rate / 100, cut))
    r = e2e_run.report(b)
    assert set(r["knees"]) == set(OPEN_LOOP) and r["ceiling_per_hour"] > 0
    for k in r["knees"].values():
        assert {"rate_per_hour", "goodput_per_hour", "ceiling_share", "p95_s", "shed"} <= set(k)
    ours = r["knees"]["ours"]
    assert ours["rate_per_hour"] == 600 and ours["bound"] == "above_grid"
    assert r["knees"]["round_robin"]["rate_per_hour"] == 300
    assert ours["ceiling_share"] == pytest.approx(600 / r["ceiling_per_hour"], abs=1e-3)
    assert r["open_loop"]["slo_s"] == 20.0 and "| ours |" in r["knees_table"]
    t = r["targets"]  # ours 600 against round robin's 300; the same p95 as sticky's
    assert t["ours_vs_round_robin_knee"] == 2.0 and t["ours_vs_sticky_router_knee"] == 1.0
    assert t["ours_p95_over_sticky_up_to_its_knee"] == 0.0
    assert t["ours_goodput_ceiling_share"] == ours["ceiling_share"]
    # the simulator on the same plans and arrivals: a p95 at every point, a knee each
    sim = r["simulated"]
    assert set(sim["knees"]) == set(OPEN_LOOP) and len(sim["points"]) == len(b.todo)
    for p in sim["points"]:
        assert p["p95_s"] > 0 and p["p95_error"] is not None
        assert p["meets_slo"] == (p["p95_s"] <= 20.0)  # nothing cut at these rates
    assert all(r["knees"][n]["simulated_rate_per_hour"] == sim["knees"][n] for n in OPEN_LOOP)
    json.dumps(r)


def test_closed_report_gives_each_run_a_share_of_the_ceiling() -> None:
    b = e2e_run.Bench(
        e2e_cli.parse_args([*SMALL, "--concurrency", "2", "--contestants", "ours,round_robin"]),
        Console(quiet=True),
    )
    b.rates = dict(RATES_)
    for name, load in b.todo:
        b.record(name, load, _fake_run(name, b, 12.0))
    r = e2e_run.report(b)
    top = r["ceiling"]["by_load"]["2"]["ceiling_per_hour"]
    assert 0 < top <= r["ceiling"]["engine_bound_per_hour"]
    for s in r["contestants"].values():
        assert s["tasks_ceiling_share"] == pytest.approx(s["tasks_per_hour"] / top, abs=1e-3)


def test_the_open_loop_command_writes_knees_and_their_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--open-loop --json F``: the report with ``knees`` and ``ceiling_per_hour``, the
    knees table printed, the sweep's PNG (the runs faked: no engines)."""

    async def fake_run_all(args: Any, console: Console) -> dict[str, Any]:
        b = e2e_run.Bench(args, console)
        b.rates, b.slo_s = dict(RATES_), 20.0
        for name, rate in b.todo:
            b.record(name, rate, _fake_run(name, b, 8.0 + rate / 200))
        return e2e_run.report(b)

    monkeypatch.setattr(e2e_run, "run_all", fake_run_all)
    out = tmp_path / "open.json"
    assert e2e_cli.main([*SMALL, "--open-loop", "--rates", "300,600", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["knees"]) == set(OPEN_LOOP) and r["ceiling_per_hour"] > 0
    assert {(p["contestant"], p["rate_per_hour"]) for p in r["points"]} == {
        (n, rate) for n in OPEN_LOOP for rate in (300, 600)
    }
    assert "| ours |" in capsys.readouterr().out
    assert (tmp_path / "open_knees.png").stat().st_size > 1000
    partial = Path(f"{out}.partial.jsonl")  # each run saved as it ended: --finish reads it
    again = tmp_path / "again.json"
    args = [*SMALL, "--open-loop", "--rates", "300,600", "--finish", str(partial)]
    assert e2e_cli.main([*args, "--json", str(again)]) == 2  # no SLO known: a clear error
    assert e2e_cli.main([*args, "--slo-s", "20", "--json", str(again)]) == 0
    assert json.loads(again.read_text())["knees"]["ours"]["rate_per_hour"] == 600


def test_the_simulator_predicts_an_open_loop_run_with_its_cut() -> None:
    """The same plans and arrivals in the simulator: each latency at least the task's
    floor; a cut before the tasks can end leaves them unfinished (None)."""
    from benchmarks.e2e.results import simulate_open
    from sim.workload import WorkloadSpec

    tasks = _tasks(3, calls=3)
    terms = {**RATES_, "host_contention": 0.0}
    spec = WorkloadSpec(
        calls=3, history_tokens=100, system_prompt_tokens=0, first_message_tokens=4, output_tokens=2
    )
    times = [1.0, 2.0, 3.0]
    lat = simulate_open("ours", tasks, times, 60.0, spec, terms, 1, 10_000, {})
    floor = 3 * (4 / 1000 + 2 / 10)  # three calls of 4 new tokens and 2 out, no tools
    assert all(x is not None and x >= floor - 1e-6 for x in lat)
    slow: dict[str, tuple[float, ...]] = {t.task_id: (5.0, 5.0) for t in tasks}  # 10 s a task
    cut = simulate_open("round_robin", tasks, times, 8.0, spec, terms, 1, 10_000, slow)
    assert cut == [None, None, None]


def test_a_run_starts_once_the_engines_accept_the_flush() -> None:
    """A cut leaves cancelled calls running in the engines, which refuse to drop their
    cache meanwhile: the bench asks again until they accept (or warns and goes on)."""
    b = e2e_run.Bench(e2e_cli.parse_args(SMALL), Console(quiet=True))
    answers = [False, False, True]

    async def flush() -> bool:
        return answers.pop(0)

    asyncio.run(b.flushed(flush))
    assert answers == []

    async def never() -> bool:
        return False

    asyncio.run(b.flushed(never, timeout_s=0.6))  # gives up after the timeout
