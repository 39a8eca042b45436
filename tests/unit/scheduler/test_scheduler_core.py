"""Unit tests of the scheduler core: lifecycles, policies, typed errors."""

from __future__ import annotations

import pytest

from scheduler import (
    CallFailed,
    CallFinished,
    Fail,
    InvalidEvent,
    MoveCause,
    NextCall,
    Queue,
    Reject,
    ReleaseKV,
    Replace,
    ReplacementFailed,
    ReplicaDied,
    ReplicaDrained,
    ReplicaDraining,
    ReplicaJoined,
    ReplicaState,
    RunCall,
    SchedulerConfig,
    SchedulerCore,
    TaskArrived,
    TaskCancelled,
    TaskFinished,
    TaskState,
    ToolFinished,
    ToolStarted,
)
from scheduler.config import v1
from scheduler.decisions import ReleaseCause as RC
from scheduler.policies import EarliestDeadlineFirst, LeastAttainedService
from scheduler.states import TASK_TRANSITIONS, TaskTrigger, next_task_state


def core(**kw: object) -> SchedulerCore:
    """A core with v1 admission (peak reservations): these tests spell out its KV
    accounting; tests/unit/scheduler/test_admission_v2.py has the usage reservations'."""
    return SchedulerCore(v1(SchedulerConfig(**kw)))  # type: ignore[arg-type]


def finish(
    c: SchedulerCore,
    t: float,
    tid: str,
    rid: str,
    prompt: int = 1000,
    cached: int = 0,
    out: int = 50,
) -> list:
    return c.handle(CallFinished(t, tid, rid, prompt, cached, out, 0.5))


def test_task_lifecycle_sticky_and_decisions() -> None:
    c = core()
    assert c.handle(ReplicaJoined(0, "r0", 100_000)) == []
    assert c.handle(ReplicaJoined(0, "r1", 100_000)) == []
    d = c.handle(TaskArrived(1, "t", "agent", 3, 20_000))
    assert d == [RunCall("t", "r0", cold=True)]
    assert c.task("t").state is TaskState.RUNNING  # type: ignore[union-attr]
    assert finish(c, 2, "t", "r0") == []
    assert c.handle(ToolStarted(2, "t", "shell")) == []
    assert c.task("t").state is TaskState.TOOL  # type: ignore[union-attr]
    # sticky: the next call goes where the KV is, warm
    assert c.handle(ToolFinished(3, "t")) == [RunCall("t", "r0", cold=False)]
    finish(c, 4, "t", "r0", prompt=1500, cached=1050)
    assert c.handle(NextCall(4, "t")) == [RunCall("t", "r0", cold=False)]
    finish(c, 5, "t", "r0", prompt=2000, cached=1600)
    d = c.handle(TaskFinished(5, "t"))
    assert d == [ReleaseKV("t", "r0", 2050, RC.TASK_DONE)]
    assert c.task("t") is None and c.live_tasks == 0
    c.check_invariants()


def test_new_task_goes_to_most_free_replica_then_agent_prefix_breaks_ties() -> None:
    c = core()
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(ReplicaJoined(0, "r1", 100_000))
    assert c.handle(TaskArrived(1, "a", "coder", 2, 10_000))[0].replica_id == "r0"
    # r1 is now the most free
    assert c.handle(TaskArrived(1, "b", "writer", 2, 10_000))[0].replica_id == "r1"
    # equal room and load: the replica already holding the agent's prefix wins
    finish(c, 2, "a", "r0")
    finish(c, 2, "b", "r1")
    c.handle(ToolStarted(2, "a", "x"))
    c.handle(ToolStarted(2, "b", "x"))
    assert c.handle(TaskArrived(3, "c", "writer", 2, 10_000))[0].replica_id == "r1"


def test_admission_queue_then_reject_when_full_and_too_large() -> None:
    c = core(admission_queue_limit=1, kv_headroom=0.0)
    c.handle(ReplicaJoined(0, "r0", 10_000))
    assert c.handle(TaskArrived(1, "a", "", 2, 6_000))[0] == RunCall("a", "r0", cold=True)
    assert c.handle(TaskArrived(1, "b", "", 2, 6_000)) == [Queue("b", "admission")]
    d = c.handle(TaskArrived(1, "c", "", 2, 6_000))
    assert isinstance(d[0], Reject) and "queue full" in d[0].reason
    d = c.handle(TaskArrived(1, "big", "", 2, 20_000))
    assert isinstance(d[0], Reject) and "exceeds every replica" in d[0].reason
    # a finishing task frees room: the queued one is admitted in the same decision list
    finish(c, 2, "a", "r0")
    d = c.handle(TaskFinished(2, "a"))
    assert d == [ReleaseKV("a", "r0", 1050, RC.TASK_DONE), RunCall("b", "r0", cold=True)]
    c.check_invariants()


