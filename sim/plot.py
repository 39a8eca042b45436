"""PNG plots comparing policies (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sim.metrics import SimResult
from sim.sweep import SweepResult


def pyplot() -> Any:  # matplotlib.pyplot (its types are not followed)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(x: float, cap: float) -> float:
    return x if math.isfinite(x) else cap


def plot_comparison(results: list[SimResult], path: Path, slo_s: float | None = None) -> None:
    plt = pyplot()
    names = [r.policy for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    cap = max([_finite(r.task_p99_s, 0.0) for r in results] + [1.0]) * 1.2
    width = 0.25
    xs = range(len(results))
    for i, (label, attr) in enumerate(
        [("p50", "task_p50_s"), ("p95", "task_p95_s"), ("p99", "task_p99_s")]
    ):
        axes[0].bar(
            [x + (i - 1) * width for x in xs],
            [_finite(getattr(r, attr), cap) for r in results],
            width,
            label=label,
        )
    if slo_s is not None:
        axes[0].axhline(slo_s, color="red", linestyle="--", linewidth=1, label=f"SLO {slo_s:g}s")
    axes[0].set_xticks(list(xs), names, rotation=15)
    axes[0].set_ylabel("task latency (s)")
    axes[0].set_title("task latency (bars at the top: unfinished)")
    axes[0].legend()
    axes[1].bar(names, [r.tasks_per_hour for r in results], color="tab:green")
    axes[1].set_title("tasks / hour")
    axes[1].tick_params(axis="x", rotation=15)
    axes[2].bar(names, [r.reprefilled_tokens_per_task for r in results], color="tab:orange")
    axes[2].set_title("re-prefilled tokens per task")
    axes[2].tick_params(axis="x", rotation=15)
    rate = results[0].rate_tasks_per_s if results else 0.0
    fig.suptitle(f"{results[0].replicas if results else 0} replicas, {rate:g} tasks/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep(sweeps: list[SweepResult], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    slo = sweeps[0].slo_s if sweeps else 60.0
    for s in sweeps:
        pts = sorted(s.points, key=lambda p: p.rate_tasks_per_s)
        ax.plot(
            [p.rate_tasks_per_s * 3600 for p in pts],
            [min(_finite(p.task_p95_s, 10 * slo), 10 * slo) for p in pts],
            marker="o",
            label=s.policy,
        )
    ax.axhline(slo, color="red", linestyle="--", linewidth=1, label=f"SLO {slo:g}s")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (tasks / hour)")
    ax.set_ylabel("task p95 (s, log)")
    ax.set_title("task p95 vs load, per policy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
