"""The local multi-node cluster helper (``infra.local_cluster``, its command
line ``infra/ray_cluster.py``) and the custom resources a replica may ask for: bad
input refused at once with a clear message; a real cluster of three nodes started,
a node killed and restarted, everything stopped (no engines: seconds, not minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from executor.fleet.config import ReplicaConfig
from infra.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[3]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.ray_cluster", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "AEX_RAY_CLUSTER"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start", "--workers", "0"], "workers must be between 1 and 26, got 0"),
        (["start", "--workers", "27"], "workers must be between 1 and 26, got 27"),
        (["start", "--worker-cpus", "-1"], "CPU and GPU counts must be >= 0"),
        (["start", "--worker-cpus", "0"], "worker nodes with no CPU and no GPU"),
        (["start", "--workers", "two"], "invalid int value: 'two'"),
        (["stop"], "which cluster? pass --dir or set AEX_RAY_CLUSTER"),
        (["status", "--dir", "/nonexistent/aexc"], "no local cluster at /nonexistent/aexc"),
    ],
)
def test_cli_refuses_bad_input_before_starting_anything(args: list[str], message: str) -> None:
    before = set(Path("/tmp").glob("aexc-*"))
    done = cli(*args)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert done.stdout == ""  # no export line: nothing started
    assert set(Path("/tmp").glob("aexc-*")) == before


def test_library_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="workers must be between 1 and 26"):
        LocalCluster(workers=0)
    with pytest.raises(ValueError, match=">= 0"):
        LocalCluster(head_cpus=-1)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"node_a": -0.5}, "resource 'node_a' must be a number >= 0, got -0.5"),
        ({"node_a": float("nan")}, "must be a number >= 0"),
        ({"node_a": float("inf")}, "must be a number >= 0"),
        ({"node_a": 1.5}, "amounts above 1 must be whole"),
        ({"CPU": 1}, "'CPU' is not a custom resource: use num_cpus / num_gpus"),
        ({"GPU": 1}, "is not a custom resource"),
        ({"": 1}, "a resource needs a name"),
    ],
)
def test_replica_resources_are_validated(resources: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ReplicaConfig(resources=resources)


def test_replica_resources_accepted() -> None:
    assert ReplicaConfig(resources={"node_a": 0.5, "gpu_pool": 2}).resources == {
        "node_a": 0.5,
        "gpu_pool": 2.0,
    }
    assert ReplicaConfig().resources == {}


@pytest.mark.slow  # starts a local Ray cluster of three nodes (~15 s)
def test_cluster_of_three_nodes_kill_restart_stop() -> None:
    """Each node is a session of its own: killing one takes all of its processes and
    none of the others'; stop leaves no process and no directory behind."""
    cluster = LocalCluster(workers=2).start()
    root = cluster.root
    try:
        alive = {s.name for s in cluster.status() if s.alive}
        assert alive == {"head", "node_a", "node_b"}
        resources = {s.name: s.resources for s in cluster.status()}
        assert resources["node_a"]["node_a"] == 1 and "CPU" not in resources["head"]
        on_a = {p.pid for p in cluster.processes("node_a")}
        others = {p.pid for n in ("head", "node_b") for p in cluster.processes(n)}
        assert on_a and not on_a & others
        assert set(cluster.kill_node("node_a")) >= on_a
        assert not [p for p in on_a if psutil.pid_exists(p)]
        assert all(psutil.pid_exists(p) for p in others)
        cluster.restart_node("node_a")
        assert {s.name for s in cluster.status() if s.alive} >= {"head", "node_a", "node_b"}
        everything = {p.pid for n in cluster.nodes for p in cluster.processes(n)}
    finally:
        cluster.stop()
    assert not root.exists()
    assert not [p for p in everything if psutil.pid_exists(p)]