def test_compute_slots_queue_calls_and_finished_call_starts_next() -> None:
    c = core(max_running_calls=1)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(TaskArrived(1, "a", "", 2, 1_000))
    assert c.handle(TaskArrived(1, "b", "", 2, 1_000)) == [Queue("b", "replica", "r0")]
    # the finished call frees the slot: b starts in the decisions of a's CallFinished
    assert finish(c, 2, "a", "r0") == [RunCall("b", "r0", cold=True)]
    c.check_invariants()


def test_returning_task_runs_before_new_one() -> None:
    c = core(max_running_calls=1)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(TaskArrived(1, "old", "", 3, 1_000))
    finish(c, 2, "old", "r0")
    c.handle(ToolStarted(2, "old", "x"))
    c.handle(TaskArrived(2.5, "busy", "", 3, 1_000))  # takes the slot
    c.handle(TaskArrived(3, "new", "", 3, 1_000))
    c.handle(ToolFinished(4, "old"))
    assert finish(c, 5, "busy", "r0") == [RunCall("old", "r0", cold=False)]


@pytest.mark.parametrize(
    "ordering,first",
    [
        (LeastAttainedService(), "light"),
        (EarliestDeadlineFirst(), "heavy"),
    ],
)
def test_las_and_edf_order_returning_tasks(ordering: object, first: str) -> None:
    c = SchedulerCore(SchedulerConfig(max_running_calls=1), ordering=ordering)  # type: ignore[arg-type]
    c.handle(ReplicaJoined(0, "r0", 100_000))
    # heavy: older (earlier deadline), more service; light: younger, less service
    c.handle(TaskArrived(0, "heavy", "", 3, 1_000))
    c.handle(CallFinished(1, "heavy", "r0", 500, 0, 10, 5.0))
    c.handle(TaskArrived(1, "light", "", 3, 1_000))
    c.handle(CallFinished(1.1, "light", "r0", 500, 0, 10, 0.1))
    c.handle(ToolStarted(1.1, "heavy", "x"))
    c.handle(ToolStarted(1.1, "light", "x"))
    c.handle(TaskArrived(1.2, "blocker", "", 3, 1_000))
    c.handle(ToolFinished(1.3, "heavy"))
    c.handle(ToolFinished(1.3, "light"))
    d = c.handle(CallFinished(1.4, "blocker", "r0", 500, 0, 10, 0.1))
    assert d == [RunCall(first, "r0", cold=False)]


def test_starvation_bound_runs_the_oldest_ready_call_first() -> None:
    c = SchedulerCore(
        SchedulerConfig(max_running_calls=1, starvation_s=10.0), ordering=LeastAttainedService()
    )
    c.handle(ReplicaJoined(0, "r0", 1_000_000))
    for tid, service in [("starved", 9.0), ("x", 0.1), ("y", 0.1)]:
        c.handle(TaskArrived(0, tid, "", 99, 1_000))
        c.handle(CallFinished(0, tid, "r0", 100, 0, 1, service))
        c.handle(ToolStarted(0, tid, "t"))
    c.handle(ToolFinished(0, "x"))  # x runs
    c.handle(ToolFinished(0, "starved"))  # waits: more attained service
    t, runner, other = 0.0, "x", "y"
    c.handle(ToolFinished(0, other))
    seen = []
    for _ in range(8):  # x and y keep coming back with less service than 'starved'
        t += 3.0
        d = c.handle(CallFinished(t, runner, "r0", 100, 100, 1, 0.1))
        c.handle(ToolStarted(t, runner, "t"))
        c.handle(ToolFinished(t, runner))
        seen.append(d[0].task_id)
        if d[0].task_id == "starved":
            break
        runner, other = d[0].task_id, runner
    assert seen[-1] == "starved" and t <= 15.0


