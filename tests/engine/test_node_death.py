"""A whole worker node dies on a real multi-node Ray cluster (a head and two worker
nodes, each its own ``ray start`` with its own raylet, started by
``infra.local_cluster``): its raylet, its agents, the replica actor on it
and that actor's SGLang engine processes, all SIGKILLed at once while tasks are in
calls and in tool waits there. Every task finishes on the other node, none is lost,
no tool runs twice; the dead replica's replacement starts on the surviving node;
the node then comes back and takes a new replica.

The driver (an Executor on the head) is a process of its own,
``tests/support/node_death_driver.py``: this process may already be the driver of the
session's embedded cluster, and Ray allows one cluster per driver."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from chaos_tools import wait_until

from infra.local_cluster import ENV, LocalCluster

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]
FINISHED = ("succeeded", "step_limit")  # answered, or spent its steps: the random model's choice


class Driver:
    def __init__(self, address: str, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "driver.log"
        env = dict(os.environ, **ENV)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "support"), str(ROOT)])
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "tests/support/node_death_driver.py"),
                    address,
                    str(folder),
                ],
                env=env,
                start_new_session=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def reached(self, phase: str, timeout: float) -> dict[str, Any]:
        path = self.folder / f"{phase}.json"
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"the driver ended before {phase!r}:\n{self.log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {phase!r} after {timeout:g} s:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.05)
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def go(self, phase: str) -> None:
        (self.folder / f"{phase}.go").touch()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def replica_actors(cluster: LocalCluster, node: str) -> list[int]:
    """The replica actors running on the node (their process title names the class)."""
    found = []
    for proc in cluster.processes(node):
        with contextlib.suppress(psutil.Error):
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::ReplicaActor"):
                found.append(proc.pid)
    return found


def test_worker_node_killed_under_running_tasks(tmp_path: Path) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    cluster = LocalCluster(workers=2, head_cpus=0, worker_cpus=1)
    cluster.start()
    timings["cluster_start_s"] = cluster.start_s or 0.0
    driver = Driver(cluster.address, tmp_path)
    try:
        kill = driver.reached("kill", 400)
        victim, survivor = kill["victim"], kill["survivor"]
        timings["engines_start_s"] = kill["engines_s"]
        node_a, node_b = cluster.nodes["node_a"].pgid, cluster.nodes["node_b"].pgid
        assert session(kill["actors"][victim]) == node_a  # pinned by its node resource
        assert session(kill["actors"][survivor]) == node_b
        on_a = {p.pid for p in cluster.processes("node_a")}
        doomed = {kill["actors"][victim], *kill["engine_pids"][victim]}
        assert doomed <= on_a  # the engine's processes belong to the node's session
        t0 = time.monotonic()
        killed = cluster.kill_node("node_a")  # raises unless every one of them is gone
        timings["kill_s"] = time.monotonic() - t0
        assert on_a <= set(killed)
        assert not [p for p in doomed if psutil.pid_exists(p)]
        assert all(psutil.pid_exists(p) for p in kill["engine_pids"][survivor])
        driver.go("kill")

        # r0's replacement is placed on node_b, the only node with CPUs left
        wait_until(lambda: len(replica_actors(cluster, "node_b")) >= 2, 180, "the replacement")
        finished = driver.reached("finished", 300)
        t0 = time.monotonic()
        cluster.restart_node("node_a")
        timings["restart_node_s"] = time.monotonic() - t0
        driver.go("finished")
        done = driver.reached("done", 400)
        new_node_a = cluster.nodes["node_a"].pgid
        placed = {
            "replacement": session(done["replacement_actor"]),
            "new": session(done["new_actor"]),
        }
        driver.go("done")
        driver.proc.wait(timeout=120)
    finally:
        driver.stop()
        cluster.stop()
    timings.update(
        detected_s=finished["detected_s"],
        recovered_s=finished["recovered_s"],
        replaced_s=done["replaced_s"],
        new_replica_s=done["new_replica_s"],
        test_s=time.monotonic() - started,
    )
    print("node death timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))

    results = finished["results"]
    failed = [(r["task_id"], r["error"]) for r in results if r["status"] not in FINISHED]
    assert not failed, failed
    for r in results:  # each moved once, off the dead node's replica, and finished
        assert [f[0] for f in r["failovers"]] == [victim], r
        assert r["calls"][0] == victim and r["calls"][-1] != victim, r
        assert r["interrupted"] == 0, r
    assert [r["tools"] for r in results if r["task_id"].startswith("calling")] == [5, 5]
    # every tool ran exactly once (one line per run), the node's death notwithstanding
    assert finished["tool_runs"] == sum(r["tools"] for r in results)
    assert any(f"replica {victim} died" in e for e in finished["events"])

    replacement, new = done["replacement"], done["new"]
    assert f"replica {replacement} replaced {victim} and serves" in done["events"]
    assert done["replacement_state"] == "ACTIVE"
    assert placed == {"replacement": node_b, "new": new_node_a}
    assert new_node_a != node_a
    extra = done["extra"]  # the rejoined node's replica serves
    assert extra["status"] in FINISHED and set(extra["calls"]) == {new}, extra
    assert done["tool_runs"] == finished["tool_runs"] + extra["tools"]
