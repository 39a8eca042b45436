"""The benchmarks run end to end at a small size and write the JSON their issues name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["sandbox_fixtures"]


def test_scheduler_benchmark_writes_json(tmp_path: Path) -> None:
    from benchmarks import scheduler

    out = tmp_path / "sched.json"
    rc = scheduler.main(
        [
            "--replicas",
            "20",
            "--tasks",
            "200",
            "--events",
            "3000",
            "--kill-every",
            "300",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["events"] >= 3000
    assert data["events_per_s"] > 0
    lat = data["decision_latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert data["live_tasks"] > 0


def test_sandbox_benchmark_writes_json(tmp_path: Path, bwrap_backend: object) -> None:
    from benchmarks import sandbox

    out = tmp_path / "sbx.json"
    assert (
        sandbox.main(
            ["--backends", "bwrap", "--repeats", "3", "--ready-repeats", "2", "--json", str(out)]
        )
        == 0
    )
    bw = json.loads(out.read_text())["backends"]["bwrap"]
    for key in ("exec_p50_ms", "exec_p99_ms", "ready_p50_ms", "shell_exec_p50_ms"):
        assert bw[key] > 0, key
    assert bw["exec_p50_ms"] <= bw["exec_p99_ms"]


def test_sandbox_benchmark_rejects_bad_repeats() -> None:
    from benchmarks import sandbox

    with pytest.raises(SystemExit) as exc:
        sandbox.main(["--repeats", "1"])
    assert exc.value.code == 2


@pytest.mark.engine
def test_prefill_measure_proves_warm_hit(pool: object) -> None:
    from benchmarks.prefill import measure

    ids = [(i * 7919) % 3000 + 10 for i in range(600)]
    row = measure(pool["r0"], ids, history=400, repeats=1)  # type: ignore[index]
    assert row["cold_cached_tokens"] == 0
    assert row["cached_tokens"] >= 400
    assert row["warm_hit"] is True
    assert row["new_tokens"] == 200


@pytest.mark.engine
def test_failover_benchmark_scenario_loses_nothing(pool: Any) -> None:
    """The benchmark's scenario on the session's pool: a replica of its own is killed
    under two tasks' in-flight calls; r1 takes them over."""
    import asyncio

    from rich.console import Console

    from benchmarks import failover

    victim = pool.add(1)[0]
    args = failover.parse_args(["--tasks", "2", "--history-tokens", "600"])
    assert args.task_counts == [2]
    try:
        report = asyncio.run(failover.scenario(pool, victim, "r1", args, Console(quiet=True), 2))
    finally:
        pool.remove(victim)
    assert report["affected_tasks"] == 2
    assert report["lost_tasks"] == 0 and report["duplicate_tool_runs"] == 0
    assert report["tool_runs"] == 6  # 2 tasks x 3 tools (4 calls, the last one answers none)
    assert 0 < report["detection_s"] < report["recovery_s"]
    assert report["reprefill_s"] > 0 and report["history_tokens"] > 300
    # each task's first completed call after the kill was its replay on the survivor
    assert all(row["replay_cached_tokens"] < row["history_tokens"] for row in report["per_task"])


def test_prefill_limit_and_gpu_plan_fields() -> None:
    """The physical limit beside each row and the GPU plan line (no engine)."""
    from benchmarks.prefill import add_limits, gpu_plan, matmul_gflops, warm_call_flops

    cfg = {
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 384,
        "vocab_size": 4096,
    }
    f1, f8 = warm_call_flops(cfg, 1000, 200), warm_call_flops(cfg, 8000, 200)
    assert f1["linear"] == f8["linear"] > 0  # the new tokens' weights do not grow with history
    # attention: 2 matmuls x 2 flops x layers x heads x head_dim x (new x history + triangle)
    assert f8["attention"] == 4 * 4 * 4 * 32 * (200 * 8000 + 200 * 201 / 2)
    rows = [{"history_tokens": 8000, "new_tokens": 200, "warm_s": 0.1}]
    add_limits(rows, cfg, gflops=100.0)
    row = rows[0]
    assert row["limit_s"] == pytest.approx((f8["linear"] + f8["attention"]) / 100e9, rel=1e-3)
    assert row["warm_over_limit"] == pytest.approx(0.1 / row["limit_s"], rel=1e-2)
    assert 0 < row["warm_attention_share"] < 1
    plan = gpu_plan()
    assert plan["history_tokens"] == 30_000 and "plan" in plan["what"]
    assert plan["warm_s"] == pytest.approx(300 / 11_300, rel=1e-2)
    assert plan["ratio"] > 90
    assert matmul_gflops(1, n=128, repeats=2) > 0
