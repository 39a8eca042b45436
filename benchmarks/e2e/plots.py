"""The end-to-end benchmark's pictures: task latency CDF per contestant, and a
timeline of tasks on replicas (thinking, tool waits, queueing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.e2e.replay import RunTrace
from sim.plot import pyplot

COLORS = {
    "ours": "tab:green",
    "ours_v1": "tab:olive",
    "ours_core": "tab:cyan",
    "round_robin": "tab:red",
    "sglang_router": "tab:blue",
    "sticky_router": "tab:purple",
    "no_cache": "tab:orange",
}


def plot_cdf(runs: list[RunTrace], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run in runs:
        lat = sorted(t.latency_s for t in run.tasks)
        ys = [(i + 1) / len(lat) for i in range(len(lat))]
        ax.step(lat, ys, where="post", label=run.contestant, color=COLORS.get(run.contestant))
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("task latency (s)")
    ax.set_ylabel("fraction of tasks")
    ax.set_title("Task latency CDF (same tasks, same engines)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_timeline(runs: list[RunTrace], path: Path) -> None:
    """One panel per contestant; a row per task: calls coloured by replica, tool waits
    grey, time waiting for the scheduler's grant red."""
    plt = pyplot()
    height = 2.2 + 0.16 * len(runs[0].tasks) * len(runs)
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, height), sharex=True, squeeze=False)
    palette = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"]
    for ax, run in zip(axes[:, 0], runs, strict=True):
        replicas = sorted({c.replica_id for t in run.tasks for c in t.calls})
        color = {r: palette[i % len(palette)] for i, r in enumerate(replicas)}
        for row, task in enumerate(sorted(run.tasks, key=lambda t: t.started)):
            for c in task.calls:
                if c.started > c.submitted:
                    ax.broken_barh(
                        [(c.submitted, c.started - c.submitted)], (row, 0.8), color="tab:red"
                    )
                ax.broken_barh(
                    [(c.started, c.ended - c.started)], (row, 0.8), color=color[c.replica_id]
                )
            for t0, t1 in task.tools:
                ax.broken_barh([(t0, t1 - t0)], (row, 0.8), color="lightgrey")
        handles = [plt.Rectangle((0, 0), 1, 1, color=color[r]) for r in replicas]
        handles += [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("lightgrey", "tab:red")]
        labels = [f"call on {r}" for r in replicas] + ["tool", "queued (grant)"]
        ax.legend(handles, labels, fontsize=7, loc="upper right", ncol=len(labels))
        ax.set_ylabel(f"{run.contestant}\ntasks")
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_kv(runs: list[RunTrace], path: Path) -> None:
    """KV occupancy per replica over time, one panel per contestant."""
    plt = pyplot()
    fig, axes = plt.subplots(
        len(runs), 1, figsize=(9, 1.6 + 1.4 * len(runs)), sharex=True, squeeze=False
    )
    for ax, run in zip(axes[:, 0], runs, strict=True):
        series: dict[str, list[tuple[float, float]]] = {}
        for t, rid, used, cap in run.kv:
            series.setdefault(rid, []).append((t, used / cap if cap else 0.0))
        for rid, pts in sorted(series.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.9, label=rid)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{run.contestant}\nKV used")
        if series:
            ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_knees(
    points: list[dict[str, Any]], slo_s: float, ceiling_per_hour: float | None, path: Path
) -> None:
    """The open loop's sweep: task p95 against the offered rate (the SLO line: each
    contestant's knee is its last point under it) and goodput against the rate (the
    ceiling line)."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    names = sorted({p["contestant"] for p in points})
    for name in names:
        mine = sorted(
            (p for p in points if p["contestant"] == name), key=lambda p: p["rate_per_hour"]
        )
        rates = [p["rate_per_hour"] for p in mine]
        top.plot(rates, [p["p95_s"] for p in mine], "o-", label=name, color=COLORS.get(name))
        bottom.plot(
            rates, [p["goodput_per_hour"] for p in mine], "o-", label=name, color=COLORS.get(name)
        )
    top.axhline(slo_s, color="grey", ls=":", lw=1.0, label=f"SLO {slo_s:g} s")
    if ceiling_per_hour:
        bottom.axhline(
            ceiling_per_hour,
            color="grey",
            ls="--",
            lw=1.0,
            label=f"ceiling {ceiling_per_hour:,.0f}/h",
        )
    top.set_ylabel("task p95 (s)")
    bottom.set_ylabel("goodput (tasks/h within the SLO)")
    bottom.set_xlabel("offered rate (tasks/hour, Poisson)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    top.set_title("Open loop: p95 and goodput against the arrival rate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
