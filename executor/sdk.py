"""The one-call SDK: ``run_task(agent, goal)`` on an embedded default executor.

    from executor import Agent, run_task
    from tools import python

    agent = Agent(name="calc", tools=[python])
    result = run_task(agent, "What is 1234 * 5678?")
    print(result.output, result.steps)

The first call starts a local Ray cluster with one replica of the agent's model
(an :class:`~executor.runtime.Executor` on a private event-loop thread); later
calls reuse it; it is stopped at interpreter exit (or by :func:`shutdown`).
``arun_task`` is the same from async code. For many concurrent tasks, or to
choose replicas, sandbox or journal, use an ``Executor`` directly.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from executor.agent import Agent
from executor.errors import ExecutorError
from executor.loop.journal import Journal
from executor.remote import URL_ENV, run_remote
from executor.result import TaskResult
from executor.runtime import Executor

T = TypeVar("T")


class LoopThread:
    """An event loop on a daemon thread, for driving an Executor from synchronous code."""

    def __init__(self, name: str = "agent-executor") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


class _Embedded:
    """Executors (one per model) living on one background event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: LoopThread | None = None
        self._executors: dict[str, Executor] = {}

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        with self._lock:
            if self._loop is None:
                self._loop = LoopThread()
                atexit.register(self.shutdown)
            return self._loop.submit(coro)

    async def executor(self, model: str, options: dict[str, Any]) -> Executor:
        ex = self._executors.get(model)
        if ex is None:
            ex = Executor(model=model, **options)
            self._executors[model] = ex
            try:
                await ex.start()
            except BaseException:
                del self._executors[model]
                raise
        return ex

    async def _run(self, agent: Agent, goal: str, options: dict[str, Any]) -> TaskResult:
        ex = await self.executor(agent.model, options)
        return await ex.run(agent, goal)

    async def _resume(self, task_id: str, agent: Agent | None, model: str) -> TaskResult:
        ex = await self.executor(agent.model if agent else model, {})
        return await ex.resume(task_id, agent)

    async def _close_all(self) -> None:
        executors, self._executors = list(self._executors.values()), {}
        for ex in executors:
            await ex.close()

    def shutdown(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.run(self._close_all(), timeout=120)
        loop.close()


_EMBEDDED = _Embedded()


def run_task(
    agent: Agent, goal: str, *, executor: str | None = None, **executor_options: Any
) -> TaskResult:
    """Run one task to its end and return its result (blocking).

    ``executor_options`` (``replicas``, ``sandbox``, ``journal``, ``telemetry``...)
    apply when the embedded executor for the agent's model is first started.
    ``executor``: the URL of an executor service to run it on instead (default:
    ``$EXECUTOR_URL``; its token from ``$EXECUTOR_TOKEN``); the agent is then one the
    service has by name, or one of built-in tools only.
    """
    url = executor or os.environ.get(URL_ENV)
    if url:
        if executor_options:
            raise ExecutorError(
                f"executor options ({', '.join(executor_options)}) are the service's own; "
                "they cannot be given with a service URL"
            )
        return run_remote(agent, goal, url)
    return _EMBEDDED.submit(_EMBEDDED._run(agent, goal, executor_options)).result()


async def arun_task(agent: Agent, goal: str, **executor_options: Any) -> TaskResult:
    """``run_task`` for async code (the work runs on the embedded executor's loop)."""
    fut = _EMBEDDED.submit(_EMBEDDED._run(agent, goal, executor_options))
    return await asyncio.wrap_future(fut)


def resume_task(
    task_id: str, agent: Agent | None = None, *, model: str | None = None
) -> TaskResult:
    """Continue a journaled task after its driver died; no journaled tool runs again."""
    if model is None and agent is None:
        with Journal() as journal:
            model = str(journal.get(task_id).agent["model"])
    return _EMBEDDED.submit(_EMBEDDED._resume(task_id, agent, model or "")).result()


def shutdown() -> None:
    """Stop the embedded executors (also done at interpreter exit)."""
    _EMBEDDED.shutdown()
