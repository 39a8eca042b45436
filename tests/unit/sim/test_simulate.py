"""Simulator sanity: the engine model, the workload, the loop and the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from planner.formulas import PlanInputs, plan
from scheduler import SchedulerConfig
from sim.engine import SimCall, SimEngine
from sim.model import EngineSpec, ModelShape, attention_units
from sim.simulator import SimConfig, Simulation
from sim.workload import TaskPlan, WorkloadGenerator, WorkloadSpec

ENGINE = EngineSpec(prefill_tokens_per_s=10_000.0, decode_tokens_per_s=50.0)


def one_task(calls: int, new: int, out: int, tool_s: float = 0.0) -> TaskPlan:
    return TaskPlan(
        task_id="t1",
        agent="a",
        arrival=1.0,
        new_tokens=(new,) * calls,
        output_tokens=(out,) * calls,
        tool_s=(tool_s,) * (calls - 1),
        expected_history=calls * (new + out),
    )


def run_one(task: TaskPlan, engine: EngineSpec, policy: str = "ours") -> Simulation:
    cfg = SimConfig(
        replicas=2,
        rate=1.0,
        duration_s=10_000,
        warmup_s=0,
        drain_s=0,
        engine=engine,
        workload=WorkloadSpec(system_prompt_tokens=0),
    )
    sim = Simulation(cfg, policy, workload=[task])
    sim.run()
    return sim


def test_kv_bytes_per_token_of_a_70b_model() -> None:
    assert ModelShape(80, 8, 128, "bf16").kv_bytes_per_token == 327_680  # 320 KB
    assert EngineSpec().kv_capacity_tokens == 488_281  # 160 GB / 320 KB


@pytest.mark.parametrize("policy", ["ours", "cache_aware", "round_robin"])
def test_one_task_zero_tools_time_is_the_sum_of_call_times(policy: str) -> None:
    task = one_task(calls=6, new=700, out=40)
    sim = run_one(task, ENGINE, policy)
    st = sim.tasks["t1"]
    assert st.finished is not None
    assert st.finished - task.arrival == pytest.approx(sum(st.call_latencies), rel=1e-9)
    if policy != "round_robin":  # sticky: call k prefills only its new tokens
        want = sum(ENGINE.call_seconds_alone(700, 40) for _ in range(6))
        assert st.finished - task.arrival == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("calls", [5, 10, 20])
def test_cache_off_latency_grows_with_history_as_the_model_says(calls: int) -> None:
    new, out = 1_000, 50
    engine = EngineSpec(prefill_tokens_per_s=10_000.0, decode_tokens_per_s=50.0, prefix_cache=False)
    sim = run_one(one_task(calls, new, out), engine)
    got = sim.tasks["t1"].finished - 1.0  # type: ignore[operator]
    # call k re-prefills its whole prompt: the history so far plus its new tokens
    want = sum((k * (new + out) + new) / 10_000 + out / 50 for k in range(calls))
    assert got == pytest.approx(want, rel=1e-9)
    # ... which is the planner's model: generation + growing history / prefill
    history = calls * (new + out)
    gen = out / 50
    model = plan(
        PlanInputs(
            n_calls=calls,
            call_median_s=gen,
            call_p99_s=gen,
            tool_s=0,
            cache=False,
            prefill_tok_s=10_000,
            history_tokens=history,
        )
    )
    assert got == pytest.approx(model["task_median_s"], rel=0.1)


def test_attention_units_split_a_prompt_into_its_chunks() -> None:
    # cold 6000 in chunks of 4096: a first chunk from 0, then 1904 behind 4096
    assert attention_units(6000, 6000, 4096) == (4096 * 4096, 1904 * 6000)
    assert attention_units(250, 3250, 4096) == (0, 250 * 3250)  # behind a cached prefix
    assert attention_units(0, 3000, 4096) == (0, 0)
    # queued behind others: its first chunk gets the room their last batch leaves
    assert attention_units(4000, 4000, 4096, first_chunk=96) == (96 * 96, 3904 * 4000)


def prefill_together(engine: EngineSpec, prompts: int, tokens: int) -> float:
    """Seconds until ``prompts`` cold prompts of ``tokens``, sent at once, are done."""
    eng = SimEngine("r0", engine)
    for i in range(prompts):
        eng.submit(SimCall(f"t{i}", "a", tokens, 0, 0, 0.0), 0.0)
    done, t = 0, 0.0
    while done < prompts:
        t = eng.next_change()  # type: ignore[assignment]
        done += len(eng.step(t))
    return t


def test_prompts_sent_at_once_are_batched_in_chunks_as_sglang_does() -> None:
    """The batch running now is one chunk: a prompt queued behind it starts from 0
    in the next batch; prompts queued behind more than a chunk are split there and
    pay the attention behind a prefix (four cold 4K prompts on this CPU: 7x one)."""
    engine = EngineSpec(
        prefill_tokens_per_s=30_000.0,
        first_chunk_attention_s=1.3e-8,
        prefill_attention_s=5e-8,
        chunk_tokens=4096,
        kv_room_bytes=1e6,
        kv_bytes_per_token=1,
    )
    one = engine.prefill_seconds(4000, 4000)
    assert prefill_together(engine, 1, 4000) == pytest.approx(one)
    assert prefill_together(engine, 2, 4000) == pytest.approx(2 * one)  # neither split
    four = (
        2 * one
        + engine.prefill_seconds(4000, 4000, 3904)
        + engine.prefill_seconds(4000, 4000, 3904 + 4000)
    )
    assert prefill_together(engine, 4, 4000) == pytest.approx(four)
    assert four > 5 * one


def test_replicas_on_one_host_slow_each_other_by_the_contention() -> None:
    """Two identical tasks at once, one per replica: each is busy while the other
    is, so both take (1 + contention) x a lone task's time."""
    engine = EngineSpec(
        prefill_tokens_per_s=10_000.0, decode_tokens_per_s=50.0, host_contention=0.25
    )
    alone = run_one(one_task(3, 700, 20), engine).tasks["t1"]
    assert alone.finished - 1.0 == pytest.approx(3 * engine.call_seconds_alone(700, 20))  # type: ignore[operator]
    twins = [one_task(3, 700, 20), dataclasses.replace(one_task(3, 700, 20), task_id="t2")]
    cfg = SimConfig(
        replicas=2,
        rate=1.0,
        duration_s=10_000,
        warmup_s=0,
        drain_s=0,
        engine=engine,
        workload=WorkloadSpec(system_prompt_tokens=0),
    )
    sim = Simulation(cfg, "ours", workload=twins)
    sim.run()
    assert [e.stats.calls for e in sim.engines.values()] == [3, 3]  # one task per replica
    for st in sim.tasks.values():
        assert st.finished - 1.0 == pytest.approx(1.25 * (alone.finished - 1.0))  # type: ignore[operator]
    with pytest.raises(ValueError, match="must be >= 0"):
        EngineSpec(host_contention=-0.1)


