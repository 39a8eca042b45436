"""Fixtures for the tool and sandbox tests, loaded by ``pytest_plugins = ["sandbox_fixtures"]``
in tests/unit/tools/ (conftest.py belongs to another module).

Docker: the tests use the engine at DOCKER_HOST when it answers (infra/test.sh
starts the private daemon and exports it); otherwise they start the private
daemon themselves with infra/dockerd.sh and stop it at the end. They skip, with
the reason, only where that daemon cannot start.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_helpers import SUITE_LIMITS, LoopbackServer, run

from tools.sandbox import SandboxBackend, SandboxUnavailable, create_backend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    host = os.environ.get("DOCKER_HOST")
    if host and _answers(host):
        yield host
        return
    env = dict(os.environ, AGENT_EXECUTOR_SKIP_IMAGE="1")
    was_running = (
        subprocess.run(
            ["bash", str(ROOT / "infra/dockerd.sh"), "status"], capture_output=True, env=env
        ).returncode
        == 0
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "infra/dockerd.sh"), "start"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line.startswith("export DOCKER_HOST="):
        reason = (proc.stderr.strip() or "no output")[-600:]
        print(f"\n[sandbox tests] the private Docker daemon cannot start: {reason}")
        pytest.skip(f"the private Docker daemon cannot start here: {reason}")
    host = line.split("=", 1)[1]
    os.environ["DOCKER_HOST"] = host
    try:
        yield host
    finally:
        if not was_running:
            subprocess.run(["bash", str(ROOT / "infra/dockerd.sh"), "stop"], env=env, timeout=60)


def _answers(host: str) -> bool:
    try:
        import docker

        client = docker.DockerClient(base_url=host, version="auto", timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bwrap_backend() -> Iterator[SandboxBackend]:
    try:
        backend = create_backend("bwrap", limits=SUITE_LIMITS)
    except SandboxUnavailable as exc:
        pytest.skip(f"bwrap backend unavailable: {exc}")
    yield backend
    run(backend.close())


@pytest.fixture(scope="session")
def docker_backend(docker_host: str) -> Iterator[SandboxBackend]:
    try:
        backend = create_backend("docker", limits=SUITE_LIMITS, base_url=docker_host, pool_size=2)
    except SandboxUnavailable as exc:
        pytest.skip(f"docker backend unavailable: {exc}")
    yield backend
    run(backend.close())


@pytest.fixture(params=["bwrap", "docker"])
def backend(request: pytest.FixtureRequest) -> SandboxBackend:
    """Every isolating backend in turn."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()
