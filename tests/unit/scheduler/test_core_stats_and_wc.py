"""The core's counters on hand-made event sequences with known answers, the learned
estimates (prefill speed, drain rate), work-conserving admission and opt-in shedding."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import (
    CallFinished,
    Queue,
    Reject,
    ReleaseCause,
    ReleaseKV,
    ReplicaJoined,
    RunCall,
    SchedulerConfig,
    SchedulerCore,
    TaskArrived,
    TaskFinished,
    Tick,
    ToolFinished,
    ToolStarted,
)
from scheduler.estimates import DrainRate, PrefillSpeed


def exact(**kw: Any) -> SchedulerConfig:
    """Exact reservations: no headroom, no growth allowance."""
    return SchedulerConfig(kv_headroom=0.0, growth_prior_tokens=0, **kw)


def test_waits_idle_while_waiting_and_reserved_kv_known_answers() -> None:
    core = SchedulerCore(exact(max_running_calls=1, work_conserving=False))
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_000))
    assert h(TaskArrived(1.0, "a", prompt_tokens=600)) == [RunCall("a", "r0", True)]
    assert h(TaskArrived(2.0, "b", prompt_tokens=600)) == [Queue("b", "admission")]
    h(CallFinished(3.0, "a", "r0", 600, 0, 10, 0.5))  # r0 idle from 3 while b waits
    out = h(ToolStarted(4.0, "a", "grep"))  # under pressure: a's KV goes, b is placed
    assert ReleaseKV("a", "r0", 610, ReleaseCause.TOOL_WAIT) in out
    assert RunCall("b", "r0", True) in out
    assert h(ToolFinished(5.0, "a")) == [Queue("a", "admission")]  # no room for it now
    h(CallFinished(6.0, "b", "r0", 600, 0, 10, 0.5))  # idle again from 6 while a waits
    out = h(TaskFinished(7.0, "b"))
    assert RunCall("a", "r0", True) in out
    h(CallFinished(8.0, "a", "r0", 610, 0, 10, 0.5))
    h(TaskFinished(8.0, "a"))
    s = core.stats()
    assert s.observed_s == pytest.approx(8.0)
    assert s.idle_while_waiting_s == pytest.approx(2.0)  # [3, 4] and [6, 7]
    assert s.waiting_s == pytest.approx(4.0)  # b [2, 4], a [5, 7]
    assert (s.tasks["a"].admission_s, s.tasks["a"].slot_s) == pytest.approx((2.0, 0.0))
    assert (s.tasks["b"].admission_s, s.tasks["b"].slot_s) == pytest.approx((2.0, 0.0))
    assert s.tasks["a"].done and s.queued_s == pytest.approx(4.0)
    kv = s.replicas["r0"]
    # 600 on [1, 3], 610 on [3, 4], 600 on [4, 6], 610 on [6, 7] and [7, 8], over [0, 8]
    assert kv.mean_reserved_tokens == pytest.approx((1200 + 610 + 1200 + 610 + 610) / 8)
    # (a holds 620 at 8 for no time: its last call grew it, then it ended)
    assert (kv.reserved_tokens, kv.peak_reserved_tokens, kv.budget_tokens) == (0, 620, 1_000)
    assert s.counters == {"pause:tool_wait": 1}


def test_slot_wait_counts_and_a_busy_replica_is_not_idle() -> None:
    core = SchedulerCore(exact(max_running_calls=1))
    core.handle(ReplicaJoined(0.0, "r0", 10_000))
    core.handle(TaskArrived(1.0, "a", prompt_tokens=100))
    assert core.handle(TaskArrived(2.0, "b", prompt_tokens=100)) == [Queue("b", "replica", "r0")]
    live = core.stats()
    assert live.tasks["b"].slot_s == 0.0 and not live.tasks["b"].done
    assert core.handle(CallFinished(5.0, "a", "r0", 100, 0, 5, 4.0)) == [RunCall("b", "r0", True)]
    s = core.stats()
    assert s.tasks["b"].slot_s == pytest.approx(3.0) and s.tasks["b"].admission_s == 0.0
    assert s.waiting_s == pytest.approx(3.0) and s.idle_while_waiting_s == 0.0


def test_prefill_speed_is_fitted_from_calls() -> None:
    fit = PrefillSpeed(prior=1_000.0)
    assert fit.tokens_per_s() == 1_000.0
    for i in range(40):  # latency = prefilled / 8,000 + output / 50 + 20 ms
        p, o = (i * 997) % 20_000, 10 + (i * 7) % 90
        fit.observe(p, o, p / 8_000 + o / 50 + 0.02)
    assert fit.tokens_per_s() == pytest.approx(8_000, rel=1e-6)
    assert fit.seconds(16_000) == pytest.approx(2.0, rel=1e-6)
    same = PrefillSpeed(prior=1_000.0)
    for _ in range(20):  # every call alike: speed and overhead cannot be told apart
        same.observe(500, 10, 0.3)
    assert same.tokens_per_s() == 1_000.0


def test_drain_rate_and_expected_wait() -> None:
    d = DrainRate(window_s=1e9)  # no decay: a plain ratio
    d.advance(0.0, False)
    assert d.expected_wait(1) is None
    for t in (2.0, 4.0, 6.0, 8.0):
        d.advance(t, True)
        d.drained()
    d.advance(20.0, False)  # idle queue time does not count
    assert d.per_s() == pytest.approx(0.5, rel=1e-6)
    assert d.expected_wait(3) == pytest.approx(6.0, rel=1e-6)


def _busy_queue(core: SchedulerCore, slow_hint: float) -> None:
    """r0 (1,000 tokens, 2 slots): t0 holds 690 in a call while new tasks of 250
    tokens drain through the 310 left one by one (a learned drain rate of one every
    ~1 s; nothing to release meanwhile); at 5.5 t0 starts a tool of ``slow_hint`` s
    holding 700, and r0 has a free slot."""
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_000, 2))
    h(TaskArrived(0.0, "t0", prompt_tokens=690))
    h(TaskArrived(1.0, "f0", prompt_tokens=250))
    for i in range(1, 5):  # f{i} queues behind f{i-1}, placed when f{i-1} ends
        t = float(i)
        h(TaskArrived(t + 0.1, f"f{i}", prompt_tokens=250))
        h(CallFinished(t + 0.5, f"f{i - 1}", "r0", 250, 0, 5, 0.4))
        h(TaskFinished(t + 1.0, f"f{i - 1}"))
    h(CallFinished(5.5, "t0", "r0", 690, 0, 10, 5.5))
    h(ToolStarted(5.5, "t0", "slow", slow_hint))
    h(CallFinished(5.5, "f4", "r0", 250, 0, 5, 0.4))


@pytest.mark.parametrize("wc", [True, False])
def test_work_conserving_admission_releases_a_late_tool_waiter(wc: bool) -> None:
    cfg = exact(work_conserving=wc, retention_ratio=1e9)
    core = SchedulerCore(cfg)
    _busy_queue(core, slow_hint=60.0)
    assert core.stats().drain_per_s is not None
    out = core.handle(TaskArrived(5.6, "head", prompt_tokens=400))  # 300 free, 1 slot free
    if wc:
        assert ReleaseKV("t0", "r0", 700, ReleaseCause.MAKE_ROOM) in out
        assert RunCall("head", "r0", True) in out
        assert core.stats().counters.get("work_conserving_admits") == 1
    else:
        assert out == [Queue("head", "admission")]
    core.check_invariants()


def test_work_conserving_admission_rents_then_buys_room_from_a_waiter_back_soon() -> None:
    """t0's tool ends before the head would have been admitted anyway: releasing it
    at once would only move the wait onto t0, so the head waits (rents), until it
    has waited as long as t0's re-prefill (700 tokens at 11,300/s: 62 ms) would
    take; then it buys the room."""
    core = SchedulerCore(exact(retention_ratio=1e9))
    _busy_queue(core, slow_hint=0.01)  # (its tool is long overdue: expected back now)
    h = core.handle
    assert h(TaskArrived(5.6, "head", prompt_tokens=400)) == [Queue("head", "admission")]
    assert h(TaskArrived(5.65, "x", prompt_tokens=400)) == [Queue("x", "admission")]
    out = h(TaskArrived(5.7, "y", prompt_tokens=400))  # the head has waited 0.1 s
    assert ReleaseKV("t0", "r0", 700, ReleaseCause.MAKE_ROOM) in out
    assert RunCall("head", "r0", True) in out
    assert Queue("y", "admission") in out
    core.check_invariants()


@pytest.mark.parametrize("b_arrives", [0.1, 0.99])
def test_rent_or_buy_needs_no_learned_drain_rate(b_arrives: float) -> None:
    """At a run's start (no task has left the queue yet, so no drain rate) a waiting
    task gets the replica whose only call just ended once it has waited as long as
    the tool-waiter's re-prefill (610 tokens at 11,300/s: 54 ms): the idle replica
    does not sit beside it. Before that it waits, and the tool-waiter keeps its KV."""
    core = SchedulerCore(exact(retention_ratio=1e9, max_running_calls=4))
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_000))
    h(TaskArrived(0.0, "a", prompt_tokens=600))
    assert h(TaskArrived(b_arrives, "b", prompt_tokens=600)) == [Queue("b", "admission")]
    h(CallFinished(1.0, "a", "r0", 600, 0, 10, 0.9))
    out = h(ToolStarted(1.0, "a", "slow", 0.5))  # r0 idle now
    assert core.stats().drain_per_s is None
    if b_arrives < 0.9:  # b has waited 0.9 s: it buys
        assert out == [ReleaseKV("a", "r0", 610, ReleaseCause.MAKE_ROOM), RunCall("b", "r0", True)]
        assert h(ToolFinished(1.2, "a")) == [Queue("a", "admission")]
    else:  # 10 ms: it rents; a comes back to its KV
        assert out == []
        assert h(ToolFinished(1.2, "a")) == [RunCall("a", "r0", False)]
    core.check_invariants()


def test_wake_at_is_when_the_head_may_buy_and_a_tick_then_buys() -> None:
    """With no other event (a's tool runs long), the driver's ``Tick`` at
    ``wake_at()`` (b queued at 0.99 + a's re-prefill of 54 ms) buys b its room."""
    core = SchedulerCore(exact(retention_ratio=1e9, max_running_calls=4))
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_000))
    assert core.wake_at() is None  # nobody waits
    h(TaskArrived(0.0, "a", prompt_tokens=600))
    h(TaskArrived(0.99, "b", prompt_tokens=600))
    assert core.wake_at() is None  # a is in its call: nothing to release
    h(CallFinished(1.0, "a", "r0", 600, 0, 10, 0.9))
    assert h(ToolStarted(1.0, "a", "slow", 60.0)) == []
    wake = core.wake_at()
    assert wake == pytest.approx(0.99 + 610 / 11_300)
    assert h(Tick(wake - 0.01)) == []  # too early: it rents
    assert h(Tick(wake)) == [
        ReleaseKV("a", "r0", 610, ReleaseCause.MAKE_ROOM),
        RunCall("b", "r0", True),
    ]
    assert core.wake_at() is None
    off = SchedulerCore(exact(work_conserving=False))
    off.handle(ReplicaJoined(0.0, "r0", 1_000))
    off.handle(TaskArrived(0.0, "a", prompt_tokens=900))
    off.handle(TaskArrived(0.0, "b", prompt_tokens=900))
    assert off.wake_at() is None


