"""The end-to-end benchmark's figures: one contestant's run summarized, the sweep
table, the targets and the product path's overhead."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.e2e.replay import RunTrace
from sim.metrics import percentile

#: the product path (Executor) against the core alone (Dispatcher): its overhead target
OVERHEAD_TARGET = 0.05
#: the replicas' answers carry no time to first token (the Ray actor returns the
#: whole call, the HTTP servers' meta_info has it only with metrics on): turn
#: latency is the call's own (engine for the actors, HTTP round trip for the router)
TURN_METRIC = "call latency (no TTFT from these replicas)"


def by_turn(
    run: RunTrace, turns: tuple[int, ...] = (0, 1, 2, 4, 8, 12, 16, 20, 24, 32)
) -> dict[str, float]:
    """Median call latency at each turn index (those some task reached)."""
    at: dict[int, list[float]] = {}
    for t in run.tasks:
        for c in t.calls:
            at.setdefault(c.k, []).append(c.ended - c.started)
    return {str(k): round(statistics.median(at[k]), 3) for k in turns if k in at}


def reprefilled(run: RunTrace) -> int:
    """Tokens of a task's own earlier history computed again: what each call
    prefilled beyond what its prompt added to the previous one."""
    total = 0
    for t in run.tasks:
        calls = sorted(t.calls, key=lambda c: c.k)
        for prev, c in zip(calls, calls[1:], strict=False):
            total += max(
                0, (c.prompt_tokens - c.cached_tokens) - (c.prompt_tokens - prev.prompt_tokens)
            )
    return total


def replica_moves(run: RunTrace) -> int:
    """Calls that ran on another replica than their task's previous call (a move:
    the history is prefilled again there)."""
    moves = 0
    for t in run.tasks:
        calls = sorted(t.calls, key=lambda c: c.k)
        moves += sum(a.replica_id != b.replica_id for a, b in zip(calls, calls[1:], strict=False))
    return moves


def summarize(run: RunTrace) -> dict[str, Any]:
    lat = [t.latency_s for t in run.tasks]
    calls = [c for t in run.tasks for c in t.calls]
    tools = [b - a for t in run.tasks for a, b in t.tools]
    prompt = sum(c.prompt_tokens for c in calls)
    cached = sum(c.cached_tokens for c in calls)
    kv_by_replica: dict[str, list[float]] = {}
    for _, rid, used, cap in run.kv:
        kv_by_replica.setdefault(rid, []).append(used / cap)
    served: dict[str, int] = {}
    for c in calls:
        served[c.replica_id] = served.get(c.replica_id, 0) + 1
    if not lat:
        return {"path": run.path, "tasks": 0, "tasks_rejected": run.rejected}
    queued = sum(c.started - c.submitted for c in calls)  # waiting for a grant
    return {
        "path": run.path,
        "tasks": len(lat),
        "tasks_rejected": run.rejected,
        "p50_s": round(percentile(lat, 50), 2),
        "p95_s": round(percentile(lat, 95), 2),
        "p99_s": round(percentile(lat, 99), 2),
        "tasks_per_hour": round(len(lat) / run.ended * 3600, 1),
        "makespan_s": round(run.ended, 1),
        "calls": len(calls),
        "prefill_tokens": prompt - cached,
        "reprefilled_tokens": reprefilled(run),
        "cache_hit_ratio": round(cached / prompt, 3) if prompt else 0.0,
        "queued_s_total": round(queued, 1),
        "queued_share": round(queued / sum(lat), 3),
        "replica_moves": replica_moves(run),
        "call_s_mean": round(statistics.mean(c.ended - c.started for c in calls), 3),
        "call_s_by_turn": by_turn(run),
        "tool_s_mean": round(statistics.mean(tools), 3) if tools else 0.0,
        "time_in_calls": round(sum(c.ended - c.started for c in calls) / sum(lat), 3),
        "calls_by_replica": dict(sorted(served.items())),
        "kv_occupancy_mean": {
            r: round(statistics.mean(v), 3) for r, v in sorted(kv_by_replica.items())
        },
        "kv_occupancy": [[round(t, 1), r, u, c] for t, r, u, c in run.kv],
    }


def targets(c: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "ours" in c and "p95_s" in c["ours"]:
        others = [n for n in c if n != "ours" and "p95_s" in c[n]]
        out["ours_lowest_p95"] = all(c["ours"]["p95_s"] <= c[n]["p95_s"] for n in others)
        for peer in ("round_robin", "sticky_router"):
            if "tasks_per_hour" in c.get(peer, {}):
                ratio = c["ours"]["tasks_per_hour"] / c[peer]["tasks_per_hour"]
                out[f"ours_vs_{peer}_tasks_per_hour"] = round(ratio, 2)
                out[f"ours_vs_{peer}_p95"] = round(c["ours"]["p95_s"] / c[peer]["p95_s"], 2)
        if "ours_core" in c and "p50_s" in c["ours_core"]:
            over = c["ours"]["p50_s"] / c["ours_core"]["p50_s"] - 1.0
            out["product_overhead_p50"] = round(over, 3)
            out["product_overhead_within_5pct"] = over <= OVERHEAD_TARGET
    return out


ROW_KEYS = (
    "path",
    "tasks",
    "tasks_rejected",
    "p50_s",
    "p95_s",
    "p99_s",
    "tasks_per_hour",
    "prefill_tokens",
    "reprefilled_tokens",
    "cache_hit_ratio",
    "queued_share",
    "replica_moves",
    "calls_by_replica",
)


def sweep_rows(summaries: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (contestant, load), in load order."""
    return [
        {"concurrency": load, "contestant": name, **{k: s[k] for k in ROW_KEYS if k in s}}
        for (name, load), s in sorted(summaries.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table (the README's)."""
    head = (
        "| load | contestant | p50 | p95 | p99 | tasks/h | prefill | re-prefilled | "
        "hit ratio | rejected |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if "p50_s" not in r:
            continue
        lines.append(
            f"| {r['concurrency']} | {r['contestant']} | {r['p50_s']} s | {r['p95_s']} s | "
            f"{r['p99_s']} s | {r['tasks_per_hour']:.0f} | {r['prefill_tokens']:,} | "
            f"{r['reprefilled_tokens']:,} | {r['cache_hit_ratio']:.2f} | {r['tasks_rejected']} |"
        )
    return "\n".join(lines)
