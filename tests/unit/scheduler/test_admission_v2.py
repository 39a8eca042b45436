"""Admission v2 on the core alone: a task holds what it uses (its history, or its
first prompt, plus the growth expected to its next call, learned per agent), not its
worst case; growth past the budget pauses tool-waiting tasks (never one in a call),
down to a low water, at most ``max_pauses`` times per task."""

from __future__ import annotations

import pytest

from scheduler import (
    CallFinished,
    NextCall,
    Queue,
    ReleaseKV,
    ReplicaJoined,
    RunCall,
    SchedulerConfig,
    SchedulerCore,
    TaskArrived,
    TaskFinished,
    ToolFinished,
    ToolStarted,
)
from scheduler.config import v1
from scheduler.decisions import ReleaseCause as RC
from scheduler.estimates import GrowthStats

PRIOR = 1024


def core(**kw: object) -> SchedulerCore:
    c = SchedulerCore(SchedulerConfig(kv_headroom=0.0, **kw))  # type: ignore[arg-type]
    c.handle(ReplicaJoined(0, "r0", 10_000, 8))
    return c


def arrive(c: SchedulerCore, t: float, tid: str, prompt: int, peak: int = 8_000) -> list:
    return c.handle(TaskArrived(t, tid, "ag", 10, peak, prompt_tokens=prompt))


def reserved(c: SchedulerCore, tid: str) -> int:
    view = c.task(tid)
    assert view is not None
    return view.reserved_tokens


def test_a_task_holds_its_prompt_and_expected_growth_not_its_peak() -> None:
    c = core()
    for i in range(4):
        assert RunCall(f"t{i}", "r0", cold=True) in arrive(c, i, f"t{i}", 1_000)
        assert reserved(c, f"t{i}") == 1_000 + PRIOR
    # v1 reserves the peak (8,000 of 10,000): the second task waits for the first
    old = SchedulerCore(v1(SchedulerConfig(kv_headroom=0.0)))
    old.handle(ReplicaJoined(0, "r0", 10_000, 8))
    assert RunCall("a", "r0", cold=True) in arrive(old, 1, "a", 1_000)
    assert arrive(old, 2, "b", 1_000) == [Queue("b", "admission")]
    # with nothing said of the first prompt, v2 falls back to the peak as v1
    assert arrive(c, 5, "silent", 0, peak=500) and reserved(c, "silent") == 500
    c.check_invariants()


def test_the_expected_growth_is_learned_per_agent() -> None:
    c = core()
    arrive(c, 0, "t", 500)
    history = 0
    for step in range(10):  # each step: 300 tokens of observation and reply
        prompt = 500 + 300 * step
        history = prompt + 100
        c.handle(CallFinished(step + 0.5, "t", "r0", prompt, max(prompt - 300, 0), 100, 0.1))
        c.handle(ToolStarted(step + 0.6, "t", "shell", 0.1))
        c.handle(ToolFinished(step + 0.7, "t"))
    assert reserved(c, "t") == history + 300  # the learned growth replaced the prior
    c.check_invariants()


def test_growth_stats_quantile_window_and_prior() -> None:
    g = GrowthStats(quantile=0.9, window=10, prior=777, min_samples=3)
    assert g.expected("a") == 777
    for n in (10, 20):
        g.observe("a", n)
    assert g.expected("a") == 777  # under min_samples
    for n in range(30, 110, 10):
        g.observe("a", n)  # 10, 20, ..., 100: the window holds all ten
    assert g.expected("a") == 100
    for _ in range(10):
        g.observe("a", 5)  # the old steps leave the window
    assert g.expected("a") == 5 and g.expected("b") == 777
    with pytest.raises(ValueError):
        GrowthStats(quantile=0.0)


def grow_to_overflow(c: SchedulerCore) -> list:
    """Three tasks on r0 (10,000 tokens); a and b wait on tools, c's call grows."""
    for tid, at in (("a", 0.0), ("b", 0.1), ("c", 0.2)):
        arrive(c, at, tid, 1_500)
    for tid, at in (("a", 1.0), ("b", 1.1), ("c", 1.2)):
        c.handle(CallFinished(at, tid, "r0", 1_500, 0, 100, 0.1))
    c.handle(ToolStarted(2.0, "a", "slow", 30.0))  # back last
    c.handle(ToolStarted(2.1, "b", "fast", 1.0))
    c.handle(NextCall(3.0, "c"))  # c's next call runs now
    return c.handle(CallFinished(4.0, "c", "r0", 5_000, 1_600, 400, 0.5))


def test_growth_past_the_budget_pauses_the_task_back_last() -> None:
    c = core()  # default: pause just enough (low water 1.0)
    out = grow_to_overflow(c)
    released = [(d.task_id, d.cause) for d in out if isinstance(d, ReleaseKV)]
    assert released == [("a", RC.OVER_BUDGET)]  # 11,672 - 2,624 = 9,048 <= 10,000
    c.check_invariants()


def test_a_low_water_pauses_below_the_budget() -> None:
    c = core(pause_low_water=0.9)
    out = grow_to_overflow(c)
    # c holds 5,400 + 1,024; a and b 1,600 + 1,024 each: 11,672 > 10,000. Pausing a
    # (back last) leaves 9,048, over the low water (9,000): b is paused too.
    released = [d for d in out if isinstance(d, ReleaseKV)]
    assert [(d.task_id, d.cause) for d in released] == [
        ("a", RC.OVER_BUDGET),
        ("b", RC.OVER_BUDGET),
    ]
    view = c.task("c")
    assert view is not None and view.kv_held  # the task whose call grew keeps its KV
    c.check_invariants()


def test_a_task_at_its_pause_limit_is_passed_over() -> None:
    c = core(max_pauses=0, pause_low_water=1.0)
    out = grow_to_overflow(c)
    released = [(d.task_id, d.cause) for d in out if isinstance(d, ReleaseKV)]
    assert released == [("c", RC.OVER_BUDGET)]  # a and b may not be paused: c itself goes
    a, b = c.task("a"), c.task("b")
    assert a is not None and a.kv_held and b is not None and b.kv_held
    c.check_invariants()


def test_a_paused_task_comes_back_before_new_arrivals() -> None:
    c = core(pause_low_water=0.9)
    grow_to_overflow(c)  # a and b paused; c holds 6,424 of 10,000
    assert RunCall("new0", "r0", cold=True) in arrive(c, 5, "new0", 1_500)  # 2,524 fits
    assert arrive(c, 6, "new1", 1_500) == [Queue("new1", "admission")]
    assert c.handle(ToolFinished(40.0, "a")) == [Queue("a", "admission")]  # no room yet
    placed = c.handle(TaskFinished(42.0, "c"))  # 6,424 freed: room for one of them
    runs = [d.task_id for d in placed if isinstance(d, RunCall)]
    assert runs[0] == "a", placed  # the paused task first, then the new one
    c.check_invariants()
