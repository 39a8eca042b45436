"""The real fleet through replica deaths, no engine and no Ray cluster.

The real ``Fleet`` (its death watch, healing and health monitor), ``Dispatcher`` on
the real scheduler core, ``TaskDriver``, SQLite ``Journal`` and ``ReplicaHandle``;
the replicas' actors are stand-ins (``fake_replica.FakeActor``) and the pool that
starts them is ``fake_replica.FakePool``.

Covered: a dead replica is discarded once and replaced, and its task waits for the
replacement and moves there; a replica that hangs under a call is declared dead by
the health monitor, the call abandoned, the task moved once, the late answer never
applied; a replacement that does not come up fails the waiting task, saying why.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_replica import TOOL_RUNS, Brain, FakeActor, FakePool, actor, agent

from executor.dispatch import Dispatcher
from executor.fleet.health import HealthConfig
from executor.fleet.registry import ReplicaRegistry
from executor.fleet_lifetime import EngineSessions, Fleet
from executor.loop.chat_format import ChatFormat
from executor.loop.driver import Services, TaskDriver, run_driver
from executor.loop.journal import Journal
from executor.result import CallStep, FailoverStep, Step, TaskResult
from executor.telemetry import Telemetry
from scheduler import MoveCause, SchedulerCore
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


class Setup:
    """A fleet of ``replicas`` fake replicas, built as the runtime builds it: the
    registry and engine sessions first, then the dispatcher, then the fleet."""

    def __init__(
        self,
        chat: ChatFormat,
        tmp_path: Path,
        replicas: int,
        *,
        heal: bool,
        health: HealthConfig | None = None,
    ) -> None:
        self.pool = FakePool(Brain(chat))
        self.registry = ReplicaRegistry()
        sessions = EngineSessions(self.registry)
        self.dispatcher = Dispatcher(
            SchedulerCore(), replace_dead=heal, on_release=sessions.release
        )
        self.fleet = Fleet(
            self.pool,  # type: ignore[arg-type]
            self.dispatcher,
            heal=heal,
            health=health,
            control=None,
            replicas=self.registry,
            sessions=sessions,
        )
        for rid in self.pool.start(replicas):
            self.fleet.join(rid)
        self.first_call: list[str] = []  # the replica that served the task's first call
        self.first_actor: list[FakeActor] = []  # (kept: a discarded one leaves the pool)
        self.on_first_call: Callable[[FakeActor], None] = lambda _: None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "NO ISOLATION": as meant here
            sandboxes = LocalBackend(Limits(disk_bytes=None))
        self.services = Services(
            model="tiny",
            dispatcher=self.dispatcher,
            replicas=self.registry,
            chat=chat,
            journal=Journal(tmp_path / "journal.sqlite"),
            telemetry=Telemetry("memory"),
            sandboxes=sandboxes,
            web=WebPolicy(),
            on_step=self._on_step,
        )

    def _on_step(self, task_id: str, step: Step) -> None:
        if isinstance(step, CallStep) and not self.first_call:
            self.first_call.append(step.replica_id)
            self.first_actor.append(actor(self.pool[step.replica_id]))
            self.on_first_call(self.first_actor[0])

    async def run(self, after: Callable[[], object] | None = None) -> TaskResult:
        """Start the fleet, run one task, then ``after()`` (before the fleet closes)."""
        self.fleet.start()
        try:
            driver = TaskDriver(self.services, agent(), "look two keys up", "t1")
            result = await asyncio.wait_for(run_driver(driver), 30)
            if after is not None:
                await asyncio.wait_for(asyncio.ensure_future(after()), 30)  # type: ignore[arg-type]
            for _ in range(20):
                await asyncio.sleep(0)  # the fleet's own jobs settle (discard, join)
            return result
        finally:
            await self.fleet.close()

    def moves(self) -> int:
        return sum(
            1
            for r in self.dispatcher.stats.replacements
            if r.task_id == "t1" and r.cause is MoveCause.REPLICA_DIED
        )


def calls(result: TaskResult) -> list[str]:
    return [st.replica_id for st in result.steps if isinstance(st, CallStep)]


def failovers(result: TaskResult) -> list[FailoverStep]:
    return [st for st in result.steps if isinstance(st, FailoverStep)]


def test_a_dead_replica_is_discarded_once_and_replaced_and_its_task_moves_there(
    chat: ChatFormat, tmp_path: Path
) -> None:
    setup = Setup(chat, tmp_path, 1, heal=True)
    setup.on_first_call = FakeActor.die  # r0 dies after the task's first call
    result = asyncio.run(setup.run())
    assert result.status == "succeeded" and result.output == "saw 2", result.error
    assert calls(result) == ["r0", "r1", "r1"]  # the task waited for r1, then ran there
    (failover,) = failovers(result)
    assert (failover.replica_id, failover.reason) == ("r0", "ActorDiedError")
    assert setup.moves() == 1
    assert [k for _, k in TOOL_RUNS] == ["k0", "k1"]
    assert setup.pool.discarded == ["r0"]  # the dead actor, killed once
    assert setup.registry.ids() == ["r1"]
    assert setup.fleet.events == [
        "replica r0 died (ActorDiedError); its tasks are placed again",
        "replica r1 replaced r0 and serves",
    ]
    assert setup.services.journal.get("t1").status == "succeeded"


def test_the_health_monitor_declares_a_hung_replica_lost_under_a_call_the_task_moves_once(
    chat: ChatFormat, tmp_path: Path
) -> None:
    """The task's replica hangs under its second call; the health monitor's probe
    gets no answer and declares it dead; the call in flight is abandoned and the task
    moves to the other replica, once. When the hung replica answers at last, its
    answer is not applied and no tool runs again."""
    health = HealthConfig(interval_s=0.05, timeout_s=0.05, failures=1, retry_after_s=0)
    setup = Setup(chat, tmp_path, 2, heal=False, health=health)
    setup.on_first_call = FakeActor.hang

    async def late_answer() -> None:
        hung = setup.first_actor[0]
        assert len(hung.attempts) == 2 and not hung.jobs[1].done()  # still in the engine
        hung.unhang()
        await asyncio.gather(*hung.jobs, return_exceptions=True)

    result = asyncio.run(setup.run(after=late_answer))
    dead = setup.first_call[0]
    (alive,) = [r for r in ("r0", "r1") if r != dead]
    assert result.status == "succeeded" and result.output == "saw 2", result.error
    assert calls(result) == [dead, alive, alive]
    (failover,) = failovers(result)
    assert failover.replica_id == dead and "no health answer" in failover.reason
    assert setup.moves() == 1
    assert [k for _, k in TOOL_RUNS] == ["k0", "k1"]
    assert setup.pool.discarded == [dead]
    assert setup.registry.ids() == [alive]
    hung = setup.first_actor[0]
    assert [a.outcome for a in hung.attempts] == ["answered", "answered"]  # the late one
    record = setup.services.journal.get("t1")
    assert record.status == "succeeded" and record.output == result.output


def test_a_replacement_that_does_not_come_up_fails_the_waiting_task_saying_why(
    chat: ChatFormat, tmp_path: Path
) -> None:
    setup = Setup(chat, tmp_path, 1, heal=True)
    setup.pool.start_fails = True

    setup.on_first_call = FakeActor.die
    result = asyncio.run(setup.run())
    assert result.status == "failed" and result.error is not None
    assert "out of memory" in result.error, result.error
    assert setup.pool.discarded == ["r0"]
    assert "replica r0 could not be replaced" in setup.fleet.events[-1]
    assert setup.services.journal.get("t1").status == "failed"
    assert [k for _, k in TOOL_RUNS] == ["k0"]
