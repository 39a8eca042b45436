"""Warm before return in the simulator: the engine's warm-ups, and a KV-bound fleet
run with them on and off on the same plans."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from scheduler import SchedulerConfig, SchedulerCore
from sim.engine import SimCall, SimEngine
from sim.model import EngineSpec
from sim.simulator import SimConfig, Simulation
from sim.warmup import main as warmup_main
from sim.workload import WorkloadSpec

ENGINE = EngineSpec(prefill_tokens_per_s=10_000.0, decode_tokens_per_s=50.0)


def _drain(eng: SimEngine) -> list[SimCall]:
    done: list[SimCall] = []
    while (t := eng.next_change()) is not None:
        done += eng.step(t)
    return done


def test_a_warm_up_caches_the_history_for_the_next_call() -> None:
    eng = SimEngine("r0", ENGINE)
    eng.submit(SimCall("t", "a", 10_000, 0, 10_000, 0.0, warm=True), 0.0)
    [w] = _drain(eng)
    assert w.warm and abs(w.finished - 1.0) < 1e-6  # 10K tokens at 10K tok/s
    assert eng.stats.warm_prefilled_tokens == 10_000 and eng.stats.reprefilled_tokens == 0
    eng.submit(SimCall("t", "a", 10_500, 10, 10_000, 5.0), 5.0)
    [c] = _drain(eng)
    assert c.cached == 10_000 and c.reprefilled == 0 and eng.stats.reprefill_s == 0.0


def test_a_call_during_its_warm_up_keeps_what_was_prefilled_and_abort_drops_it() -> None:
    eng = SimEngine("r0", ENGINE)
    eng.submit(SimCall("t", "a", 10_000, 0, 10_000, 0.0, warm=True), 0.0)
    eng.step(0.4)  # 40% prefilled
    eng.submit(SimCall("t", "a", 10_500, 10, 10_000, 0.4), 0.4)
    [c] = _drain(eng)
    assert abs(c.cached - 4_000) <= 1 and c.reprefilled == 10_000 - c.cached
    assert abs(eng.stats.reprefill_s - 0.6) < 0.01  # the rest, on the call's path
    assert eng.stats.warm_cut == 1
    eng2 = SimEngine("r1", ENGINE)
    eng2.submit(SimCall("u", "a", 8_000, 0, 8_000, 0.0, warm=True), 0.0)
    assert eng2.abort_warm("u", 0.5) and not eng2.abort_warm("u", 0.5)
    assert eng2.used == 0 and not eng2.warm and _drain(eng2) == []


def _kv_bound(warm: bool) -> Simulation:
    sched = SchedulerConfig(prefill_tokens_per_s=ENGINE.prefill_tokens_per_s, warm_up=warm)
    engine = replace(ENGINE, kv_room_bytes=60_000 * ENGINE.kv_bytes_per_token)
    cfg = SimConfig(
        replicas=2,
        rate=0.4,
        duration_s=300.0,
        warmup_s=50.0,
        drain_s=600.0,
        seed=3,
        engine=engine,
        workload=WorkloadSpec(
            calls=6, history_tokens=12_000, tool_median_s=6.0, tool_p99_s=12.0, agents=2
        ),
        scheduler=sched,
    )
    return Simulation(cfg, "ours")


def test_warm_ups_take_re_prefill_off_the_critical_path() -> None:
    off, on = _kv_bound(False), _kv_bound(True)
    a, b = off.run(), on.run()
    assert a.unfinished == b.unfinished == 0 and a.completed and b.completed
    assert a.warm_ups == 0 and b.warm_ups > 0
    assert a.reprefilled_tokens > 0
    assert b.reprefilled_tokens < a.reprefilled_tokens and b.reprefill_s < a.reprefill_s
    assert isinstance(on.sched, SchedulerCore)
    assert on.sched.stats().counters.get("warm_up", 0) == b.warm_ups


def test_the_on_off_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--replicas", "2", "--rate", "0.3", "--duration", "120", "--warmup", "20"]
    assert warmup_main([*argv, "--calls", "3", "--seeds", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert [r["warm_up"] for r in doc["rows"]] == [False, True]
    assert {"critical_reprefill_tokens", "critical_reprefill_s", "task_p95_s"} <= set(
        doc["rows"][0]
    )
