"""The real task driver through replica failures, no engine and no Ray cluster.

The real ``TaskDriver``, ``Dispatcher`` on the real scheduler core, SQLite
``Journal``, chat format (the tiny model's tokenizer), ``ReplicaHandle`` and local
sandbox backend; only the replica's actor is a stand-in (``fake_replica.FakeActor``)
that a test makes fail, hang or die, raising Ray's own exception types.

Covered: a call that failed is retried on its replica (and the task fails, saying
so, past the retry limit); a task whose replica died moves to another and replays
its history there; and the lost-replica race: a call in flight when its replica is
declared lost is abandoned, its late answer never applied, the task moved exactly
once, no tool run twice (also when the answer is already back, and when the call
waits to be retried on a replica that did not answer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_replica import KV, TOOL_RUNS, Brain, FakeActor, actor, agent, handle

from executor.dispatch import Dispatcher
from executor.fleet.registry import ReplicaRegistry
from executor.fleet_lifetime import EngineSessions
from executor.loop.chat_format import ChatFormat
from executor.loop.driver import Services, TaskDriver, run_driver
from executor.loop.journal import Journal
from executor.loop.machine import TaskMachine
from executor.result import CallStep, FailoverStep, Step, TaskResult, ToolStep
from executor.telemetry import Telemetry
from scheduler import MoveCause, SchedulerConfig, SchedulerCore
from tools.sandbox import Limits
from tools.sandbox.local import LocalBackend
from tools.web.policy import WebPolicy


@pytest.fixture(scope="module")
def chat() -> ChatFormat:
    from executor.models import resolve

    return ChatFormat.load(resolve("tiny"))


@pytest.fixture(autouse=True)
def _tool_runs() -> Iterator[None]:
    TOOL_RUNS.clear()
    yield
    TOOL_RUNS.clear()


def services(
    chat: ChatFormat,
    tmp_path: Path,
    replica_ids: list[str],
    *,
    config: SchedulerConfig | None = None,
    retry_after_s: float = 0.0,
    on_step: Callable[[str, Step], None] | None = None,
) -> Services:
    brain = Brain(chat)
    replicas = ReplicaRegistry()
    sessions = EngineSessions(replicas)
    dispatcher = Dispatcher(
        SchedulerCore(config or SchedulerConfig()),
        retry_after_s=retry_after_s,
        on_release=sessions.release,
    )
    for rid in replica_ids:
        replicas.add(handle(rid, brain))
        dispatcher.replica_joined(rid, KV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "NO ISOLATION": as meant here
        sandboxes = LocalBackend(Limits(disk_bytes=None))
    return Services(
        model="tiny",
        dispatcher=dispatcher,
        replicas=replicas,
        chat=chat,
        journal=Journal(tmp_path / "journal.sqlite"),
        telemetry=Telemetry("memory"),
        sandboxes=sandboxes,
        web=WebPolicy(),
        on_step=on_step,
    )


def fake(s: Services, replica_id: str) -> FakeActor:
    return actor(s.replicas.get(replica_id))


async def drive(s: Services, task_id: str = "t1") -> TaskResult:
    return await run_driver(TaskDriver(s, agent(), "look two keys up", task_id))


def calls(result: TaskResult) -> list[CallStep]:
    return [st for st in result.steps if isinstance(st, CallStep)]


def failovers(result: TaskResult) -> list[FailoverStep]:
    return [st for st in result.steps if isinstance(st, FailoverStep)]


def moves(s: Services, task_id: str) -> list[Any]:
    return [
        r
        for r in s.dispatcher.stats.replacements
        if r.task_id == task_id and r.cause is MoveCause.REPLICA_DIED
    ]


def assert_done_once(s: Services, result: TaskResult, task_id: str = "t1") -> None:
    """Succeeded; one answered call per step (none applied twice); each tool once; the
    journal holds what the result says, and replays into the same steps (a resume)."""
    assert result.status == "succeeded", result.error
    assert result.output == "saw 2"
    assert [c.step for c in calls(result)] == sorted({c.step for c in calls(result)})
    assert len(calls(result)) == 3
    tools = [st for st in result.steps if isinstance(st, ToolStep)]
    assert [(st.tool, st.ok) for st in tools] == [("lookup", True)] * 2
    assert [k for t, k in TOOL_RUNS if t == task_id] == ["k0", "k1"]
    record = s.journal.get(task_id)
    assert record.status == "succeeded" and record.output == result.output
    replayed = TaskMachine.replay(agent(), task_id, record.prompt_ids, record.payloads)
    unmark = {"replayed": False}  # (a replayed tool step says so)
    assert [st.model_copy(update=unmark) for st in replayed.steps] == [
        st.model_copy(update=unmark) for st in result.steps
    ]
    for view in s.dispatcher.core.replicas():
        assert view.kv_reserved_tokens == 0, view  # the task's KV given back
    view = s.dispatcher.core.task(task_id)
    assert view is None or view.state.value == "finished"  # (the core forgets ended tasks)


# -- a failed call is retried ---------------------------------------------------------


def test_a_call_that_failed_is_retried_on_its_replica(chat: ChatFormat, tmp_path: Path) -> None:
    s = services(chat, tmp_path, ["r0"])
    fake(s, "r0").fail_next(1)  # the first call: Ray's ActorUnavailableError
    result = asyncio.run(drive(s))
    assert_done_once(s, result)
    outcomes = [a.outcome for a in fake(s, "r0").attempts]
    assert outcomes == ["unavailable", "answered", "answered", "answered"]
    assert failovers(result) == [] and moves(s, "t1") == []
    # the retry sent the same prompt again, as a new request (ids are per attempt)
    first, retry = fake(s, "r0").attempts[:2]
    assert first.request.input_ids == retry.request.input_ids
    assert first.request.rid != retry.request.rid


def test_a_call_that_keeps_failing_fails_the_task_past_the_retry_limit(
    chat: ChatFormat, tmp_path: Path
) -> None:
    s = services(chat, tmp_path, ["r0"], config=SchedulerConfig(max_call_retries=2))
    fake(s, "r0").fail_next(3)
    result = asyncio.run(drive(s))
    assert result.status == "failed" and result.error is not None
    assert result.error.endswith("call failed 3 times on r0: ActorUnavailableError")
    assert len(fake(s, "r0").attempts) == 3  # the first try and two retries, no more
    assert TOOL_RUNS == []
    assert s.journal.get("t1").status == "failed"
    view = s.dispatcher.core.replica("r0")
    assert view is not None and view.kv_reserved_tokens == 0


# -- a task moves when its replica dies ------------------------------------------------


def kill_after_first_call(
    s: Services, command: Callable[[FakeActor], None]
) -> tuple[Services, list[str]]:
    """The services, but running ``command`` on the replica that served the task's
    first call once that call is journaled; the list gets that replica's id."""
    hit: list[str] = []

    def on_step(task_id: str, step: Step) -> None:
        if isinstance(step, CallStep) and not hit:
            hit.append(step.replica_id)
            command(fake(s, step.replica_id))

    return dataclasses.replace(s, on_step=on_step), hit