@pytest.mark.parametrize("cache", [True, False])
def test_context_terms_make_a_long_history_cost_more_as_the_model_says(cache: bool) -> None:
    """With attention, context and overhead terms, a lone task still takes exactly
    the engine model's time, call by call, and it is slower than without them."""
    terms = {
        "prefill_attention_s": 5e-8,
        "first_chunk_attention_s": 2e-8,
        "decode_context_s": 1.5e-6,
        "call_overhead_s": 0.03,
        "chunk_tokens": 4096,
    }
    engine = EngineSpec(
        prefill_tokens_per_s=20_000.0, decode_tokens_per_s=150.0, prefix_cache=cache, **terms
    )  # type: ignore[arg-type]
    new, out, calls = 1_500, 20, 6
    sim = run_one(one_task(calls, new, out), engine)
    got = sim.tasks["t1"].finished - 1.0  # type: ignore[operator]
    want = 0.0
    for k in range(calls):
        prompt = k * (new + out) + new
        want += engine.call_seconds_alone(new if cache else prompt, out, prompt)
    assert got == pytest.approx(want, rel=1e-9)
    plain = EngineSpec(prefill_tokens_per_s=20_000.0, decode_tokens_per_s=150.0, prefix_cache=cache)
    assert got > 1.5 * (run_one(one_task(calls, new, out), plain).tasks["t1"].finished - 1.0)  # type: ignore[operator]
    with pytest.raises(ValueError, match="must be >= 0"):
        EngineSpec(prefill_attention_s=-1e-9)


