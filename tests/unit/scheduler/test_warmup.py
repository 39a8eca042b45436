"""Warm before return (scheduler/policies/warmup.py): scenarios, and the property
driver of ``test_scheduler_properties`` run with warm-ups on and pressure high (so
that tasks are released in their tools and warmed again)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from test_scheduler_properties import SETTINGS, Driver, configs

from scheduler import (
    CallFinished,
    Decision,
    ReleaseCause,
    ReleaseKV,
    Replace,
    ReplicaJoined,
    RunCall,
    SchedulerConfig,
    SchedulerCore,
    TaskArrived,
    ToolFinished,
    ToolStarted,
    WarmedUp,
    WarmUp,
)

warm_configs = st.builds(
    lambda cfg, lead, slots, busy: replace(
        cfg,
        warm_up=True,
        warm_up_lead=lead,
        warm_up_slots=slots,
        warm_up_max_running=busy,
        retention_ratio=0.0,
        admission_queue_limit=100,
        shed_slo_s=None,
        # no pause cap: under this pressure a call outgrowing its replica with no task
        # left to pause releases itself past the cap, warm-ups on or off (book.py,
        # CallFinished); the anti-thrash check would find that, not the warm-ups
        max_pauses=None,
    ),
    configs,
    st.sampled_from([2.0, 1e6]),
    st.integers(1, 2),
    st.sampled_from([0, 1, 8]),
)
# mostly arrivals, calls, tools and warm-up reports: tasks pile up, tools release
warm_actions = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 7, 8, 9, 11, 11]),
        st.integers(0, 1_000),
        st.integers(0, 1_000),
    ),
    min_size=20,
    max_size=150,
)


@SETTINGS
@given(cfg=warm_configs, acts=warm_actions)
def test_warm_ups_never_overcommit_yield_to_admissions_and_do_not_starve(
    cfg: SchedulerConfig, acts: list[tuple[int, int, int]]
) -> None:
    d = Driver(SchedulerCore(cfg))
    for kind, a, b in acts:
        d.step(kind, a, b)
    d.drain()  # every task finishes (no starvation)
    assert d.core.live_tasks == 0 and d.core.queued == 0
    for kv in d.core.stats().replicas.values():
        assert kv.reserved_tokens == 0


def _core(**kw: object) -> SchedulerCore:
    cfg = SchedulerConfig(
        warm_up=True,
        warm_up_lead=2.0,
        retention_ratio=0.0,
        max_running_calls=2,
        kv_headroom=0.0,
        reservation="usage",
        growth_prior_tokens=0,
        prefill_tokens_per_s=10_000.0,
    )
    return SchedulerCore(replace(cfg, **kw))  # type: ignore[arg-type]


def _of(ds: list[Decision], kind: type) -> list[Decision]:
    return [d for d in ds if isinstance(d, kind)]


def _paused(core: SchedulerCore) -> None:
    """r0 (20K tokens) holds a: a 10K-token history, released in a 10 s tool because b
    waited for the room; b then ran its call and holds 12K."""
    core.handle(ReplicaJoined(0.0, "r0", 20_000))
    assert _of(core.handle(TaskArrived(0.0, "a", "x", 3, prompt_tokens=8_000)), RunCall)
    core.handle(CallFinished(1.0, "a", "r0", 8_000, 0, 2_000, 1.0))
    assert not _of(core.handle(TaskArrived(1.5, "b", "x", 3, prompt_tokens=12_000)), RunCall)
    assert core.queued == 1
    ds = core.handle(ToolStarted(2.0, "a", "slow", expected_s=10.0))
    assert [(d.task_id, d.cause) for d in _of(ds, ReleaseKV)] == [("a", ReleaseCause.TOOL_WAIT)]
    assert _of(ds, RunCall)  # b is admitted in a's room


def test_warm_up_when_due_and_room_then_next_call_is_warm() -> None:
    core = _core()
    _paused(core)
    # b's call ends and b ends: room and idle compute; a is due 2 x 1 s before 12 s
    ds = core.handle(CallFinished(3.0, "b", "r0", 12_000, 0, 10, 1.0))
    assert not _of(ds, WarmUp)  # not due yet (and no room)
    from scheduler import TaskFinished

    core.handle(TaskFinished(4.0, "b"))
    assert not _of(core.handle(WarmedUp(9.0, "zz", "r0")), WarmUp)  # not due at 9 s
    ds = core.handle(WarmedUp(10.0, "zz", "r0"))  # any event at 10 s: a is due
    assert _of(ds, WarmUp) == [WarmUp("a", "r0", 10_000)]
    v = core.task("a")
    assert v is not None and v.kv_held and v.replica_id == "r0"
    core.handle(WarmedUp(11.0, "a", "r0"))
    runs = _of(core.handle(ToolFinished(12.0, "a")), RunCall)
    assert runs == [RunCall("a", "r0", cold=False)]
    assert core.stats().counters["warm_up"] == 1
    core.check_invariants()


def test_a_driver_that_ignores_warm_ups_runs_the_next_call_cold_there() -> None:
    core = _core()
    _paused(core)
    core.handle(CallFinished(3.0, "b", "r0", 12_000, 0, 10, 1.0))
    from scheduler import TaskFinished

    core.handle(TaskFinished(4.0, "b"))
    assert _of(core.handle(WarmedUp(10.0, "zz", "r0")), WarmUp)
    assert _of(core.handle(ToolFinished(12.0, "a")), RunCall) == [RunCall("a", "r0", cold=True)]
    core.handle(WarmedUp(12.5, "a", "r0"))  # late: ignored
    core.check_invariants()


def test_a_waiting_admission_takes_the_room_back_and_no_second_warm_up() -> None:
    core = _core()
    _paused(core)
    core.handle(CallFinished(3.0, "b", "r0", 12_000, 0, 10, 1.0))
    from scheduler import TaskFinished

    core.handle(TaskFinished(4.0, "b"))
    assert _of(core.handle(WarmedUp(10.0, "zz", "r0")), WarmUp)
    ds = core.handle(TaskArrived(10.5, "c", "x", 3, prompt_tokens=15_000))
    assert [(d.task_id, d.cause) for d in _of(ds, ReleaseKV)] == [
        ("a", ReleaseCause.WARM_UP_CANCELLED)
    ]
    assert [d.task_id for d in _of(ds, RunCall)] == ["c"]
    core.handle(CallFinished(11.0, "c", "r0", 15_000, 0, 10, 0.5))
    core.handle(TaskFinished(11.1, "c"))
    assert not _of(core.handle(WarmedUp(11.2, "zz", "r0")), WarmUp)  # one per tool wait
    assert _of(core.handle(ToolFinished(12.0, "a")), RunCall) == [RunCall("a", "r0", cold=True)]
    assert core.stats().counters["warm_up_cancelled"] == 1


def test_warm_up_only_on_an_idle_enough_replica_with_a_free_slot_and_only_when_on() -> None:
    busy = {"warm_up_max_running": 1}  # r1 may take a warm-up beside one running call
    for kw, warmed in (
        (busy, True),
        ({}, False),  # idle replicas only
        ({**busy, "max_running_calls": 1}, False),  # no free slot
        ({**busy, "warm_up": False}, False),
    ):
        core = _core(**kw)
        _paused(core)  # r0 has no room for a (b holds 12K of 20K)
        core.handle(ReplicaJoined(2.5, "r1", 100_000))
        core.handle(TaskArrived(2.6, "d", "y", 3, prompt_tokens=1_000))  # runs on r1
        v = core.task("d")
        assert v is not None and v.replica_id == "r1" and v.state.value == "running"
        ds = core.handle(WarmedUp(10.0, "zz", "r0"))  # any event at 10 s: a is due
        assert bool(_of(ds, WarmUp)) is warmed, kw
        if warmed:
            assert _of(ds, WarmUp) == [WarmUp("a", "r1", 10_000)]
            assert [(d.from_replica, d.to_replica) for d in _of(ds, Replace)] == [("r0", "r1")]
