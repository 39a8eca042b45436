"""Failover on real engines: the replica serving two tasks is killed while their tools
run; with migration allowed the task replays its history on a survivor and finishes,
its tool run once; with migration disabled (limit 0) the task fails with a clear error
naming the dead replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from agent_tools import COUNTER_ENV, GATE, Runner, gated, tiny_agent

from scheduler import SchedulerConfig

pytestmark = pytest.mark.engine


def test_replica_killed_during_a_tool_wait(
    pool: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "counter"
    counter.touch()
    monkeypatch.setenv(COUNTER_ENV, str(counter))
    victim = pool.add(1)[0]  # a replica of its own: the session's replicas stay up
    GATE.reset()
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
        for runner in (migrating, pinned):  # a survivor joins both executors
            runner.loop.run(runner.ex.join("r1"), timeout=30)
        ray.kill(pool[victim].actor)
        GATE.release.set()
        moved, failed = a.result(timeout=300), b.result(timeout=300)
        spans = migrating.ex.telemetry.finished_spans()
    finally:
        GATE.release.set()
        migrating.close()
        pinned.close()
        pool.remove(victim)

    # the task went on (answered, or spent its steps: the random model's choice) ...
    assert moved.status in ("succeeded", "step_limit"), moved.error
    calls = moved.calls
    assert calls[0].replica_id == victim and {c.replica_id for c in calls[1:]} == {"r1"}
    # ... and its first call on the survivor prefilled the history the dead replica held
    first, replay = calls[0], calls[1]
    assert replay.cached_tokens < first.prompt_tokens + first.completion_tokens
    failovers = [e for s in spans for e in s.events if e.name == "failover"]
    assert failovers and failovers[0].attributes["replica"] == victim

    assert failed.status == "failed"
    assert f"replica {victim} died" in (failed.error or "")
    assert "migration limit" in (failed.error or "")
    # every tool call ran exactly once, the kill notwithstanding (one line per run)
    assert len(failed.tools) == 1
    assert len(counter.read_text().split()) == len(moved.tools) + len(failed.tools)