def test_the_scheduler_prices_re_prefill_at_the_engine_rate_unless_told() -> None:
    engine = EngineSpec(prefill_tokens_per_s=5_000.0)
    assert SimConfig(engine=engine).scheduler_config.prefill_tokens_per_s == 5_000.0
    given = SchedulerConfig(prefill_tokens_per_s=11_300.0)  # what a real run used
    assert SimConfig(engine=engine, scheduler=given).scheduler_config is given


def test_workload_is_seeded_and_tool_latency_has_the_median_and_p99() -> None:
    spec = WorkloadSpec(tool_median_s=2.0, tool_p99_s=6.0)
    a, b = WorkloadGenerator(spec, 1.0, seed=7), WorkloadGenerator(spec, 1.0, seed=7)
    assert [a.next_task() for _ in range(5)] == [b.next_task() for _ in range(5)]
    gen = WorkloadGenerator(spec, 1.0, seed=1)
    xs = sorted(gen.tool_latency() for _ in range(20_000))
    assert xs[10_000] == pytest.approx(2.0, rel=0.05)
    assert xs[19_800] == pytest.approx(6.0, rel=0.1)


def small(policy: str, **kw: object) -> dict[str, Any]:
    cfg = SimConfig(replicas=4, rate=0.6, duration_s=300, warmup_s=60, drain_s=600, seed=3, **kw)  # type: ignore[arg-type]
    r = Simulation(cfg, policy).run().to_json()
    r.pop("wall_s")
    return r


def test_simulation_is_deterministic() -> None:
    assert small("ours") == small("ours")


def test_policies_compare_as_expected_at_moderate_load() -> None:
    ours, rr = small("ours"), small("round_robin")
    assert ours["unfinished"] == 0 and ours["rejected"] == 0
    assert ours["reprefilled_tokens"] == 0  # sticky, nothing released without pressure
    assert rr["reprefilled_tokens"] > 0
    assert float(ours["task_p95_s"]) < float(rr["task_p95_s"])  # "inf" when unfinished


def test_the_core_counters_reach_the_report_and_baselines_have_none() -> None:
    ours, rr = small("ours"), small("round_robin")
    assert 0.0 <= ours["queued_share"] < 0.05  # moderate load: grants come at once
    assert 0.0 < ours["ledger_reserved_share"] < 1.0
    assert 0.0 <= ours["idle_while_waiting_share"] <= 1.0
    assert rr["queued_share"] is None and rr["ledger_reserved_share"] is None
    # four replicas, KV for about one task each: tasks queue for KV room
    tight = small("ours", engine=EngineSpec(kv_room_bytes=12e9))
    assert tight["queued_share"] > ours["queued_share"] and tight["queued_share"] > 0.05


def test_failover_in_the_simulator_finishes_every_task() -> None:
    r = small("ours", kills=((150.0, 0),))
    assert r["unfinished"] == 0 and r["failed"] == 0
    assert r["reprefilled_tokens"] > 0  # tasks of the dead replica replayed their history