def test_a_stale_tool_waiter_gives_its_room_whatever_its_pauses() -> None:
    """max_pauses=0: no tool-waiter may be paused. One whose wait is past twice its
    expected length plus a second (a session whose client has gone) still gives its
    room to a waiting task: at ``wake_at()`` (1 + 2 x 2 + 1 = 6), by a ``Tick``,
    released as ``STALE`` (not counted as a pause), at no price."""
    core = SchedulerCore(exact(retention_ratio=1e9, max_running_calls=4, max_pauses=0))
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_000))
    h(TaskArrived(0.0, "a", prompt_tokens=600))
    h(CallFinished(1.0, "a", "r0", 600, 0, 10, 0.9))
    assert h(ToolStarted(1.0, "a", "client", 2.0)) == []
    assert h(TaskArrived(2.0, "b", prompt_tokens=600)) == [Queue("b", "admission")]
    assert core.wake_at() == pytest.approx(6.0)
    assert h(Tick(5.99)) == []  # a is overdue, not yet stale: its room stays
    assert h(Tick(6.0)) == [
        ReleaseKV("a", "r0", 610, ReleaseCause.STALE),
        RunCall("b", "r0", True),
    ]
    assert not any(k.startswith("pause:") for k in core.stats().counters)
    assert h(ToolFinished(9.0, "a")) == [Queue("a", "admission")]  # it came back: cold
    core.check_invariants()


