"""Issue 29's figures of a run (engine-free): idle while waiting from the client
trace, KV locked per replica, the core's own figures, and the report's table."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.e2e.replay import CallTrace, RunTrace, TaskTrace
from benchmarks.e2e.report import (
    core_summary,
    idle_while_waiting,
    kv_locked,
    summarize,
    waits_table,
)
from scheduler.stats import CoreStats, ReplicaKV, TaskWait


def _run(core: dict[str, Any] | None = None) -> RunTrace:
    # r0 busy 0-4 and 6-8; r1 busy 1-3. Task b's call 1 waits 4-6 (r1 idle all of
    # it; r0 idle 4-6 too): idle while waiting 2 s. Task c's call waits 2-3 while
    # both run: waiting but none idle.
    a = TaskTrace(
        "a", 0.0, 8.0, [CallTrace(0, "r0", 0, 0, 4, 100, 0), CallTrace(1, "r0", 6, 6, 8, 200, 100)]
    )
    b = TaskTrace(
        "b", 1.0, 9.0, [CallTrace(0, "r1", 1, 1, 3, 100, 0), CallTrace(1, "r0", 4, 6, 6.5, 300, 0)]
    )
    c = TaskTrace("c", 2.0, 5.0, [CallTrace(0, "r0", 2, 3, 3.5, 50, 0)])
    kv = [(0.5, "r0", 100, 1000), (1.5, "r0", 300, 1000), (1.5, "r1", 50, 1000)]
    return RunTrace("x", 0.0, 9.0, [a, b, c], kv, core=core or {})


def test_idle_while_waiting_from_the_client_trace() -> None:
    idle, waiting = idle_while_waiting(_run())
    # waits: c 2-3 (r1 busy 1-3, r0 busy 0-4: none idle), b 4-6 (both idle)
    assert waiting == 3.0 and idle == 2.0
    # the routers: no call waits for a grant, so none is idle while waiting
    no_wait = RunTrace(
        "s", 0.0, 5.0, [TaskTrace("a", 0, 5, [CallTrace(0, "r0", 0, 0, 1, 9, 0)])], []
    )
    assert idle_while_waiting(no_wait) == (0.0, 0.0)


def test_kv_locked_and_the_summary_fields() -> None:
    run = _run()
    assert kv_locked(run) == {
        "r0": {"mean_tokens": 200.0, "peak_tokens": 300},
        "r1": {"mean_tokens": 50.0, "peak_tokens": 50},
    }
    s = summarize(run)
    assert s["idle_while_waiting_s"] == 2.0 and "client trace" in s["idle_while_waiting_source"]
    assert s["call_s_total"] == 4 + 2 + 2 + 0.5 + 0.5
    assert s["queued_share"] == round(3.0 / (8 + 8 + 3), 3)
    assert s["kv_cached"] is None and "kv_evictable_tokens" in s["kv_cached_source"]
    assert "kv_reserved" not in s  # the ledger is ours' alone


def test_ours_reads_the_core_stats() -> None:
    stats = CoreStats(
        now=9.0,
        observed_s=9.0,
        idle_while_waiting_s=1.25,
        waiting_s=2.5,
        tasks={"a": TaskWait(1.0, 0.5, True), "b": TaskWait(0.0, 2.0, False)},
        replicas={"r0": ReplicaKV(1000, 400, 350.04, 900), "r1": ReplicaKV(1000, 0, 10.0, 60)},
        counters={"shed": 1},
    )
    core = core_summary(stats)
    assert core["queued_s"] == 3.5 and core["task_wait_s_max"] == 2.0
    assert core["kv_reserved"]["r0"] == {
        "now_tokens": 400,
        "mean_tokens": 350.0,
        "peak_tokens": 900,
        "budget_tokens": 1000,
    }
    s = summarize(_run(core))
    assert (
        s["idle_while_waiting_s"] == 1.25 and s["waiting_s"] == 2.5
    )  # the core's, not the trace's
    assert s["trace_idle_while_waiting_s"] == 2.0
    assert "SchedulerCore.stats()" in s["idle_while_waiting_source"]
    assert s["kv_reserved"]["r1"]["peak_tokens"] == 60
    again = RunTrace.from_json(json.loads(json.dumps(_run(core).to_json())))
    assert again.core == core
    table = waits_table({("ours", 4): s, ("round_robin", 4): summarize(_run())}, "load")
    assert "| 4 | ours | " in table and "r0: 350 (900)" in table
    assert "| 4 | round_robin | " in table and "n/a" in table
