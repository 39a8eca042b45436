"""The driver process of tests/engine/test_node_death.py: an Executor on the head of a local
multi-node cluster (the test process keeps the cluster and kills its nodes; it may
hold a Ray connection of its own, to the session's embedded cluster, so the driver
is a process of its own, as a production driver is).

It walks through phases; at each it writes ``PHASE.json`` into the folder and waits
for the test's ``PHASE.go``:

- ``kill``: r0 (pinned to node_a) holds two tasks in tool waits (the gated tool) and
  two in calls (its engine paused, so the calls surely are in flight); r1 (node_b)
  has joined and serves nothing yet. The test kills node_a.
- ``finished``: every task ended; the test restarts node_a once the replacement of
  r0 is placed (on node_b, the only node with CPUs left).
- ``done``: a replica pinned to the restarted node_a serves a task; the test checks
  where every replica ran, then lets the driver stop.

    python tests/support/node_death_driver.py RAY_ADDRESS FOLDER
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_tools import COUNTER_ENV, GATE, gated, marking_agent, tiny_agent

from executor import Executor, TaskResult
from executor.fleet.config import ReplicaConfig
from executor.fleet.pool import ReplicaPool
from executor.loop.journal import JournalError
from scheduler import ReplicaState, TaskState

HELD = ["held-0", "held-1"]  # in their tool (the gate) when the node dies
CALLING = ["calling-0", "calling-1"]  # in a call on the node when it dies


class Phases:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def reach(self, name: str, **data: Any) -> float:
        """Report the phase to the test, wait for its go; the time of the go."""
        tmp = self.folder / f"{name}.json.tmp"
        tmp.write_text(json.dumps(data, default=str))
        tmp.rename(self.folder / f"{name}.json")
        go = self.folder / f"{name}.go"
        while not go.exists():
            await asyncio.sleep(0.05)
        return time.monotonic()


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


def summary(r: TaskResult) -> dict[str, Any]:
    return {
        "task_id": r.task_id,
        "status": r.status,
        "error": r.error,
        "tools": len(r.tools),
        "interrupted": sum(t.interrupted for t in r.tools),
        "calls": [c.replica_id for c in r.calls],
        "failovers": [[f.replica_id, f.reason] for f in r.failovers],
    }


async def main(address: str, folder: Path) -> None:
    phases = Phases(folder)
    base = ReplicaConfig(model="tiny", max_total_tokens=8192, num_cpus=0.5, cpu_threads=1)

    def pinned(node: str) -> ReplicaConfig:
        return base.model_copy(update={"resources": {node: 0.5}})

    # the pool's own shape (what a replacement gets) needs only CPUs: the head has none
    pool = await asyncio.to_thread(ReplicaPool(replicas=0, config=base, address=address).start)
    t0 = time.monotonic()
    a, b = await asyncio.to_thread(pool.add_each, [pinned("node_a"), pinned("node_b")])
    engines_s = time.monotonic() - t0
    ex = Executor("tiny", pool=pool, journal=folder / "journal.db", heal=True, replica_ids=[a])
    await ex.start()
    core = ex.dispatcher.core

    def steps(task_id: str) -> list[str]:
        try:
            return [s.kind for s in ex.journal.get(task_id).steps]
        except JournalError:  # not journaled yet
            return []

    def running_on(task_id: str, replica_id: str) -> bool:
        view = core.task(task_id)
        if view is None or view.state is not TaskState.RUNNING:
            return False
        return view.replica_id == replica_id

    try:
        handles = [ex.submit(tiny_agent(gated, max_steps=3), "Record a.", task_id=t) for t in HELD]
        handles += [ex.submit(marking_agent(), "Mark record.", task_id=t) for t in CALLING]
        for _ in HELD:
            assert await asyncio.to_thread(GATE.inside.acquire, True, 180), "no tool started"
        await until(lambda: all("tool_result" in steps(t) for t in CALLING), 180, "the tools")
        engine = pool[a].info["engine_pids"]
        for pid in engine:  # from here on, a call placed on r0 stays in flight there
            os.kill(pid, signal.SIGSTOP)
        await ex.join(b)
        await until(lambda: all(running_on(t, a) for t in CALLING), 60, "the calls on r0")
        killed = await phases.reach(
            "kill",
            victim=a,
            survivor=b,
            engines_s=engines_s,
            actors={a: pool[a].info["pid"], b: pool[b].info["pid"]},
            engine_pids={a: engine, b: pool[b].info["engine_pids"]},
        )
        GATE.release.set()  # the held tasks' tools return; their next calls find r0 gone
        replaced = asyncio.ensure_future(
            until(lambda: any(" replaced " in e for e in ex.fleet.events), 400, "replacement")
        )
        await until(lambda: core.replica(a).state is ReplicaState.DEAD, 120, "r0's death")  # type: ignore[union-attr]
        detected_s = time.monotonic() - killed
        results = await asyncio.gather(*(h.result() for h in handles))
        recovered_s = time.monotonic() - killed
        counter_lines = len(Path(os.environ[COUNTER_ENV]).read_text().split())
        await phases.reach(
            "finished",
            detected_s=detected_s,
            recovered_s=recovered_s,
            results=[summary(r) for r in results],
            tool_runs=counter_lines,
            events=list(ex.fleet.events),
        )

        def replacement() -> str | None:
            done = [e.split()[1] for e in ex.fleet.events if " replaced " in e]
            return done[0] if done else None

        # node_a is back: a replica pinned to it starts there (next to the replacement
        # of r0, which may still be starting on node_b)
        t0 = time.monotonic()
        (c,) = await asyncio.to_thread(pool.add, 1, config=pinned("node_a"))
        rejoined_s = time.monotonic() - t0
        await replaced
        replaced_s = time.monotonic() - killed
        r2 = replacement()
        assert r2 is not None
        # a task of its own on the new replica (an executor over the same pool)
        on_c = Executor("tiny", pool=pool, journal=folder / "c.db", heal=False, replica_ids=[c])
        async with on_c:
            extra = await on_c.run(tiny_agent(max_steps=2), "Mark once.", task_id="after")
        await phases.reach(
            "done",
            replacement=r2,
            replacement_actor=pool[r2].info["pid"],
            replacement_state=core.replica(r2).state.name,  # type: ignore[union-attr]
            replaced_s=replaced_s,
            new=c,
            new_actor=pool[c].info["pid"],
            new_replica_s=rejoined_s,
            extra=summary(extra),
            tool_runs=len(Path(os.environ[COUNTER_ENV]).read_text().split()),
            events=list(ex.fleet.events),
        )
    finally:
        GATE.release.set()
        await ex.close()
        await asyncio.to_thread(pool.shutdown)


if __name__ == "__main__":
    ray_address, out = sys.argv[1], Path(sys.argv[2])
    os.environ[COUNTER_ENV] = str(out / "counter")
    (out / "counter").touch()
    asyncio.run(main(ray_address, out))
