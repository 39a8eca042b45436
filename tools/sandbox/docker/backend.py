"""The ``docker`` backend: one warm container per task, one ``docker exec`` per call.

Talks to a real Docker engine through the ``docker`` SDK (``DOCKER_HOST``, or
``base_url``; ``infra/dockerd.sh`` starts a private one). The image is built
locally (:mod:`tools.sandbox.docker.image`); containers are described in
:mod:`tools.sandbox.docker.container`; a :class:`~tools.sandbox.docker.pool.ContainerPool`
keeps a few started so that ``open()`` returns at once. On start-up the
backend sweeps containers and workspaces left by a crashed process of this
host. The SDK blocks, so every engine call runs in the backend's thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from tools.sandbox.base import (
    WORKDIR,
    ExecResult,
    Limits,
    Sandbox,
    SandboxBackend,
    SandboxError,
    SandboxUnavailable,
    as_bytes,
    default_env,
)
from tools.sandbox.capture import CappedBuffer
from tools.sandbox.docker.container import (
    LABEL,
    LABEL_BASE,
    LABEL_OWNER,
    SANDBOX_UID,
    WarmContainer,
    alive,
    start_container,
)
from tools.sandbox.docker.image import ensure_image
from tools.sandbox.docker.pool import ContainerPool
from tools.sandbox.workspace import owner_alive, remove_base, sweep_workspaces

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

DRAIN_GRACE_S = 2.0
#: how long the stream may be silent before checking whether the command has exited
IDLE_TICK_S = 0.05


def connect(base_url: str | None = None) -> Any:
    """A docker client for ``base_url`` / ``DOCKER_HOST``, or SandboxUnavailable saying why."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - a project dependency
        raise SandboxUnavailable("the docker SDK is not installed (pip install docker)") from exc
    url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=url, version="auto", timeout=60)
        client.ping()
    except Exception as exc:
        raise SandboxUnavailable(
            f"no Docker engine answers at {url} ({exc}); start the private one with "
            '`eval "$(bash infra/dockerd.sh start)"`'
        ) from exc
    return client