def test_stale_waiters_go_first_and_fresh_ones_set_the_price() -> None:
    """Two tool-waiters hold r0; the head needs both. s is stale (its expected 0.1 s
    wait is long over), f is fresh: the head buys once it has waited f's re-prefill
    (610 tokens at 11,300/s: 54 ms), not s's plus f's, and s goes as STALE."""
    core = SchedulerCore(exact(retention_ratio=1e9, max_running_calls=4))
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_300))
    h(TaskArrived(0.0, "s", prompt_tokens=600))
    h(TaskArrived(0.0, "f", prompt_tokens=600))
    h(CallFinished(1.0, "s", "r0", 600, 0, 10, 0.9))
    h(ToolStarted(1.0, "s", "quick", 0.1))  # stale from 1 + 0.2 + 1 = 2.2
    h(CallFinished(3.0, "f", "r0", 600, 0, 10, 0.9))
    h(ToolStarted(3.0, "f", "slow", 60.0))
    assert h(TaskArrived(3.0, "b", prompt_tokens=1_200)) == [Queue("b", "admission")]
    wake = core.wake_at()
    assert wake == pytest.approx(3.0 + 610 / 11_300)
    assert h(Tick(wake)) == [
        ReleaseKV("s", "r0", 610, ReleaseCause.STALE),
        ReleaseKV("f", "r0", 610, ReleaseCause.MAKE_ROOM),
        RunCall("b", "r0", True),
    ]
    core.check_invariants()