def test_release_under_pressure_when_wait_is_long_and_readmit() -> None:
    c = core(kv_headroom=0.0, prefill_tokens_per_s=10_000, retention_ratio=1.0)
    c.handle(ReplicaJoined(0, "r0", 10_000))
    c.handle(TaskArrived(0, "a", "", 3, 6_000))
    c.handle(TaskArrived(0, "b", "", 3, 6_000))  # queued: pressure
    finish(c, 1, "a", "r0", prompt=2_000, out=0)
    # a 10 s tool vs 0.2 s to re-prefill 2,000 tokens: release; b is admitted at once
    d = c.handle(ToolStarted(1, "a", "slow", expected_s=10.0))
    assert d == [
        ReleaseKV("a", "r0", 2_000, RC.TOOL_WAIT),
        RunCall("b", "r0", cold=True),
    ]
    # a comes back, finds no room: queued ahead of new arrivals
    assert c.handle(ToolFinished(11, "a")) == [Queue("a", "admission")]
    finish(c, 12, "b", "r0")
    d = c.handle(TaskFinished(12, "b"))
    assert d[-1] == RunCall("a", "r0", cold=True)
    c.check_invariants()


def test_keep_kv_without_pressure_and_for_short_tools() -> None:
    c = core(prefill_tokens_per_s=10_000, retention_ratio=1.0)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(TaskArrived(0, "a", "", 3, 6_000))
    finish(c, 1, "a", "r0", prompt=2_000)
    assert c.handle(ToolStarted(1, "a", "slow", expected_s=100.0)) == []  # no pressure
    assert c.task("a").kv_held  # type: ignore[union-attr]


def test_waiting_kv_cap_releases_latest_returning_under_pressure() -> None:
    c = core(kv_headroom=0.0, waiting_kv_cap=0.5, retention_ratio=1e9, work_conserving=False)
    c.handle(ReplicaJoined(0, "r0", 10_000))
    for tid in ("a", "b", "c"):
        c.handle(TaskArrived(0, tid, "", 3, 3_000))
    c.handle(TaskArrived(0, "q", "", 3, 3_000))  # queued: pressure
    finish(c, 1, "a", "r0")
    assert c.handle(ToolStarted(1, "a", "a", expected_s=50.0)) == []  # 3,000 <= 5,000 cap
    finish(c, 1, "b", "r0")
    d = c.handle(ToolStarted(1, "b", "b", expected_s=1.0))
    # 6,000 waiting > 5,000 cap: a (back last) goes; q takes its room
    assert d == [
        ReleaseKV("a", "r0", 1050, RC.WAITING_CAP),
        RunCall("q", "r0", cold=True),
    ]
    assert c.task("b").kv_held  # type: ignore[union-attr]
    c.check_invariants()


def test_history_growing_past_budget_releases_kv() -> None:
    c = core(kv_headroom=0.0)
    c.handle(ReplicaJoined(0, "r0", 10_000))
    c.handle(TaskArrived(0, "a", "", 3, 4_000))
    c.handle(TaskArrived(0, "b", "", 3, 4_000))
    finish(c, 1, "b", "r0", prompt=3_000)
    c.handle(ToolStarted(1, "b", "t"))
    d = finish(c, 2, "a", "r0", prompt=7_000, out=100)  # far past its expected peak
    assert d == [ReleaseKV("b", "r0", 3_050, RC.OVER_BUDGET)]
    c.check_invariants()


def test_failover_replaces_tasks_and_migration_limit_fails_cleanly() -> None:
    c = core(max_migrations=1)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(ReplicaJoined(0, "r1", 100_000))
    c.handle(TaskArrived(0, "run", "", 3, 10_000))  # r0
    c.handle(TaskArrived(0, "other", "", 3, 10_000))  # r1
    c.handle(TaskArrived(0, "tool", "", 3, 10_000))  # r0 (load tie-break)
    finish(c, 1, "tool", "r0")
    c.handle(ToolStarted(1, "tool", "t"))
    d = c.handle(ReplicaDied(2, "r0"))
    assert d == [
        Replace("run", "r0", "r1", MoveCause.REPLICA_DIED),
        RunCall("run", "r1", cold=True),
    ]
    # the tool-waiting task is placed again (cold) when its tool returns
    d = c.handle(ToolFinished(3, "tool"))
    assert d == [
        Replace("tool", "r0", "r1", MoveCause.REPLICA_DIED),
        RunCall("tool", "r1", cold=True),
    ]
    # second death for run and tool: limit 1 reached; a replacement is starting
    d = c.handle(ReplicaDied(4, "r1", replacing=True))
    fails = [x for x in d if isinstance(x, Fail)]
    assert sorted(f.task_id for f in fails) == ["run", "tool"]
    assert all("migration limit" in f.reason for f in fails)
    assert Queue("other", "admission") in d  # first death for other: waits for a replica
    assert c.live_tasks == 1
    c.check_invariants()


