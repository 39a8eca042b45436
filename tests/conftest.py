"""Shared fixtures: one pool of real SGLang replicas (tiny model) for the whole session.

An engine takes 15-50 s to start on this CPU, so every test that needs one shares
these; tests that need to kill a replica add their own to the same pool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Two replicas fit the 2-core CI machine with room for one more (kill tests).
TEST_REPLICA_CPUS = 0.5


@pytest.fixture(scope="session")
def replica_config():  # -> ReplicaConfig
    from executor.fleet.config import ReplicaConfig

    return ReplicaConfig(
        model="tiny", max_total_tokens=8192, num_cpus=TEST_REPLICA_CPUS, cpu_threads=1
    )


@pytest.fixture(scope="session")
def pool(replica_config) -> Iterator[object]:
    from executor.fleet.pool import ReplicaPool

    with ReplicaPool(replicas=2, config=replica_config) as p:
        yield p


@pytest.fixture
def counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file the runtime tests' tools append a line to per run: tool effects, counted."""
    from agent_tools import COUNTER_ENV

    path = tmp_path / "counter"
    path.touch()
    monkeypatch.setenv(COUNTER_ENV, str(path))
    return path


#: fixtures that start SGLang engines (directly or through the ones they use)
ENGINE_FIXTURES = frozenset({"pool"})
#: fixtures that start (or need) the private Docker daemon
DOCKER_FIXTURES = frozenset({"docker_host", "docker_backend"})


def _uses_docker(item: pytest.Item) -> bool:
    """A test of the Docker daemon: it asks for its fixtures, or it is the ``docker``
    case of the sandbox tests' ``backend`` (every isolating backend in turn)."""
    if DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend") == "docker"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses an engine fixture is an engine test, and one that uses the
    Docker daemon a docker test, whether or not it says so: the fast command
    (``-m "not engine and not docker and not slow"``) starts no engine and no daemon."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)
        if _uses_docker(item):
            item.add_marker(pytest.mark.docker)