class DockerBackend(SandboxBackend):
    name = "docker"

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        base_url: str | None = None,
        image: str | None = None,
        pool_size: int = 2,
        max_threads: int = 32,
    ) -> None:
        super().__init__(limits)
        self.client = connect(base_url)
        try:
            self.image = image or ensure_image(self.client)
        except Exception as exc:
            raise SandboxUnavailable(f"cannot build the sandbox image: {exc}") from exc
        self.swept = self.sweep()
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="docker-sb")
        self.pool = (
            ContainerPool(pool_size, self.limits, partial(self._start, self.limits, "pool"))
            if pool_size > 0
            else None
        )

    def _start(self, limits: Limits, task_id: str) -> WarmContainer:
        return start_container(self.client, self.image, limits, task_id)

    def _replace(self, warm: WarmContainer, task_id: str) -> WarmContainer:
        """A fresh container on ``warm``'s workspace, for a task whose container stopped."""
        warm.discard()
        return start_container(self.client, self.image, warm.limits, task_id, warm.workspace)

    async def _call(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    async def open(self, task_id: str, limits: Limits | None = None) -> DockerSandbox:
        limits = limits or self.limits
        warm = self.pool.take(limits) if self.pool else None
        if warm is None:
            warm = await self._call(self._start, limits, task_id)
        return DockerSandbox(self, task_id, warm)

    def sweep(self) -> list[str]:
        """Remove containers (and workspaces) of this host's processes that are gone."""
        removed: list[str] = []
        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            labels = container.labels or {}
            if owner_alive(labels.get(LABEL_OWNER, "")):
                continue
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(container.id)
            base = labels.get(LABEL_BASE)
            if base:
                remove_base(Path(base))
        sweep_workspaces()
        return removed

    async def close(self) -> None:
        if self.pool is not None:
            await asyncio.to_thread(self.pool.close)
        self._threads.shutdown(wait=True)
        self.client.close()


class DockerSandbox(Sandbox):
    backend_name = "docker"

    def __init__(self, backend: DockerBackend, task_id: str, warm: WarmContainer) -> None:
        super().__init__(task_id, warm.workspace.path, warm.limits)
        self._backend = backend
        self._warm = warm
        self.quota_bytes = warm.workspace.quota_bytes
        self._lock = asyncio.Lock()
        self.owner = (SANDBOX_UID, SANDBOX_UID) if os.geteuid() == 0 else None
        self.container_id = warm.id

    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        args = self._check_open(argv)
        timeout = self.limits.timeout_s if timeout is None else float(timeout)
        full_env = default_env(WORKDIR, env)
        async with self._lock:
            return await self._backend._call(self._exec, args, as_bytes(stdin), timeout, full_env)

    def _exec(
        self, argv: list[str], stdin: bytes | None, timeout: float, env: dict[str, str]
    ) -> ExecResult:
        replaced = self._ensure_running()
        api = self._backend.client.api
        host = self._warm.host
        oom_before = host.oom_kills() if host else 0
        out = CappedBuffer(self.limits.max_output_bytes)
        err = CappedBuffer(self.limits.max_output_bytes)
        t0 = time.monotonic()
        try:
            exec_id = api.exec_create(
                self.container_id,
                argv,
                stdin=stdin is not None,
                stdout=True,
                stderr=True,
                tty=False,
                environment=[f"{k}={v}" for k, v in env.items()],
                workdir=WORKDIR,
                user=f"{SANDBOX_UID}:{SANDBOX_UID}",
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except Exception as exc:
            raise SandboxError(f"docker exec failed: {exc}") from exc
        raw: socket.socket = getattr(sock, "_sock", sock)
        watch = _ExitWatch(api, exec_id, host is not None, self._kill_leftovers)
        try:
            if stdin is not None:
                threading.Thread(target=_send, args=(raw, stdin), daemon=True).start()
            timed_out = not _read_frames(raw, out, err, t0 + timeout, watch.on_idle)
            duration = watch.exited_at - t0 if watch.exited_at else time.monotonic() - t0
            if timed_out:
                self._kill_leftovers()
                _read_frames(raw, out, err, time.monotonic() + DRAIN_GRACE_S)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
        self._kill_leftovers()
        code = api.exec_inspect(exec_id).get("ExitCode")
        # without the host's view, 137 (SIGKILL) from no timeout of ours is the engine's OOM kill
        oom = host.oom_kills() > oom_before if host is not None else code == 137

        return ExecResult(
            exit_code=code,
            stdout=out.getvalue(),
            stderr=err.getvalue(),
            timed_out=timed_out,
            oom=oom and not timed_out,
            truncated=out.truncated or err.truncated,
            duration_s=duration,
            stdout_bytes=out.total,
            stderr_bytes=err.total,
            extra={"container": self.container_id[:12], "replaced": replaced},
        )

    def _ensure_running(self) -> bool:
        """Replace a container that stopped since the last call; True when it did."""
        if self._warm.running():
            return False
        self._warm = self._backend._replace(self._warm, self.task_id)
        self.container_id = self._warm.id
        return True

    def _kill_leftovers(self) -> None:
        """Nothing a call started outlives it: kill all but the container's keeper."""
        host = self._warm.host
        if host is not None:
            host.kill_leftovers()
            return
        # Remote daemon: from inside, as the sandbox user, whose kill -1 cannot reach
        # the root keeper.
        with contextlib.suppress(Exception):
            self._warm.container.exec_run(["kill", "-9", "-1"], user=f"{SANDBOX_UID}:{SANDBOX_UID}")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        async with self._lock:
            await self._backend._call(self._warm.remove)


def _send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class _ExitWatch:
    """Ends a call whose command exited while something it started holds its output open.

    The engine keeps an exec's stream open while any process holds the pipes
    (a background job), so EOF alone would wait for the time limit. On each idle
    moment this checks whether the exec's own process is gone; once it is, the
    leftovers are killed and the stream closes.
    """

    def __init__(self, api: Any, exec_id: str, host_pids: bool, kill: Any) -> None:
        self.api, self.exec_id, self.host_pids, self.kill = api, exec_id, host_pids, kill
        self.pid = 0
        self.exited_at = 0.0
        self._next_inspect = 0.0

    def on_idle(self) -> None:
        if self.exited_at:
            return
        now = time.monotonic()
        if self.pid and self.host_pids:
            exited = not alive(self.pid)
        elif now >= self._next_inspect:
            self._next_inspect = now + 0.25
            info = self.api.exec_inspect(self.exec_id)
            self.pid = int(info.get("Pid") or 0)
            exited = not info.get("Running")
        else:
            return
        if exited:
            self.exited_at = time.monotonic()
            self.kill()


def _read_frames(
    sock: socket.socket,
    out: CappedBuffer,
    err: CappedBuffer,
    deadline: float,
    on_idle: Any = None,
) -> bool:
    """Demultiplex Docker's stream frames into ``out``/``err`` until EOF (True) or deadline."""
    pending = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([sock], [], [], min(remaining, IDLE_TICK_S))
        if not ready:
            if on_idle is not None:
                on_idle()
            continue
        try:
            chunk = sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            return True
        if not chunk:
            return True
        pending += chunk
        while len(pending) >= 8:
            kind, size = pending[0], struct.unpack(">I", pending[4:8])[0]
            if len(pending) < 8 + size:
                break
            payload, pending = pending[8 : 8 + size], pending[8 + size :]
            (err if kind == 2 else out).write(payload)