def test_migration_disabled_fails_at_first_death() -> None:
    c = core(max_migrations=0)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(ReplicaJoined(0, "r1", 100_000))
    c.handle(TaskArrived(0, "t", "", 3, 10_000))
    d = c.handle(ReplicaDied(1, "r0"))
    assert d == [
        Fail("t", "replica r0 died and the task reached its migration limit (0 migrations)")
    ]


def test_draining_replica_finishes_calls_moves_tasks_at_tool_waits_and_reports_drained() -> None:
    c = core()
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(ReplicaJoined(0, "r1", 100_000))
    c.handle(TaskArrived(0, "t", "", 3, 10_000))  # r0, its call running
    c.handle(TaskArrived(0, "w", "", 3, 10_000))  # r1
    c.handle(TaskArrived(0, "v", "", 3, 10_000))  # r0
    finish(c, 1, "v", "r0")
    c.handle(ToolStarted(1, "v", "x"))  # v waits on a tool on r0
    # draining: the tool-waiting task lets go of r0 at once; the running call stays
    assert c.handle(ReplicaDraining(1, "r0")) == [ReleaseKV("v", "r0", 1_050, RC.DRAINING)]
    assert c.handle(TaskArrived(1, "n", "", 3, 10_000))[0].replica_id == "r1"
    finish(c, 2, "t", "r0")  # the running call finished on r0 ...
    d = c.handle(ToolStarted(2, "t", "x"))  # ... and the task moves at its tool wait
    assert d == [ReleaseKV("t", "r0", 1_050, RC.DRAINING), ReplicaDrained("r0")]
    assert c.handle(ToolFinished(3, "t")) == [
        Replace("t", "r0", "r1", MoveCause.KV_RELEASED),
        RunCall("t", "r1", cold=True),
    ]
    assert c.handle(ToolFinished(3, "v"))[-1] == RunCall("v", "r1", cold=True)
    assert c.replica("r0").state is ReplicaState.DRAINING  # type: ignore[union-attr]
    c.check_invariants()
    c.handle(ReplicaDied(5, "r0"))
    c.handle(ReplicaJoined(6, "r0", 50_000))  # rejoin under the same id
    assert c.replica("r0").kv_capacity_tokens == 50_000  # type: ignore[union-attr]


def test_draining_replica_moves_a_task_whose_next_call_needs_no_tool() -> None:
    c = core()
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(ReplicaJoined(0, "r1", 100_000))
    c.handle(TaskArrived(0, "t", "", 3, 10_000))
    c.handle(ReplicaDraining(1, "r0"))
    finish(c, 2, "t", "r0")
    d = c.handle(NextCall(2, "t"))
    assert d[0] == ReleaseKV("t", "r0", 1_050, RC.DRAINING)
    assert d[-1] == RunCall("t", "r1", cold=True)
    assert ReplicaDrained("r0") in d


def test_call_failed_retries_then_fails() -> None:
    c = core(max_call_retries=1)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(TaskArrived(0, "t", "", 3, 10_000))
    assert c.handle(CallFailed(1, "t", "r0", "oom")) == [RunCall("t", "r0", cold=True)]
    d = c.handle(CallFailed(2, "t", "r0", "oom"))
    assert d[-1] == Fail("t", "call failed 2 times on r0: oom")


def test_cancel_frees_slot_and_kv() -> None:
    c = core(max_running_calls=1)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(TaskArrived(0, "a", "", 3, 10_000))
    c.handle(TaskArrived(0, "b", "", 3, 10_000))
    d = c.handle(TaskCancelled(1, "a"))
    assert d == [ReleaseKV("a", "r0", 0, RC.CANCELLED), RunCall("b", "r0", cold=True)]
    c.check_invariants()


def test_tool_moving_average() -> None:
    c = core(tool_ewma_alpha=0.5, default_tool_s=1.0)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    assert c.expected_tool_s("x") == 1.0
    c.handle(TaskArrived(0, "t", "", 9, 1_000))
    t = 0.0
    for dur in (4.0, 2.0):
        finish(c, t, "t", "r0")
        c.handle(ToolStarted(t, "t", "x"))
        t += dur
        c.handle(ToolFinished(t, "t"))
    assert c.expected_tool_s("x") == pytest.approx(3.0)


def _snapshot(c: SchedulerCore) -> tuple:
    return (
        c.now,
        c.queued,
        c.live_tasks,
        tuple(c.replicas()),
        tuple(c.task(t) for t in ("a", "b", "zz")),
    )