@settings(max_examples=150, deadline=None)
@given(
    waiters=st.lists(st.tuples(st.floats(0.05, 5.0), st.integers(50, 240)), min_size=1, max_size=8),
    need=st.integers(100, 900),
    arrives=st.floats(1.0, 12.0),
)
def test_a_head_behind_waiters_at_their_pause_limit_gets_in_exactly_at_wake_at(
    waiters: list[tuple[float, int]], need: int, arrives: float
) -> None:
    """No waiter may be paused (max_pauses=0), whatever its expected wait: a head
    that does not fit gets in at ``wake_at()`` and not before, by ``STALE`` releases
    only, each of a wait already stale."""
    core = SchedulerCore(exact(retention_ratio=1e9, max_running_calls=16, max_pauses=0))
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 2_000))
    stale_at = {}
    for i, (_, size) in enumerate(waiters):
        h(TaskArrived(0.0, f"w{i}", prompt_tokens=size))
    for i, (_, size) in enumerate(waiters):
        h(CallFinished(0.5, f"w{i}", "r0", size, 0, 0, 0.1))
    for i, (expected, _) in enumerate(waiters):
        h(ToolStarted(1.0, f"w{i}", "t", expected))
        stale_at[f"w{i}"] = 1.0 + 2 * expected + 1.0
    out = h(TaskArrived(arrives, "head", prompt_tokens=need))
    if RunCall("head", "r0", True) not in out:
        assert out == [Queue("head", "admission")]  # nothing it may buy yet
        wake = core.wake_at()
        assert wake is not None and wake > arrives
        if wake - 1e-3 > arrives:
            assert h(Tick(wake - 1e-3)) == []  # not before
        out = h(Tick(wake))
    assert out[-1] == RunCall("head", "r0", True)
    for d in out[:-1]:
        if isinstance(d, ReleaseKV):
            assert d.cause is ReleaseCause.STALE, d
            assert stale_at[d.task_id] <= core.now + 1e-9, (d, stale_at)
        else:
            assert d == Queue("head", "admission")  # (queued, then bought at once)
    core.check_invariants()


