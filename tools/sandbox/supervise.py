"""Run one host process with a deadline, capped output and a tree kill.

Shared by the subprocess-based backends (bwrap, local). The process starts in
a session of its own; ``kill_tree`` is the backend's way to end everything the
command started (its cgroup, its process group). It is called on timeout, after
the process exits (for what it left behind) and if the caller is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tools.sandbox.capture import CappedBuffer

CHUNK = 64 * 1024
#: how long to wait for the pipes to close once the process and its tree are gone
DRAIN_GRACE_S = 2.0


@dataclass
class Supervised:
    exit_code: int | None
    stdout: CappedBuffer
    stderr: CappedBuffer
    timed_out: bool
    duration_s: float


async def supervise(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    timeout: float,
    env: Mapping[str, str],
    max_output_bytes: int,
    kill_tree: Callable[[int], None],
    pass_fds: Sequence[int] = (),
    cwd: str | None = None,
) -> Supervised:
    out, err = CappedBuffer(max_output_bytes), CappedBuffer(max_output_bytes)
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    tasks = [
        asyncio.create_task(_drain(proc.stdout, out)),
        asyncio.create_task(_drain(proc.stderr, err)),
    ]
    if stdin is not None:
        tasks.append(asyncio.create_task(_feed(proc, stdin)))
    timed_out = False
    try:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            timed_out = True
            kill_tree(proc.pid)
            await proc.wait()
        duration = time.monotonic() - t0
        # Whatever the command left running (and holding our pipes) goes now.
        kill_tree(proc.pid)
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
    except BaseException:
        # Cancelled (or failed) mid-call: leave nothing running behind us.
        if proc.returncode is None:
            kill_tree(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for task in tasks:
            task.cancel()
        raise
    return Supervised(proc.returncode, out, err, timed_out, duration)


async def _drain(stream: asyncio.StreamReader, sink: CappedBuffer) -> None:
    while chunk := await stream.read(CHUNK):
        sink.write(chunk)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command did not read all of it: its business
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            proc.stdin.close()