@pytest.mark.parametrize(
    "event",
    [
        CallFinished(5, "zz", "r0", 1, 0, 1, 0.1),  # unknown task
        CallFinished(5, "a", "r1", 1, 0, 1, 0.1),  # wrong replica
        CallFinished(5, "a", "r0", 10, 20, 1, 0.1),  # cached > prompt
        ToolFinished(5, "a"),  # a is running, not in a tool
        TaskFinished(5, "a"),
        NextCall(5, "b"),  # b is queued
        TaskArrived(5, "a", "", 1, 10),  # duplicate
        TaskArrived(5, "n", "", 0, 10),  # zero calls
        ReplicaJoined(5, "r0", 1000),  # already active
        ReplicaJoined(5, "rx", 0),  # no capacity
        ReplicaDraining(5, "nope"),
        ReplicaDied(5, "nope"),
        TaskArrived(0.5, "late", "", 1, 10),  # time goes backwards
    ],
)
def test_invalid_events_raise_typed_error_and_change_nothing(event: object) -> None:
    c = core(max_running_calls=1)
    c.handle(ReplicaJoined(0, "r0", 100_000))
    c.handle(ReplicaJoined(0, "r1", 100_000))
    c.handle(TaskArrived(1, "a", "", 3, 10_000))
    c.handle(ReplicaDraining(1, "r1"))
    c.handle(TaskArrived(1, "b", "", 3, 10_000))
    before = _snapshot(c)
    with pytest.raises(InvalidEvent):
        c.handle(event)  # type: ignore[arg-type]
    assert _snapshot(c) == before
    c.check_invariants()


def test_transition_table_rejects_undeclared_transitions() -> None:
    assert next_task_state(TaskState.READY, TaskTrigger.START_CALL) is TaskState.RUNNING
    with pytest.raises(InvalidEvent):
        next_task_state(TaskState.DONE, TaskTrigger.PLACE)
    with pytest.raises(InvalidEvent):
        next_task_state(TaskState.TOOL, TaskTrigger.FINISH_CALL)
    # terminal states have no way out
    for (state, _), _ in TASK_TRANSITIONS.items():
        assert state not in (TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED)


def test_not_an_event() -> None:
    with pytest.raises(InvalidEvent):
        core().handle("hello")  # type: ignore[arg-type]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SchedulerConfig(kv_headroom=1.5)
    with pytest.raises(ValueError):
        SchedulerConfig(max_running_calls=0)


# -- the last replica's death: wait for a replacement, or fail -------------------------


def _one_task_running(c: SchedulerCore) -> None:
    c.handle(ReplicaJoined(0, "r0", 10_000))
    assert c.handle(TaskArrived(0, "t", "a", 3, 1_000)) == [RunCall("t", "r0", cold=True)]


def test_last_replica_death_fails_its_tasks_when_none_replaces_it() -> None:
    c = core()
    _one_task_running(c)
    c.handle(TaskArrived(0, "q", "a", 3, 9_000))  # queued: no room beside t
    d = c.handle(ReplicaDied(1, "r0"))
    assert sorted(f.task_id for f in d if isinstance(f, Fail)) == ["q", "t"]
    assert all(
        "replica r0 died and no live replica is left" in f.reason for f in d if isinstance(f, Fail)
    )
    late = c.handle(TaskArrived(2, "late", "a", 3, 100))
    assert isinstance(late[0], Reject) and "no live replica" in late[0].reason
    c.check_invariants()


def test_last_replica_death_with_a_replacement_starting_keeps_its_tasks_waiting() -> None:
    c = core()
    _one_task_running(c)
    d = c.handle(ReplicaDied(1, "r0", replacing=True))
    assert d == [Queue("t", "admission")]
    d = c.handle(ReplicaJoined(5, "r1", 10_000, replaces="r0"))
    assert d == [Replace("t", "r0", "r1", MoveCause.REPLICA_DIED), RunCall("t", "r1", cold=True)]
    c.check_invariants()


def test_a_failed_replacement_fails_the_waiting_tasks() -> None:
    c = core()
    _one_task_running(c)
    c.handle(ReplicaDied(1, "r0", replacing=True))
    d = c.handle(ReplacementFailed(3, "r0", "out of memory"))
    assert d == [Fail("t", "replica r0 died and its replacement failed: out of memory")]
    with pytest.raises(InvalidEvent, match="unknown replica"):
        c.handle(ReplacementFailed(4, "nope"))
    c.check_invariants()
