"""Failover on real engines (tiny model): replicas are killed, paused and drained under
running tasks. Every task that may migrate finishes, every tool runs exactly once
(counted through side effects), the failover is in the result, the journal and the
trace, and a task that may not migrate fails with a clear error naming the dead replica
while the tasks on other replicas go on undisturbed.

Each test adds replicas of its own to the session's pool, so the session's r0 and r1
stay up (they are used as the survivors)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from agent_tools import GATE, Runner, gated, marking_agent, tiny_agent, wait
from chaos_tools import core_state, engine_pids, replica_state, running_on, signal_all, wait_until

from executor.cli.main import main as cli_main
from executor.fleet.health import HealthConfig
from executor.loop.journal import Journal
from executor.result import TaskResult
from scheduler import ReplicaState, SchedulerConfig

pytestmark = pytest.mark.engine
FINISHED = ("succeeded", "step_limit")  # answered, or spent its steps: the random model's choice


@pytest.fixture
def gate() -> Iterator[None]:
    GATE.reset()
    yield
    GATE.release.set()  # never leave a tool (or a test's executor) hanging


def tool_runs(counter: Path) -> int:
    return len(counter.read_text().split())


def assert_moved(result: TaskResult, dead: list[str]) -> None:
    """The task finished after moving off ``dead`` (in order), its calls there done."""
    assert result.status in FINISHED, result.error
    assert [f.replica_id for f in result.failovers] == dead
    assert result.calls[0].replica_id == dead[0]
    assert result.calls[-1].replica_id not in dead


def test_actor_killed_during_tool_waits(
    pool: Any, tmp_path: Path, counter: Path, gate: None
) -> None:
    """ray.kill during the tool waits: the migrating task goes on on a survivor; with
    migration disabled the task fails clearly; a task on another replica is untouched."""
    victim = pool.add(1)[0]
    migrating = Runner(pool, tmp_path / "a.db", replica_ids=[victim], telemetry="memory")
    pinned = Runner(
        pool, tmp_path / "b.db", replica_ids=[victim], scheduler=SchedulerConfig(max_migrations=0)
    )
    try:
        agent = tiny_agent(gated, max_steps=3)
        a = migrating.loop.submit(migrating.ex.run(agent, "Record a, then answer."))
        b = pinned.loop.submit(pinned.ex.run(agent, "Record b, then answer."))
        for _ in range(2):  # both tasks' first calls ran on the victim; their tools now run
            assert GATE.inside.acquire(timeout=120), "a task never reached its tool"
        migrating.loop.run(migrating.ex.join("r1"), timeout=30)
        pinned.loop.run(pinned.ex.join("r0"), timeout=30)
        # a task of the pinned executor placed on r0 (the most free), running during the kill
        c = pinned.loop.submit(pinned.ex.run(tiny_agent(wait, max_steps=3), "Wait for a."))
        ray.kill(pool[victim].actor)
        wait_until(lambda: replica_state(pinned, victim) is ReplicaState.DEAD, 30, "the death")
        GATE.release.set()
        moved, failed, other = a.result(timeout=300), b.result(timeout=300), c.result(300)
        spans = migrating.ex.telemetry.finished_spans()
        warmer = migrating.ex.warmer
        warmed = warmer.warmed if warmer is not None else 0
    finally:
        GATE.release.set()
        migrating.close()
        pinned.close()
        pool.remove(victim)

    assert_moved(moved, [victim])
    assert {c.replica_id for c in moved.calls[1:]} == {"r1"}
    # the history the dead replica held was prefilled again on the survivor: by its first
    # call there, or ahead of it by a warm-up during the tool wait (warm before return)
    first, replay = moved.calls[0], moved.calls[1]
    history = first.prompt_tokens + first.completion_tokens
    assert replay.cached_tokens < history or warmed >= 1, (replay, warmed)
    # the trace and the journal say what happened
    failovers = [e for s in spans for e in s.events if e.name == "failover"]
    assert failovers and failovers[0].attributes["replica"] == victim
    with Journal(tmp_path / "a.db") as journal:
        kinds = [s.kind for s in journal.get(moved.task_id).steps]
    assert kinds[:5] == ["call", "tool_start", "tool_result", "observation", "failover"]

    assert failed.status == "failed"
    assert f"replica {victim} died" in (failed.error or "")
    assert "migration limit" in (failed.error or "")
    assert other.status in FINISHED and not other.failovers
    assert {c.replica_id for c in other.calls} == {"r0"}
    # every tool call ran exactly once, the kill notwithstanding (one line per run)
    assert len(failed.tools) == 1
    assert tool_runs(counter) == len(moved.tools) + len(failed.tools)


def test_engine_killed_mid_call_and_the_answer_is_the_undisturbed_one(
    pool: Any, tmp_path: Path, counter: Path, gate: None
) -> None:
    """SIGKILL of the engine process while the task's call is in it (paused there, so
    the call is surely in flight): the replica dies, the call is retried on a survivor
    from the journaled history, and at temperature 0 the task answers what an
    undisturbed run of the same task answers."""
    agent = tiny_agent(gated, max_steps=3)  # temperature 0 (the default)
    goal = "Record a, then answer."
    GATE.release.set()
    reference = Runner(pool, tmp_path / "ref.db", replica_ids=["r0"])
    try:
        undisturbed = reference.run(agent, goal)
    finally:
        reference.close()
    GATE.reset()

    victim = pool.add(1)[0]
    pids = engine_pids(pool, victim)
    # a slow health check: the engine's death, not its pause, must end the call
    runner = Runner(
        pool,
        tmp_path / "a.db",
        replica_ids=[victim],
        telemetry="memory",
        health=HealthConfig(timeout_s=300),
    )
    try:
        future = runner.loop.submit(runner.ex.run(agent, goal, task_id="moved"))
        assert GATE.inside.acquire(timeout=120), "the task never reached its tool"
        signal_all(pids, signal.SIGSTOP)
        runner.loop.run(runner.ex.join("r1"), timeout=30)
        GATE.release.set()  # the next call goes to the victim (sticky) and waits there
        wait_until(lambda: running_on(runner, "moved", victim), 60, "the call on the victim")
        time.sleep(0.5)
        signal_all(pids, signal.SIGKILL)
        moved = future.result(timeout=300)
        spans = runner.ex.telemetry.finished_spans()
    finally:
        GATE.release.set()
        signal_all(pids, signal.SIGKILL)
        runner.close()
        pool.remove(victim)

    assert_moved(moved, [victim])
    assert len(moved.calls) == len(undisturbed.calls)  # no call lost, none made twice
    assert tool_runs(counter) == len(undisturbed.tools) + len(moved.tools)
    lost = [e for s in spans for e in s.events if e.name == "replica_lost"]
    assert lost and lost[0].attributes["replica"] == victim
    # temperature 0: the same replies, the same answer (a cold prefill of the history
    # on another replica computes the same logits as the warm one on this CPU engine)
    assert [c.reply for c in moved.calls] == [c.reply for c in undisturbed.calls]
    assert moved.output == undisturbed.output


def test_hung_replica_found_by_health_check_during_a_replay_and_dead_replicas_replaced(
    pool: Any, tmp_path: Path, counter: Path, gate: None
) -> None:
    """Two failures of one task: its replica's actor is killed during its tool wait (found
    by the health check, no call in flight); its replay then hangs on a paused engine,
    which the health check declares dead; the task moves again and finishes. Both dead
    replicas are replaced by new ones whose capacity returns to the scheduler."""
    first, second = pool.add(2)
    hung = engine_pids(pool, second)
    health = HealthConfig(interval_s=0.5, timeout_s=3.0, failures=1)
    runner = Runner(pool, tmp_path / "a.db", replica_ids=[first], health=health, heal=True)
    replacements: list[str] = []
    try:
        future = runner.loop.submit(
            runner.ex.run(tiny_agent(gated, max_steps=3), "Record a.", task_id="t")
        )
        assert GATE.inside.acquire(timeout=120), "the task never reached its tool"
        runner.loop.run(runner.ex.join(second), timeout=30)
        ray.kill(pool[first].actor)
        wait_until(lambda: replica_state(runner, first) is ReplicaState.DEAD, 30, "the death")
        signal_all(hung, signal.SIGSTOP)
        GATE.release.set()  # the task is placed on the (paused) second replica
        wait_until(lambda: running_on(runner, "t", second), 60, "the replay on the hung replica")
        runner.loop.run(runner.ex.join("r1"), timeout=30)
        result = future.result(timeout=300)
        events = runner.ex.fleet.events

        def healed() -> bool:
            replacements[:] = [e.split()[1] for e in events if " replaced " in e]
            return len(replacements) == 2

        wait_until(healed, 400, "two replacement replicas")
        views = {rid: replica_state(runner, rid) for rid in (first, second, *replacements)}
        capacities = [
            core_state(runner, lambda core, r=r: core.replica(r).kv_capacity_tokens)
            for r in replacements
        ]
    finally:
        GATE.release.set()
        signal_all(hung, signal.SIGKILL)
        runner.close()
        for rid in (first, second, *replacements):
            pool.remove(rid)

    assert_moved(result, [first, second])
    assert "no health answer in 3 s" in result.failovers[1].reason
    assert all(c.replica_id != second for c in result.calls)  # its call there never ended
    assert tool_runs(counter) == len(result.tools)
    assert views[first] is views[second] is ReplicaState.DEAD
    assert [views[r] for r in replacements] == [ReplicaState.ACTIVE] * 2
    assert capacities == [pool["r1"].info["max_total_num_tokens"]] * 2  # read from the engine


def test_all_replicas_but_one_killed_while_several_tasks_run(
    pool: Any, tmp_path: Path, counter: Path
) -> None:
    """Six tasks over three replicas; two replicas die (an actor killed, an engine
    killed) mid-run. Every task finishes on the survivor, queueing where its KV does not
    fit, and every tool ran exactly once: 6 tasks x 5 tool runs."""
    first, second = pool.add(2)
    runner = Runner(pool, tmp_path / "a.db", replica_ids=[first, second, "r1"])
    try:
        agent = marking_agent()
        futures = [runner.loop.submit(runner.ex.run(agent, f"Mark record {i}.")) for i in range(6)]
        wait_until(lambda: tool_runs(counter) >= 8, 180, "the tasks under way")
        ray.kill(pool[first].actor)
        signal_all(engine_pids(pool, second), signal.SIGKILL)
        results = [f.result(timeout=600) for f in futures]
    finally:
        runner.close()
        pool.remove(first)
        pool.remove(second)

    assert [r.status for r in results] == ["step_limit"] * 6, [r.error for r in results]
    assert [len(r.tools) for r in results] == [5] * 6
    assert tool_runs(counter) == 30
    moved = {f.replica_id for r in results for f in r.failovers}
    assert moved == {first, second}
    assert {r.calls[-1].replica_id for r in results} == {"r1"}


def test_drain_from_the_cli_moves_tasks_and_stops_the_replica(
    pool: Any, tmp_path: Path, counter: Path, capsys: pytest.CaptureFixture[str], gate: None
) -> None:
    """Both tasks are held in their first tool (on the victim) while the CLI drains it:
    they move at that tool wait, so none can finish on the victim before the drain
    command is claimed (the race a fast tool left open)."""
    victim = pool.add(1)[0]
    journal = tmp_path / "a.db"
    runner = Runner(pool, journal, replica_ids=[victim])
    agent = tiny_agent(gated, reset_tool_choice=False, answer_on_repeat=False, max_steps=6)
    try:
        futures = [runner.loop.submit(runner.ex.run(agent, f"Mark record {i}.")) for i in range(2)]
        for _ in range(2):
            assert GATE.inside.acquire(timeout=120), "a task never reached its tool"
        with pytest.raises(Exception, match="last one serving"):
            runner.loop.run(runner.ex.drain(victim), timeout=30)
        runner.loop.run(runner.ex.join("r0"), timeout=30)
        assert cli_main(["drain", victim, "--journal", str(journal)]) == 0
        assert f"replica {victim} drained and stopped" in capsys.readouterr().err
        assert victim not in runner.ex.pool.ids  # type: ignore[union-attr]
        GATE.release.set()
        results = [f.result(timeout=300) for f in futures]
        # nobody serves "nope": the CLI says so instead of waiting forever
        args = ["drain", "nope", "--journal", str(journal), "--claim-timeout", "3"]
        assert cli_main(args) == 2
        assert "no running executor" in capsys.readouterr().err
    finally:
        runner.close()
        pool.remove(victim)

    for r in results:  # moved at a tool wait, not failed: no failover, no tool lost
        assert r.status == "step_limit" and len(r.tools) == 5 and not r.failovers
        assert r.calls[0].replica_id == victim and r.calls[-1].replica_id == "r0"
    assert tool_runs(counter) == 10
