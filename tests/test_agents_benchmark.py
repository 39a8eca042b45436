"""The end-to-end benchmark (benchmarks/agents.py): its workload, its SGLang command
lines, its calibration, and a small run of all four contestants on real engines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks import agents
from benchmarks.agent_calibration import compare, simulate
from benchmarks.agent_replay import CallTrace, RunTrace, TaskTrace
from benchmarks.agent_workload import ID_RANGE, make_workload
from benchmarks.sglang_http import server_argv
from executor.replica_config import ReplicaConfig
from scheduler import SchedulerConfig

SMALL = ["--tasks", "3", "--concurrency", "2", "--replicas", "1", "--calls", "4",
         "--calls-spread", "0", "--history-tokens", "1500", "--system-tokens", "300",
         "--first-tokens", "100", "--output-tokens", "8", "--tool-median", "0.1",
         "--tool-p99", "0.3"]  # fmt: skip


def test_workload_is_seeded_and_follows_its_spec() -> None:
    spec = agents.workload_spec(agents.parse_args([]))
    a, b = make_workload(spec, 6, seed=3), make_workload(spec, 6, seed=3)
    assert a == b and a != make_workload(spec, 6, seed=4)
    assert all(10 <= t.calls <= 30 for t in a)  # the 10-30 calls per task
    for t in a:
        assert len(t.new_ids) == t.calls and len(t.plan.tool_s) == t.calls - 1
        assert all(ID_RANGE[0] <= i < ID_RANGE[1] for ids in t.new_ids for i in ids)
    by_agent: dict[str, set[tuple[int, ...]]] = {}
    for t in a:  # tasks of one agent share its system prompt
        by_agent.setdefault(t.plan.agent, set()).add(t.system_ids)
    assert all(len(s) == 1 for s in by_agent.values())
    assert a[0].tool_argv(0)[:2] == ["sh", "-c"] and "sleep" in a[0].tool_argv(0)[2]


def test_bad_contestant_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        agents.parse_args(["--contestants", "ours,vllm"])
    assert "contestants are among" in capsys.readouterr().err


def test_sglang_servers_get_the_replicas_engine_settings() -> None:
    argv = server_argv(ReplicaConfig(model="tiny", max_total_tokens=8192, device="cpu"), 31000)
    flags = " ".join(argv)
    assert "--max-total-tokens 8192" in flags and "--port 31000" in flags
    assert "--attention-backend torch_native" in flags and "--sleep-on-idle" in flags
    assert "--constrained-json-disable-any-whitespace" in flags and "--host 127.0.0.1" in flags


def test_calibration_replays_the_same_tasks_in_the_simulator() -> None:
    args = agents.parse_args(SMALL)
    spec = agents.workload_spec(args)
    workload = make_workload(spec, 3, seed=0)
    tasks = [TaskTrace(w.task_id, started=float(i), ended=float(i) + 5.0,
                       calls=[CallTrace(0, "r0", 0.0, 0.0, 0.1, 400, 0)])
             for i, w in enumerate(workload)]  # fmt: skip
    run = RunTrace("ours", 0.0, 8.0, tasks, [])
    rates = {"prefill_tokens_per_s": 10_000.0, "decode_tokens_per_s": 100.0,
             "decode_batch_slowdown": 0.1}  # fmt: skip
    sim = simulate("ours", run, workload, spec, rates, 1, 32768, SchedulerConfig())
    assert sim["completed"] == 3 and 0 < sim["p50_s"] <= sim["p95_s"]
    # 4 calls of ~8 tokens at 100 tok/s + 3 tools of ~0.1 s: a task takes about a second
    assert 0.3 < sim["p50_s"] < 5
    c = compare({"p50_s": 5.0, "p95_s": 5.0}, sim)
    assert c["within_25pct"] is False and c["error"]["p50"] < -0.25


def test_calibration_is_redone_from_a_saved_report(tmp_path: Path) -> None:
    args = agents.parse_args(SMALL)
    workload = make_workload(agents.workload_spec(args), 3, seed=0)
    tasks = [TaskTrace(w.task_id, started=float(i), ended=float(i) + 2.0,
                       calls=[CallTrace(0, "r0", 0.0, 0.0, 0.1, 400, 0)], tools=[(0.2, 0.5)])
             for i, w in enumerate(workload)]  # fmt: skip
    run = RunTrace("ours", 0.0, 5.0, tasks, [(0.5, "r0", 100, 1000)])
    assert RunTrace.from_json(json.loads(json.dumps(run.to_json()))) == run
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "calibrate")},
        "engine_rates": {"prefill_tokens_per_s": 10_000.0, "decode_tokens_per_s": 100.0,
                         "decode_batch_slowdown": 0.1},
        "contestants": {"ours": {"p50_s": 2.0, "p95_s": 2.0}},
        "traces": {"ours": run.to_json()},
    }  # fmt: skip
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    again = agents.recalibrate(path)
    assert set(again) == {"ours"} and again["ours"]["simulated"]["completed"] == 3
    assert agents.main(["--calibrate", str(tmp_path / "missing.json")]) == 2


@pytest.mark.engine
def test_small_run_of_all_four_contestants(pool: Any, tmp_path: Path) -> None:
    """One replica (beside the session's), 3 tasks of 4 calls, every contestant."""
    args = agents.parse_args([*SMALL, "--json", str(tmp_path / "a.json")])
    report = asyncio.run(agents.run_all(args, Console(quiet=True)))
    runs = report.pop("_runs")
    c = report["contestants"]
    assert set(c) == {"ours", "round_robin", "sglang_router", "no_cache"}
    for name, s in c.items():
        assert s["calls"] == 12, name  # 3 tasks x 4 calls, each through the real engine
        assert 0 < s["p50_s"] <= s["p95_s"] <= s["p99_s"] and s["tasks_per_hour"] > 0
    # the cache works where it should, and nowhere else
    assert c["ours"]["cache_hit_ratio"] > 0.5 and c["sglang_router"]["cache_hit_ratio"] > 0.5
    assert c["no_cache"]["cache_hit_ratio"] == 0.0
    assert c["no_cache"]["prefill_tokens"] > c["ours"]["prefill_tokens"]
    assert c["ours"]["kv_occupancy"], "KV occupancy sampled over time"
    assert report["engine_rates"]["prefill_tokens_per_s"] > 0
    assert set(report["calibration"]) == set(c) and "ours_lowest_p95" in report["targets"]
    assert set(report["traces"]) == set(c)  # saved: calibration can be redone without engines
    json.dumps(report)  # the report is JSON as it is
    from benchmarks.agent_plots import plot_cdf, plot_timeline

    plot_cdf(runs, tmp_path / "cdf.png")
    plot_timeline(runs, tmp_path / "timeline.png")
    assert (tmp_path / "cdf.png").stat().st_size > 1000
    assert (tmp_path / "timeline.png").stat().st_size > 1000
