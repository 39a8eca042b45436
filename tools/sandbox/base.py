"""The sandbox interface every backend implements.

Theory of operation: a *backend* (bwrap, docker, local) holds what is shared
between tasks (a Docker client and its pool of warm containers, the seccomp
filter, the cgroup root). ``await backend.open(task_id)`` gives one
:class:`Sandbox` per task: a workspace directory that persists across the
task's calls and is removed by ``close()`` (use ``async with`` so that a
failing task removes it too). ``await sandbox.exec(argv, ...)`` runs one
command inside with the sandbox's limits and returns an :class:`ExecResult`;
when it returns, nothing the command started is still running.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from tools.errors import ToolsError

#: Where the workspace appears inside every isolating sandbox.
WORKDIR = "/workspace"


class SandboxError(ToolsError):
    """A sandbox could not do what was asked (not: the command failed)."""


class SandboxUnavailable(SandboxError):
    """The backend cannot run on this machine (missing binary, no daemon...)."""


@dataclass(frozen=True)
class Limits:
    """Per-sandbox resource limits (each call gets them afresh)."""

    timeout_s: float = 30.0
    memory_bytes: int = 512 * 1024 * 1024
    pids: int = 128
    cpus: float = 1.0
    #: bytes kept per stream (stdout, stderr); the rest is counted and dropped
    max_output_bytes: int = 256 * 1024
    #: size of the private /tmp and of /dev/shm (tmpfs: counted against memory too)
    tmp_bytes: int = 64 * 1024 * 1024
    #: open files per process (RLIMIT_NOFILE, soft and hard): with ``pids`` processes,
    #: far below the host's file table (``fs.file-max``)
    open_files: int = 1024
    #: size of the workspace's own file system (see tools.sandbox.disk); None: uncapped
    disk_bytes: int | None = 1024 * 1024 * 1024

    def with_(self, **changes: Any) -> Limits:
        return replace(self, **changes)


@dataclass(frozen=True)
class ExecResult:
    """What one command did. ``stdout``/``stderr`` are capped (see ``truncated``)."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    oom: bool = False
    truncated: bool = False
    duration_s: float = 0.0
    #: bytes the command wrote, before the cap
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.oom

    @property
    def duration(self) -> float:
        return self.duration_s

    def text(self, stream: str = "stdout") -> str:
        data = self.stdout if stream == "stdout" else self.stderr
        return data.decode("utf-8", errors="replace")


class Sandbox(abc.ABC):
    """One task's sandbox. Not safe for concurrent ``exec`` calls of the same task."""

    backend_name: str = "?"
    #: False only for the ``local`` backend
    isolated: bool = True

    def __init__(self, task_id: str, workspace: Path, limits: Limits) -> None:
        self.task_id = task_id
        #: the workspace on the host (file tools operate here)
        self.workspace = workspace
        self.limits = limits
        self.closed = False

    #: the workspace's path as the commands inside see it
    workdir: str = WORKDIR
    #: uid/gid that owns the workspace (files written by the host are chowned to it)
    owner: tuple[int, int] | None = None
    #: the size of the workspace's own file system; None: not capped
    quota_bytes: int | None = None

    @abc.abstractmethod
    async def exec(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the workspace; ``timeout`` defaults to ``limits.timeout_s``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop everything, remove the workspace. Idempotent."""

    def _check_open(self, argv: Sequence[str]) -> list[str]:
        if self.closed:
            raise SandboxError(f"sandbox of task {self.task_id!r} is closed")
        args = [str(a) for a in argv]
        if not args:
            raise SandboxError("exec needs a non-empty argv")
        return args

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class SandboxBackend(abc.ABC):
    """Makes sandboxes; holds what they share. ``close()`` it when done."""

    name: str = "?"
    isolated: bool = True

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()

    @abc.abstractmethod
    async def open(self, task_id: str, limits: Limits | None = None) -> Sandbox:
        """A ready sandbox for a new task."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release shared resources (pools, clients)."""

    async def __aenter__(self) -> SandboxBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def default_env(workdir: str, env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment a command sees: a fixed minimal one plus the caller's."""
    base = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if env:
        for key, value in env.items():
            if not key or "=" in key or "\0" in key or "\0" in str(value):
                raise SandboxError(f"invalid environment variable {key!r}")
            base[str(key)] = str(value)
    return base


def as_bytes(stdin: bytes | str | None) -> bytes | None:
    if stdin is None or isinstance(stdin, bytes):
        return stdin
    return stdin.encode("utf-8")