def test_shedding_rejects_when_the_predicted_wait_exceeds_the_slo() -> None:
    cfg = exact(max_running_calls=1, shed_slo_s=2.5, drain_window_s=1e9)
    core = SchedulerCore(cfg)
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_000))
    h(TaskArrived(0.0, "a0", prompt_tokens=900))
    for i in range(1, 5):  # a{i} waits 1 s in the queue, then runs: 1 drain per s
        t = float(i)
        h(TaskArrived(t - 1.0, f"a{i}", prompt_tokens=900))
        h(CallFinished(t - 0.5, f"a{i - 1}", "r0", 900, 0, 5, 0.5))
        h(TaskFinished(t, f"a{i - 1}"))
    assert core.stats().drain_per_s == pytest.approx(1.0, rel=1e-6)
    assert h(TaskArrived(4.0, "w1", prompt_tokens=900)) == [Queue("w1", "admission")]
    assert core.predicted_wait_s() == pytest.approx(2.0)  # 2nd in line at 1 per s
    assert h(TaskArrived(4.0, "w2", prompt_tokens=900)) == [Queue("w2", "admission")]
    out = h(TaskArrived(4.0, "w3", prompt_tokens=900))  # 3rd in line: 3 s > 2.5 s
    assert len(out) == 1 and isinstance(out[0], Reject)
    assert "predicted queue wait 3.0 s exceeds the SLO" in out[0].reason
    assert out[0].retry_after_s == pytest.approx(1.0)
    assert core.task("w3") is None and core.stats().counters["shed"] == 1
    off = SchedulerCore(exact(max_running_calls=1))
    assert off.predicted_wait_s() == 0.0  # nothing waits


@pytest.mark.parametrize(("order", "paused"), [("cheapest", "b"), ("latest", "a")])
def test_growth_over_budget_pauses_the_cheapest_tool_waiter(order: str, paused: str) -> None:
    core = SchedulerCore(exact(pause_order=order))
    h = core.handle
    h(ReplicaJoined(0.0, "r0", 1_000, 4))
    h(TaskArrived(0.0, "a", prompt_tokens=290))
    h(CallFinished(1.0, "a", "r0", 290, 0, 10, 0.5))
    h(ToolStarted(1.0, "a", "slow", 100.0))  # 300 tokens, back at 101
    h(TaskArrived(1.0, "b", prompt_tokens=190))
    h(CallFinished(2.0, "b", "r0", 190, 0, 10, 0.5))
    h(ToolStarted(2.0, "b", "mid", 50.0))  # 200 tokens, back at 52
    h(TaskArrived(2.0, "c", prompt_tokens=400))
    out = h(CallFinished(3.0, "c", "r0", 400, 0, 200, 0.5))  # 300 + 200 + 600 > 1,000
    releases = [d for d in out if isinstance(d, ReleaseKV)]
    assert [(d.task_id, d.cause) for d in releases] == [(paused, ReleaseCause.OVER_BUDGET)]
    core.check_invariants()
