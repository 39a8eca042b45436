"""The planner page in headless Chromium: move inputs through the URL fragment
(which sets the sliders and fires their input events) and check that the page's
live numbers equal the Python formulas."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from planner.formulas import PlanInputs, plan
from planner.html_page import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not installed (bash infra/install_chromium.sh installs it)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def dump_dom(page: Path, fragment: str, profile: Path) -> str:
    url = page.resolve().as_uri() + ("#" + fragment if fragment else "")
    proc = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],  # type: ignore[list-item]
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def values(dom: str) -> dict[str, str]:
    return dict(re.findall(r'id="([a-z0-9_]+)" data-value="([^"]*)"', dom))


CASES = [
    ("", PlanInputs()),
    (
        "n_calls=10&cache=0&tool_s=1.5&call_p99_s=3.3",
        PlanInputs(n_calls=10, cache=False, tool_s=1.5, call_p99_s=3.3),
    ),
    (
        "history_tokens=120000&kv_room_gb=80&slo_s=30&tasks_per_hour=250000&call_median_s=0.123",
        PlanInputs(
            history_tokens=120_000,
            kv_room_gb=80,
            slo_s=30,
            tasks_per_hour=250_000,
            call_median_s=0.123,
        ),
    ),
]


@pytest.mark.parametrize("fragment,expected", CASES)
def test_page_numbers_match_the_formulas(
    tmp_path: Path, fragment: str, expected: PlanInputs
) -> None:
    page = tmp_path / "plan.html"
    page.write_text(render(PlanInputs(), plan(PlanInputs()), None))
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "<script src" not in html and "<link" not in html
    got = values(dump_dom(page, fragment, tmp_path / "profile"))
    want = plan(expected)
    for key in (
        "task_median_s",
        "task_p95_s",
        "p_hit_p99",
        "prefill_cold_s",
        "prefill_warm_s",
        "tasks_per_replica",
        "kv_gb_per_task",
    ):
        assert float(got[key]) == pytest.approx(want[key], rel=1e-12), key
    assert got["verdict"] == want["verdict"]
    if "replicas_needed" in want:
        assert int(got["replicas_needed"]) == want["replicas_needed"]
    else:
        assert got["replicas_needed"] == ""
    assert float(got["sampled_p95_s"]) > 0  # the distribution plot was drawn


def test_cli_writes_the_page(tmp_path: Path) -> None:
    from planner.cli import main

    page = tmp_path / "p.html"
    assert main(["--mc-tasks", "30", "--html", str(page)]) == 0
    got = values(dump_dom(page, "cache=0", tmp_path / "profile"))
    assert got["verdict"] == plan(PlanInputs(cache=False))["verdict"]
    assert float(got["mc_p95_s"]) > 0
