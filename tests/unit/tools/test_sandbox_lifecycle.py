"""Sandbox lifecycle: one per task, workspace kept across calls and removed at the end
(also on failure), exec semantics, the docker pool and sweep, the local backend."""

from __future__ import annotations

import subprocess
import warnings

import pytest
from sandbox_helpers import SUITE_LIMITS, run

from tools.sandbox import (
    DEFAULT_BACKEND,
    SandboxBackend,
    SandboxError,
    create_backend,
)
from tools.sandbox.capture import CappedBuffer

pytest_plugins = ["sandbox_fixtures"]  # fixtures: backend, docker_host, loopback_server...


def test_workspace_lives_as_long_as_the_task(backend: SandboxBackend) -> None:
    async def go():  # noqa: ANN202
        sb = await backend.open("life")
        first = await sb.exec(["/bin/sh", "-c", "echo kept > f.txt"])
        second = await sb.exec(["cat", "f.txt"])
        path = sb.workspace
        assert path.is_dir()
        await sb.close()
        await sb.close()  # idempotent
        with pytest.raises(SandboxError, match="closed"):
            await sb.exec(["true"])
        return first, second, path

    first, second, path = run(go())
    assert first.exit_code == 0 and second.stdout == b"kept\n"
    assert not path.exists() and not path.parent.exists()


def test_workspace_is_removed_when_the_task_fails(backend: SandboxBackend) -> None:
    seen = {}

    async def go() -> None:
        async with await backend.open("fails") as sb:
            seen["path"] = sb.workspace
            await sb.exec(["/bin/sh", "-c", "mkdir -p a/b && chmod 500 a && echo x > f"])
            raise RuntimeError("the task failed")

    with pytest.raises(RuntimeError, match="the task failed"):
        run(go())
    assert not seen["path"].exists()


def test_exec_arguments(backend: SandboxBackend) -> None:
    async def go():  # noqa: ANN202
        async with await backend.open("args") as sb:
            env = await sb.exec(["/bin/sh", "-c", 'echo "$GREETING $HOME"'], env={"GREETING": "hi"})
            stdin = await sb.exec(
                ["python3", "-c", "import sys; print(sys.stdin.read()[::-1])"], stdin="abc"
            )
            big_stdin = await sb.exec(["wc", "-c"], stdin=b"y" * 1_000_000)
            signal = await sb.exec(["/bin/sh", "-c", "kill -TERM $$"])
            with pytest.raises(SandboxError):
                await sb.exec([])
            return env, stdin, big_stdin, signal

    env, stdin, big_stdin, sig = run(go())
    assert env.stdout == b"hi /workspace\n"
    assert stdin.stdout == b"cba\n"
    assert big_stdin.stdout.strip() == b"1000000"
    assert sig.exit_code == 128 + 15 and not sig.ok and not sig.oom and not sig.timed_out


def test_capped_buffer_keeps_head_and_tail() -> None:
    buf = CappedBuffer(100)
    for i in range(1000):
        buf.write(b"%04d" % i)
    value = buf.getvalue()
    assert buf.truncated and buf.total == 4000
    assert value.startswith(b"00000001") and value.endswith(b"0999")
    assert b"[... 3900 bytes truncated ...]" in value
    small = CappedBuffer(100)
    small.write(b"a" * 60)
    small.write(b"b" * 40)
    assert not small.truncated and small.getvalue() == b"a" * 60 + b"b" * 40


def test_default_backend_is_bwrap_and_unknown_names_fail() -> None:
    assert DEFAULT_BACKEND == "bwrap"
    with pytest.raises(SandboxError, match="unknown sandbox backend 'nope'"):
        create_backend("nope")


