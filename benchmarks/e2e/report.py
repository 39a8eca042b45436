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


def idle_while_waiting(run: RunTrace) -> tuple[float, float]:
    """From the client-side trace: (seconds during which some replica had no call in
    flight while some task's call waited, seconds during which some call waited).
    A call waits from its ``submitted`` to its ``started`` (its grant: ours; the
    router contestants send at once, so theirs never wait and both are 0: calls
    that queue inside SGLang are in flight here). The replicas: those that served
    a call or were sampled for KV."""
    replicas = {c.replica_id for t in run.tasks for c in t.calls} | {r for _, r, _, _ in run.kv}
    replicas.discard("?")
    edges: list[tuple[float, str, int]] = []  # (t, replica or "" for a wait, +1/-1)
    for t in run.tasks:
        for c in t.calls:
            if c.started > c.submitted:
                edges += [(c.submitted, "", 1), (c.started, "", -1)]
            if c.replica_id in replicas and c.ended > c.started:
                edges += [(c.started, c.replica_id, 1), (c.ended, c.replica_id, -1)]
    edges.sort(key=lambda e: (e[0], e[2]))
    busy = dict.fromkeys(replicas, 0)
    waits, last, idle_s, waiting_s = 0, 0.0, 0.0, 0.0
    for when, rid, d in edges:
        if waits > 0:
            waiting_s += when - last
            if any(n == 0 for n in busy.values()):
                idle_s += when - last
        last = when
        if rid:
            busy[rid] += d
        else:
            waits += d
    return round(idle_s, 2), round(waiting_s, 2)


def kv_locked(run: RunTrace) -> dict[str, dict[str, float]]:
    """Each replica's KV held by running requests (SGLang's ``num_used_tokens``, as
    sampled during the run): mean and peak tokens."""
    by: dict[str, list[int]] = {}
    for _, rid, used, _ in run.kv:
        by.setdefault(rid, []).append(used)
    return {
        r: {"mean_tokens": round(statistics.mean(v), 1), "peak_tokens": max(v)}
        for r, v in sorted(by.items())
    }


def core_summary(stats: Any) -> dict[str, Any]:
    """Ours: the scheduler core's own figures (``SchedulerCore.stats()``): idle while
    waiting, time some task waited, the tasks' grant waits, each replica's KV as the
    ledger reserved it (now, mean, peak, budget; tokens)."""
    waits = list(stats.tasks.values())
    return {
        "idle_while_waiting_s": round(stats.idle_while_waiting_s, 2),
        "waiting_s": round(stats.waiting_s, 2),
        "observed_s": round(stats.observed_s, 2),
        "queued_s": round(stats.queued_s, 2),
        "task_wait_s_max": round(max((w.total_s for w in waits), default=0.0), 2),
        "admission_s": round(sum(w.admission_s for w in waits), 2),
        "slot_s": round(sum(w.slot_s for w in waits), 2),
        "kv_reserved": {
            str(r): {
                "now_tokens": kv.reserved_tokens,
                "mean_tokens": round(kv.mean_reserved_tokens, 1),
                "peak_tokens": kv.peak_reserved_tokens,
                "budget_tokens": kv.budget_tokens,
            }
            for r, kv in sorted(stats.replicas.items())
        },
        "counters": dict(stats.counters),
    }


#: where the cached (evictable radix cache) KV would come from, and why it is absent
KV_CACHED_SOURCE = (
    "not measured: SGLang's load snapshot (/v1/loads, tokenizer_manager.get_loads(): "
    "what the actors and servers are sampled with) has no evictable-cache figure; it is "
    "kv_evictable_tokens in its Prometheus /metrics (--enable-metrics) alone, which the "
    "Ray actors do not serve"
)


def wait_figures(run: RunTrace) -> dict[str, Any]:
    """Issue 29's figures of one run: queued share, idle while waiting (the core's for
    ours, else the client trace's), KV per replica as reserved (ours), locked and
    cached, time in calls, re-prefilled tokens."""
    idle, waiting = idle_while_waiting(run)
    calls_s = sum(c.ended - c.started for t in run.tasks for c in t.calls)
    out: dict[str, Any] = {
        "idle_while_waiting_s": idle,
        "waiting_s": waiting,
        "idle_while_waiting_source": "client trace (a replica with no call in flight "
        "while some call waited for its grant)",
        "trace_idle_while_waiting_s": idle,
        "call_s_total": round(calls_s, 1),
        "kv_locked": kv_locked(run),
        "kv_cached": None,
        "kv_cached_source": KV_CACHED_SOURCE,
    }
    if run.core:
        out.update(
            idle_while_waiting_s=run.core["idle_while_waiting_s"],
            waiting_s=run.core["waiting_s"],
            idle_while_waiting_source="SchedulerCore.stats() (the core's events)",
            kv_reserved=run.core["kv_reserved"],
            core=run.core,
        )
    return out


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
        "output_tokens": sum(c.output_tokens for c in calls),
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
        **wait_figures(run),
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


def waits_table(summaries: dict[tuple[str, int], dict[str, Any]], unit: str) -> str:
    """Issue 29's figures per (contestant, load or rate) as a Markdown table."""

    def kv(s: dict[str, Any], key: str) -> str:
        return " / ".join(
            f"{r}: {v['mean_tokens']:.0f} ({v['peak_tokens']})" for r, v in s.get(key, {}).items()
        )

    lines = [
        f"| {unit} | contestant | queued share | idle while waiting | time in calls | "
        "re-prefilled | KV reserved mean (peak) | KV locked mean (peak) | KV cached |",
        "|---:|---|---:|---:|---:|---:|---|---|---|",
    ]
    for (name, load), s in sorted(summaries.items(), key=lambda kv_: (kv_[0][1], kv_[0][0])):
        if "p50_s" not in s:
            continue
        lines.append(
            f"| {load} | {name} | {s['queued_share']:.3f} | {s['idle_while_waiting_s']} s | "
            f"{s['call_s_total']} s ({s['time_in_calls']:.0%}) | {s['reprefilled_tokens']:,} | "
            f"{kv(s, 'kv_reserved') or 'n/a'} | {kv(s, 'kv_locked')} | n/a |"
        )
    return "\n".join(lines)


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
