"""Open loop: tasks arrive at a rate (seeded Poisson) whether or not the others are
done, as users send them; per contestant, the knee of a rate sweep.

- **Arrivals** (:func:`arrivals`): the workload's tasks in order, the gaps
  exponential at ``rate`` tasks/hour, from a generator seeded by the run's seed
  and the rate: every contestant gets the same arrival times at a rate.
- **A run** stops at its last arrival plus the SLO: a task not finished then has
  already missed it (it arrived at or before the last one); it is counted
  ``unfinished`` and its latency censored at the cut.
- **Per run** (:func:`open_summary`): p95 of the task latencies (arrival to end)
  over the tasks not shed, unfinished ones at their censored latency; goodput =
  the offered rate x the share of offered tasks finished within the SLO (tasks
  finished within the SLO per hour of offered load); tasks shed (refused: 429,
  rejected) counted apart, never good.
- **The grid** (:func:`grid`): by default relative to the workload's ceiling
  (:mod:`benchmarks.e2e.ceiling`, its engine-time bound at the probes' engine
  speed, computed before the runs): :data:`FRACTIONS` of it (``--quick``:
  :data:`QUICK_FRACTIONS`), rounded to 10 tasks/hour, so the grid brackets every
  knee (a fixed grid found every knee above it); ``--rates`` gives a fixed grid
  instead. The report says which (``open_loop.grid``).
- **The knee** (:func:`knee`): the highest rate of the grid at which p95 <= SLO with
  no task unfinished, and every lower rate of the grid too (the first miss ends the
  search: a run is one draw, and a later lucky point is not a knee).
- **The time budget**: a run lasts its arrivals (``n x 3600 / rate`` s on average)
  plus at most the SLO (its cut). On the relative grid, with ``C`` the ceiling,
  the arrivals of one contestant's sweep take ``n x 3600 / C x sum(1/f)`` =
  ``n x 3600 / C x 8.8`` s for :data:`FRACTIONS`: with the default 12 tasks and
  the default scenario's ceiling on 2 CPU replicas (C ~ 600-850 tasks/hour),
  450-630 s, plus up to 5 SLOs (~5 x 25 s) of tails: <= ~13 minutes a contestant,
  ~40 minutes for the 3 of :data:`benchmarks.e2e.OPEN_LOOP`, plus the engines'
  starts and probes (~5 minutes, once per phase): under 60 minutes. 16 tasks a
  point (p95 not just the max) would take ~17 minutes a contestant, ~55 with the
  starts: too close to the hour, so a point keeps ``--tasks`` (12: its p95 is
  interpolated between the two slowest). ``--quick``: 4 short tasks (6 calls) at
  :data:`QUICK_FRACTIONS` of their ceiling (several thousand tasks/hour): seconds
  of arrivals a run, the engines' starts take most of its 5 minutes. The gateway
  contestants are not in the default sweep's list for that reason
  (``--contestants`` adds them).
- **The SLO**: ``--slo-s``, or :data:`SLO_FLOOR_MULTIPLE` x the workload's median
  task floor (:mod:`benchmarks.e2e.ceiling`) at the probes' engine speed,
  computed before the runs.
"""

from __future__ import annotations

import random
from typing import Any

from benchmarks.e2e.replay import RunTrace
from sim.metrics import percentile

#: --open-loop's default grid: these fractions of the workload's ceiling (tasks/hour)
FRACTIONS = (0.3, 0.5, 0.7, 0.9, 1.1)
#: --quick --open-loop: the quick run's 4 short tasks at two fractions of their ceiling
#: (its engines' start takes most of its 5 minutes; 4 tasks never queue much: a smoke
#: test, not a knee)
QUICK_FRACTIONS = (0.5, 1.1)
#: the grid's rates are rounded to this many tasks/hour
ROUND_TO = 10
#: the default SLO: this many times the workload's median task floor
SLO_FLOOR_MULTIPLE = 3.0


def grid(ceiling_per_hour: float, fractions: tuple[float, ...] = FRACTIONS) -> list[int]:
    """The relative grid: ``fractions`` of ``ceiling_per_hour``, each rounded to
    :data:`ROUND_TO` tasks/hour (at least that), without repeats, lowest first."""
    if ceiling_per_hour <= 0:
        raise ValueError("the ceiling must be > 0 tasks/hour for a relative grid")
    return sorted(
        {max(ROUND_TO, int(round(f * ceiling_per_hour / ROUND_TO)) * ROUND_TO) for f in fractions}
    )


def arrivals(n: int, rate_per_hour: float, seed: int) -> list[float]:
    """``n`` arrival times (s from the run's start): Poisson at ``rate_per_hour``,
    seeded by ``seed`` and the rate."""
    if rate_per_hour <= 0:
        raise ValueError("the arrival rate must be > 0 tasks/hour")
    rng = random.Random(f"arrivals/{seed}/{rate_per_hour:g}")
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate_per_hour / 3600.0)
        out.append(round(t, 3))
    return out