def test_local_backend_says_it_is_not_isolated() -> None:
    with pytest.warns(RuntimeWarning, match="NO ISOLATION"):
        backend = create_backend("local", limits=SUITE_LIMITS)
    assert backend.isolated is False

    async def go():  # noqa: ANN202
        async with await backend.open("dev") as sb:
            res = await sb.exec(["/bin/sh", "-c", "echo $HOME; sleep 30"], timeout=0.5)
            return sb, res

    sb, res = run(go())
    assert sb.isolated is False and res.extra["isolated"] is False
    assert res.timed_out and res.stdout.decode().strip() == str(sb.workspace)
    assert not sb.workspace.exists()


def test_bwrap_limits_come_from_cgroups_as_root(bwrap_backend: SandboxBackend) -> None:
    import os

    from tools.sandbox import cgroup

    mode = bwrap_backend.limit_mode  # type: ignore[attr-defined]
    assert mode == ("cgroup-v1" if os.geteuid() == 0 and cgroup.available() else "rlimit")


def test_docker_pool_hands_out_started_containers(docker_backend: SandboxBackend) -> None:
    pool = docker_backend.pool  # type: ignore[attr-defined]
    assert pool.wait_full(60)
    client = docker_backend.client  # type: ignore[attr-defined]

    async def go():  # noqa: ANN202
        sb = await docker_backend.open("pooled")
        taken = len(pool)
        container = client.containers.get(sb.container_id)
        attrs = container.attrs["HostConfig"]
        res = await sb.exec(["/bin/sh", "-c", "id -u; cat /proc/self/status | grep CapEff"])
        await sb.close()
        return sb, taken, container, attrs, res

    sb, taken, container, hc, res = run(go())
    assert taken == pool.size - 1
    assert container.status == "running" and container.labels["agent-executor.sandbox"] == "1"
    assert hc["NetworkMode"] == "none" and hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert hc["Memory"] == SUITE_LIMITS.memory_bytes and hc["PidsLimit"] == SUITE_LIMITS.pids
    assert hc["NanoCpus"] == int(SUITE_LIMITS.cpus * 1e9) and "/tmp" in hc["Tmpfs"]
    assert res.stdout.split()[0] == b"65534" and b"0000000000000000" in res.stdout
    import docker.errors

    with pytest.raises(docker.errors.NotFound):
        client.containers.get(sb.container_id)  # removed at task end
    assert not sb.workspace.exists()
    assert pool.wait_full(60)  # refilled


def test_docker_other_limits_start_a_container_of_their_own(docker_backend: SandboxBackend) -> None:
    limits = SUITE_LIMITS.with_(memory_bytes=128 * 1024 * 1024)

    async def go():  # noqa: ANN202
        async with await docker_backend.open("own", limits) as sb:
            hc = docker_backend.client.containers.get(sb.container_id).attrs["HostConfig"]  # type: ignore[attr-defined]
            return hc["Memory"]

    assert run(go()) == 128 * 1024 * 1024


def test_docker_sweeps_containers_of_a_crashed_process(docker_host: str) -> None:
    from tools.sandbox.docker import DockerBackend
    from tools.sandbox.docker.container import LABEL_OWNER, start_container
    from tools.sandbox.workspace import owner_tag

    dead = subprocess.Popen(["true"])
    dead.wait()
    first = DockerBackend(SUITE_LIMITS, base_url=docker_host, pool_size=0)
    warm = start_container(first.client, first.image, SUITE_LIMITS, "crashed")
    # As if the process that started it had died without cleaning up:
    host = owner_tag().rpartition(":")[0]
    warm.container.stop(timeout=0)
    orphan = first.client.containers.create(
        first.image,
        ["sleep", "infinity"],
        labels={**warm.container.labels, LABEL_OWNER: f"{host}:{dead.pid}"},
    )
    warm.container.remove(force=True)
    (warm.workspace.base / "owner").write_text(f"{host}:{dead.pid}")
    run(first.close())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = DockerBackend(SUITE_LIMITS, base_url=docker_host, pool_size=0)
    try:
        assert orphan.id in second.swept
        assert not warm.workspace.base.exists()
    finally:
        run(second.close())