def test_cli_json_plot_and_bad_input(tmp_path: Path) -> None:
    out, png = tmp_path / "sim.json", tmp_path / "sim.png"
    base = [
        sys.executable,
        "-m",
        "sim",
        "--replicas",
        "2",
        "--rate",
        "0.2",
        "--duration",
        "200",
        "--warmup",
        "50",
        "--quiet",
    ]
    proc = subprocess.run(
        [*base, "--json", str(out), "--plot", str(png)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert [r["policy"] for r in doc["results"]] == ["ours", "cache_aware", "round_robin"]
    for key in (
        "task_p50_s",
        "task_p95_s",
        "task_p99_s",
        "tasks_per_hour",
        "utilization",
        "kv_occupancy",
        "reprefilled_tokens",
        "rejected",
    ):
        assert key in doc["results"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for bad, msg in [
        (["--rate", "0"], "must be > 0"),
        (["--policies", "nope"], "unknown policy"),
        (["--kill", "x"], "TIME:REPLICA_INDEX"),
        (["--warmup", "500"], "shorter"),
    ]:
        proc = subprocess.run([*base, *bad], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and msg in proc.stderr, (bad, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_cli_sweep(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sim",
            "--replicas",
            "2",
            "--duration",
            "240",
            "--warmup",
            "60",
            "--quiet",
            "--sweep",
            "--rate-min",
            "0.05",
            "--rate-max",
            "1.5",
            "--sweep-iters",
            "2",
            "--policies",
            "ours",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    s = json.loads(out.read_text())["sweep"][0]
    assert s["policy"] == "ours" and len(s["points"]) == 4
    assert "load where task p95 reaches" in proc.stdout


def test_lru_pressure_takes_only_the_tail_a_call_needs_and_the_victim_hits_the_rest() -> None:
    """As SGLang's radix cache evicts leaves first: the least recently used history
    loses as many tokens as the new call needs, not all of them, and its own next
    call hits what is left (and re-prefills only the tail that went)."""
    spec = EngineSpec(
        prefill_tokens_per_s=1_000.0,
        decode_tokens_per_s=100.0,
        kv_room_bytes=1_000,
        kv_bytes_per_token=1,
    )
    eng = SimEngine("r0", spec)

    def run(call: SimCall) -> SimCall:
        eng.submit(call, eng._t)
        while eng.busy:
            eng.step(eng.next_change())  # type: ignore[arg-type]
        return call

    run(SimCall("old", "a", 600, 0, 0, 0.0))
    run(SimCall("new", "b", 700, 0, 0, eng._t))  # 400 free: 300 of "old"'s 600 go
    assert eng.cache["old"][0] == 300 and eng.stats.evicted_tokens == 300
    eng.drop("new", eng._t)
    again = run(SimCall("old", "a", 650, 0, 600, eng._t))
    assert again.cached == 300
    assert eng.stats.reprefilled_tokens == 300  # the tail, not the whole history


def test_a_closed_loop_runs_k_tasks_at_once_and_starts_the_next_as_one_ends() -> None:
    """``concurrency``: the first k tasks arrive at 0, each later one when a task
    ends, as the end-to-end benchmark runs them; every task is measured."""
    engine = EngineSpec(prefill_tokens_per_s=10_000.0, decode_tokens_per_s=50.0)
    plans = [
        dataclasses.replace(one_task(2, 300, 10, tool_s=1.0), task_id=f"t{i}", arrival=100.0 + i)
        for i in range(5)
    ]
    cfg = SimConfig(
        replicas=1,
        rate=1.0,
        duration_s=1.0,
        warmup_s=0,
        drain_s=10_000,
        engine=engine,
        workload=WorkloadSpec(system_prompt_tokens=0),
        concurrency=2,
    )
    sim = Simulation(cfg, "ours", workload=plans)
    sim.run()
    tasks = [sim.tasks[f"t{i}"] for i in range(5)]
    assert all(t.finished is not None for t in tasks)
    assert [t.plan.arrival for t in tasks[:2]] == [0.0, 0.0]
    ends = sorted(t.finished for t in tasks)  # type: ignore[type-var]
    assert [t.plan.arrival for t in tasks[2:]] == pytest.approx(ends[:3])  # one per end
    with pytest.raises(ValueError, match="concurrency"):
        SimConfig(concurrency=0)
    with pytest.raises(ValueError, match="fixed workload"):
        Simulation(dataclasses.replace(cfg, duration_s=10.0), "ours").run()