def deadline(times: list[float], slo_s: float) -> float:
    """When a run is cut: its last arrival plus the SLO."""
    return (max(times) if times else 0.0) + slo_s


def open_summary(run: RunTrace, offered: int, rate_per_hour: float, slo_s: float) -> dict[str, Any]:
    """The open-loop figures of one run: ``offered`` tasks at ``rate_per_hour``."""
    lat = sorted(t.latency_s for t in run.tasks)
    censored = lat + [max(0.0, run.ended - a) for a in run.unfinished_arrivals]
    good = sum(x <= slo_s for x in lat)
    p95 = percentile(censored, 95) if censored else 0.0
    return {
        "rate_per_hour": rate_per_hour,
        "offered": offered,
        "finished": len(lat),
        "good": good,
        "shed": run.rejected,
        "unfinished": run.unfinished,
        "p50_s": round(percentile(censored, 50), 2) if censored else 0.0,
        "p95_s": round(p95, 2),
        "goodput_per_hour": round(rate_per_hour * good / offered, 1) if offered else 0.0,
        "completed_per_hour": round(rate_per_hour * len(lat) / offered, 1) if offered else 0.0,
        "meets_slo": run.unfinished == 0 and bool(censored) and p95 <= slo_s,
    }


def knee(points: list[dict[str, Any]]) -> dict[str, Any]:
    """A contestant's knee from its :func:`open_summary` points (one per grid rate):
    the highest rate meeting the SLO with every lower rate meeting it too.
    ``bound``: ``bracketed`` (a higher rate missed), ``above_grid`` (every rate
    met: the knee is at least the top), ``below_grid`` (the lowest rate missed)."""
    ordered = sorted(points, key=lambda p: p["rate_per_hour"])
    best = None
    for p in ordered:
        if not p["meets_slo"]:
            break
        best = p
    if best is None:
        first = ordered[0] if ordered else {}
        return {
            "rate_per_hour": 0.0,
            "goodput_per_hour": 0.0,
            "p95_s": first.get("p95_s"),
            "shed": first.get("shed", 0),
            "bound": "below_grid",
        }
    bound = "above_grid" if best is ordered[-1] else "bracketed"
    return {
        "rate_per_hour": best["rate_per_hour"],
        "goodput_per_hour": best["goodput_per_hour"],
        "p95_s": best["p95_s"],
        "shed": best["shed"],
        "bound": bound,
    }


def knees(
    summaries: dict[tuple[str, int], dict[str, Any]], ceiling_per_hour: float | None
) -> dict[str, dict[str, Any]]:
    """Each contestant's knee, with its goodput there as a share of the ceiling."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for (name, _), s in summaries.items():
        by_name.setdefault(name, []).append(s)
    out = {}
    for name, points in sorted(by_name.items()):
        k = knee(points)
        k["ceiling_share"] = (
            round(k["goodput_per_hour"] / ceiling_per_hour, 3) if ceiling_per_hour else None
        )
        out[name] = k
    return out


def table(knees_: dict[str, dict[str, Any]], ceiling_per_hour: float | None) -> str:
    """The knees as a Markdown table."""
    lines = [
        "| contestant | knee (tasks/h) | goodput (tasks/h) | share of ceiling | p95 | shed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, k in knees_.items():
        share = "" if k["ceiling_share"] is None else f"{k['ceiling_share']:.0%}"
        more = "+" if k["bound"] == "above_grid" else ""
        lines.append(
            f"| {name} | {k['rate_per_hour']:g}{more} | {k['goodput_per_hour']:g} | "
            f"{share} | {k['p95_s']} s | {k['shed']} |"
        )
    if ceiling_per_hour:
        lines.append(f"\nceiling: {ceiling_per_hour:g} tasks/hour")
    return "\n".join(lines)


def open_targets(
    knees_: dict[str, dict[str, Any]], points: dict[tuple[str, int], dict[str, Any]]
) -> dict[str, Any]:
    """The issue's open-loop figures: ours' knee over the sticky router's and round
    robin's, ours' goodput at its knee as a share of the ceiling, and the most ours'
    p95 is above the sticky router's at a rate up to the sticky router's knee."""
    ours = knees_.get("ours")
    if ours is None:
        return {}
    out: dict[str, Any] = {"ours_goodput_ceiling_share": ours.get("ceiling_share")}
    for peer in ("sticky_router", "round_robin"):
        theirs = knees_.get(peer, {}).get("rate_per_hour")
        if theirs:
            out[f"ours_vs_{peer}_knee"] = round(ours["rate_per_hour"] / theirs, 2)
    sticky = knees_.get("sticky_router", {}).get("rate_per_hour")
    if sticky:
        over = [
            points[("ours", r)]["p95_s"] / s["p95_s"] - 1.0
            for (n, r), s in points.items()
            if n == "sticky_router" and r <= sticky and ("ours", r) in points and s["p95_s"]
        ]
        if over:
            out["ours_p95_over_sticky_up_to_its_knee"] = round(max(over), 3)
    return out