def other(s: Services, replica_id: str) -> str:
    (rid,) = [r for r in s.replicas.ids() if r != replica_id]
    return rid


def test_a_task_moves_to_another_replica_when_its_replica_dies(
    chat: ChatFormat, tmp_path: Path
) -> None:
    s = services(chat, tmp_path, ["r0", "r1"])
    s, hit = kill_after_first_call(s, FakeActor.die)
    result = asyncio.run(drive(s))
    assert_done_once(s, result)
    dead = hit[0]
    alive = other(s, dead)
    (failover,) = failovers(result)
    assert failover.replica_id == dead and failover.reason == "ActorDiedError"
    assert [c.replica_id for c in calls(result)] == [dead, alive, alive]
    assert len(moves(s, "t1")) == 1
    # the call that died is replayed whole on the new replica (a cold prefill)
    (died,) = [a for a in fake(s, dead).attempts if a.outcome == "died"]
    moved = fake(s, alive).attempts[0]
    assert moved.request.input_ids == died.request.input_ids
    view = s.dispatcher.core.replica(dead)
    assert view is not None and view.state.value == "dead"


def test_a_task_fails_saying_why_when_its_last_replica_dies(
    chat: ChatFormat, tmp_path: Path
) -> None:
    s = services(chat, tmp_path, ["r0"])
    s, _ = kill_after_first_call(s, FakeActor.die)
    result = asyncio.run(drive(s))
    assert result.status == "failed" and result.error is not None
    assert "t1" in result.error and "r0" in result.error, result.error
    assert [k for _, k in TOOL_RUNS] == ["k0"]  # its first tool ran, once
    assert s.journal.get("t1").status == "failed"


# -- the lost-replica race -------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


