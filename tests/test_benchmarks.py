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
    rc = scheduler.main([
        "--replicas", "20", "--tasks", "200", "--events", "3000", "--kill-every", "300",
        "--json", str(out),
    ])  # fmt: skip
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
