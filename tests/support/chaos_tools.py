"""Helpers of the chaos tests: signal a replica's engine processes, watch the scheduler
core of an executor that runs on a loop thread, wait for a condition."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from agent_tools import Runner

from scheduler import ReplicaState, TaskState


def engine_pids(pool: Any, replica_id: str) -> list[int]:
    return list(pool[replica_id].info["engine_pids"])


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def core_state(runner: Runner, what: Callable[[Any], Any]) -> Any:
    """Read the executor's scheduler core on its own loop thread."""

    async def read() -> Any:
        return what(runner.ex.dispatcher.core)

    return runner.loop.run(read(), timeout=30)


def running_on(runner: Runner, task_id: str, replica_id: str) -> bool:
    view = core_state(runner, lambda core: core.task(task_id))
    return view is not None and view.state is TaskState.RUNNING and view.replica_id == replica_id


def replica_state(runner: Runner, replica_id: str) -> ReplicaState | None:
    view = core_state(runner, lambda core: core.replica(replica_id))
    return None if view is None else view.state