def test_a_call_in_flight_when_its_replica_is_declared_lost_moves_once(
    chat: ChatFormat, tmp_path: Path
) -> None:
    """The replica hangs under the task's second call; the health monitor declares it
    dead while the call is in flight. The call is abandoned, the task moves once, and
    the hung replica's late answer (it does answer, later) is never applied."""
    s = services(chat, tmp_path, ["r0", "r1"])
    s, hit = kill_after_first_call(s, FakeActor.hang)

    async def go() -> TaskResult:
        task = asyncio.ensure_future(drive(s))
        await until(lambda: bool(hit) and len(fake(s, hit[0]).attempts) == 2)
        assert s.dispatcher.replica_died(hit[0], "no health answer in 5 s, 2 times in a row")
        result = await task
        fake(s, hit[0]).unhang()  # the late answer comes now
        await until(lambda: all(j.done() for j in fake(s, hit[0]).jobs))
        await asyncio.sleep(0.05)
        return result

    result = asyncio.run(go())
    dead = hit[0]
    assert [a.outcome for a in fake(s, dead).attempts] == ["answered", "answered"]  # late
    assert_done_once(s, result)
    (failover,) = failovers(result)
    assert failover.reason == "no health answer in 5 s, 2 times in a row"
    assert [c.replica_id for c in calls(result)] == [dead, other(s, dead), other(s, dead)]
    assert len(moves(s, "t1")) == 1


def test_a_call_waiting_to_retry_when_its_replica_is_declared_lost_moves_instead(
    chat: ChatFormat, tmp_path: Path
) -> None:
    """The replica did not answer the task's second call (unreachable: a retry is due
    there after ``retry_after_s``); it is declared dead meanwhile: the task moves at
    once, once, and no retry reaches the dead replica."""
    s = services(chat, tmp_path, ["r0", "r1"], retry_after_s=30.0)
    s, hit = kill_after_first_call(s, FakeActor.fail_next)

    async def go() -> TaskResult:
        task = asyncio.ensure_future(drive(s))
        await until(lambda: bool(hit) and len(fake(s, hit[0]).attempts) == 2)
        await asyncio.sleep(0.05)  # the driver now waits to retry there
        assert s.dispatcher.replica_died(hit[0], "node lost")
        async with asyncio.timeout(10):  # (not the 30 s retry wait)
            return await task

    result = asyncio.run(go())
    dead = hit[0]
    assert [a.outcome for a in fake(s, dead).attempts] == ["answered", "unavailable"]
    assert_done_once(s, result)
    (failover,) = failovers(result)
    assert (failover.replica_id, failover.reason) == (dead, "node lost")
    assert [c.replica_id for c in calls(result)] == [dead, other(s, dead), other(s, dead)]
    assert len(moves(s, "t1")) == 1


def test_an_answer_that_arrives_as_its_replica_is_declared_lost_is_not_applied(
    chat: ChatFormat, tmp_path: Path
) -> None:
    """The tightest race: the replica's answer has come back, and its loss is declared
    before the driver wakes to read it. The loss wins: the task moves once, the answer
    is dropped."""
    s = services(chat, tmp_path, ["r0", "r1"])

    def lose_while_answering(f: FakeActor) -> None:
        f.on_answer = lambda _: s.dispatcher.replica_died(f.replica_id, "lost")

    s, hit = kill_after_first_call(s, lose_while_answering)
    result = asyncio.run(drive(s))
    dead = hit[0]
    assert [a.outcome for a in fake(s, dead).attempts] == ["answered", "answered"]
    assert_done_once(s, result)
    assert [c.replica_id for c in calls(result)] == [dead, other(s, dead), other(s, dead)]
    assert [f.replica_id for f in failovers(result)] == [dead]
    assert len(moves(s, "t1")) == 1


def test_two_tasks_on_a_dying_replica_each_move_once_and_the_death_counts_once(
    chat: ChatFormat, tmp_path: Path
) -> None:
    """Two tasks' calls are in flight on one replica when it dies: each call fails
    with the death and reports it; the core hears of it once, each task moves once
    (to a replica that joined meanwhile), no tool runs twice."""
    s = services(chat, tmp_path, ["r0"], config=SchedulerConfig(max_running_calls=4))
    deaths: list[bool] = []
    report = s.dispatcher.replica_died

    def counted(*args: Any, **kw: Any) -> bool:
        deaths.append(report(*args, **kw))
        return deaths[-1]

    s.dispatcher.replica_died = counted  # type: ignore[method-assign]

    async def go() -> tuple[TaskResult, TaskResult]:
        r0 = fake(s, "r0")
        r0.hang()
        a = asyncio.ensure_future(drive(s, "a"))
        b = asyncio.ensure_future(drive(s, "b"))
        await until(lambda: len(r0.attempts) == 2)  # both first calls in flight on r0
        s.replicas.add(handle("r1", r0.brain))
        s.dispatcher.replica_joined("r1", KV)
        r0.die()
        return await a, await b

    result_a, result_b = asyncio.run(go())
    assert deaths.count(True) == 1 and len(deaths) >= 1
    for task_id, result in (("a", result_a), ("b", result_b)):
        assert_done_once(s, result, task_id)
        assert [f.replica_id for f in failovers(result)] == ["r0"]
        assert [c.replica_id for c in calls(result)] == ["r1"] * 3
        assert len(moves(s, task_id)) == 1
    assert [a.outcome for a in fake(s, "r0").attempts] == ["died", "died"]
