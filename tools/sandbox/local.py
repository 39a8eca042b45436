"""The ``local`` backend: NO ISOLATION. For development only.

Commands run as the calling user, on the host, with the host's network and
files; only the time limit, the output cap and the process-group kill apply.
It exists so that tools can be tried where bubblewrap and Docker are missing,
and it is used only when asked for by name (``open_backend("local")``); it
warns when created and marks every result with ``extra["isolated"] = False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import warnings
from collections.abc import Mapping, Sequence

from tools.sandbox.base import (
    ExecResult,
    Limits,
    Sandbox,
    SandboxBackend,
    as_bytes,
    default_env,
)
from tools.sandbox.supervise import supervise
from tools.sandbox.workspace import Workspace

log = logging.getLogger(__name__)
WARNING = (
    "sandbox backend 'local' has NO ISOLATION: tool commands run on this host as "
    "this user, with its network and files (development only)"
)


class LocalBackend(SandboxBackend):
    name = "local"
    isolated = False

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        warnings.warn(WARNING, RuntimeWarning, stacklevel=2)
        log.warning(WARNING)

    async def open(self, task_id: str, limits: Limits | None = None) -> LocalSandbox:
        limits = limits or self.limits
        ws = await asyncio.to_thread(Workspace.create, task_id, None, limits.disk_bytes)
        return LocalSandbox(task_id, ws, limits)


class LocalSandbox(Sandbox):
    backend_name = "local"
    isolated = False

    def __init__(self, task_id: str, ws: Workspace, limits: Limits) -> None:
        super().__init__(task_id, ws.path, limits)
        self._ws = ws
        self.quota_bytes = ws.quota_bytes
        self.workdir = str(ws.path)
        self.owner = (os.getuid(), os.getgid())
        self._lock = asyncio.Lock()

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
        async with self._lock:
            run = await supervise(
                args,
                stdin=as_bytes(stdin),
                timeout=timeout,
                env=default_env(self.workdir, env),
                max_output_bytes=self.limits.max_output_bytes,
                kill_tree=_kill_group,
                cwd=self.workdir,
            )
        code = run.exit_code
        if code is not None and code < 0:
            code = 128 - code
        return ExecResult(
            exit_code=code,
            stdout=run.stdout.getvalue(),
            stderr=run.stderr.getvalue(),
            timed_out=run.timed_out,
            truncated=run.stdout.truncated or run.stderr.truncated,
            duration_s=run.duration_s,
            stdout_bytes=run.stdout.total,
            stderr_bytes=run.stderr.total,
            extra={"isolated": False},
        )

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        async with self._lock:
            await asyncio.to_thread(self._ws.remove)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
