"""The planner's formulas, CLI and JSON keys."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from planner.formulas import PlanInputs, plan
from planner.montecarlo import simulate_plan

REQUIRED_KEYS = {
    "task_median_s",
    "task_p95_s",
    "p_hit_p99",
    "verdict",
    "prefill_cold_s",
    "prefill_warm_s",
    "tasks_per_replica",
}


def test_seed_figures() -> None:
    r = plan(PlanInputs())
    assert r["prefill_cold_s"] == pytest.approx(30_000 / 11_300)  # 2.7 s cold
    assert r["prefill_warm_s"] == pytest.approx(300 / 11_300)  # 27 ms warm
    assert r["p_hit_p99"] == pytest.approx(0.182, abs=1e-3)  # 18% at n = 20
    assert r["kv_gb_per_task"] == pytest.approx(9.83, abs=0.01)  # ~9.6-9.8 GB per task
    assert r["tasks_per_replica"] == pytest.approx(16.3, abs=0.1)  # ~16 warm per replica
    assert r["task_median_s"] == pytest.approx(20 * (0.5 + 2.0))
    assert r["task_p95_s"] == pytest.approx(50 + (1 - 0.99**20) * 1.5)
    assert r["verdict"] == "meets SLO"


def test_cache_off_adds_the_growing_history() -> None:
    on, off = PlanInputs(), PlanInputs(cache=False)
    extra = 30_000 * 21 / 40 / 11_300
    assert plan(off)["task_median_s"] == pytest.approx(plan(on)["task_median_s"] + 20 * extra)
    assert plan(off)["verdict"] == "misses SLO"


def test_fleet_sizing() -> None:
    r = plan(PlanInputs(tasks_per_hour=60_000))
    assert r["concurrent_tasks"] == pytest.approx(60_000 * 50 / 3600)
    assert r["replicas_needed"] == math.ceil(r["concurrent_tasks"] / r["tasks_per_replica"])


def test_monte_carlo_is_near_the_formula() -> None:
    p = PlanInputs(n_calls=10, call_median_s=0.5, call_p99_s=1.0, tool_s=1.0)
    mc = simulate_plan(p, tasks=80)
    f = plan(p)
    assert mc.tasks > 50 and mc.rejected == 0
    # the simulator pays warm prefills and one tool fewer: within 15 %
    assert mc.task_median_s == pytest.approx(f["task_median_s"], rel=0.15)


def test_cli_json_has_the_keys(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    proc = subprocess.run(
        [sys.executable, "-m", "planner", "--mc-tasks", "40", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc.keys() >= REQUIRED_KEYS
    assert doc["monte_carlo"]["task_p95_s"] > 0
    assert "task p95 (formula)" in proc.stdout and "Monte-Carlo" in proc.stdout


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--calls", "0"], "must be >= 1"),
        (["--call-median", "3", "--call-p99", "1"], "call median <= call p99"),
        (["--prefill", "abc"], "not a number"),
    ],
)
def test_cli_bad_input_is_an_argparse_error(args: list[str], msg: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "planner", "--no-mc", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert msg in proc.stderr and "Traceback" not in proc.stderr
