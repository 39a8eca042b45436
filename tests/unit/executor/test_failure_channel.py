"""One failure channel (:mod:`executor.loop.driver`, :mod:`executor.runtime`), no engine.

Every exception in a task's run (its sandbox does not open, a tool backend raises,
a bug in the runtime) ends the task ``failed``, journaled with the reason, its KV
released, its traceback logged; the task's handle gives a ``TaskResult`` for every
outcome; and ``Executor.start`` releases what it opened when a later step fails.

The real ``TaskDriver``, ``Dispatcher`` (on the real scheduler core), ``Journal``,
``Telemetry``, chat format (the tiny model's tokenizer), ``ReplicaHandle`` and local
sandbox backend; only the replica's actor is a stand-in that answers from a script.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from executor.agent import FINAL_ANSWER, Agent
from executor.dispatch import Dispatcher
from executor.errors import ExecutorError
from executor.fleet.generation import GenerateRequest, GenerateResult
from executor.fleet.handle import ReplicaHandle
from executor.fleet.pool import ReplicaPool
from executor.fleet.registry import ReplicaRegistry
from executor.fleet_lifetime import Fleet
from executor.loop.chat_format import ChatFormat
from executor.loop.driver import Services, TaskDriver, run_driver
from executor.loop.journal import Journal
from executor.loop.machine import TaskMachine
from executor.runtime import Executor, TaskHandle
from executor.telemetry import Telemetry
from scheduler import SchedulerCore
from tools import ToolContext, tool
from tools.sandbox import Limits, SandboxBackend, SandboxError
from tools.sandbox.local import LocalBackend
from tools.toolbox import Toolbox
from tools.web.policy import WebPolicy

KV = 8192
ABSENT = "bubblewrap (bwrap) is not installed: run infra/install_sandbox_deps.sh"


@tool
async def lookup(key: str, ctx: ToolContext) -> str:
    """Look a key up in the task's workspace.

    Args:
        key: what to look up
    """
    (ctx.workspace / "seen").write_text(key)
    if key == "flaky":
        raise ConnectionResetError("the lookup backend reset the connection")
    return f"{key}=1"


def agent() -> Agent:
    return Agent(name="t", tools=[lookup], model="tiny", max_steps=6)


def reply(name: str, **arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def answer(text: str) -> str:
    return reply(FINAL_ANSWER, answer=text)


class ScriptedActor:
    """A replica's actor (the real ``ReplicaHandle`` calls it) that answers each call
    with the script's next reply; with none left, it hangs like a busy engine."""

    def __init__(self, chat: ChatFormat, replies: list[str]) -> None:
        self.chat = chat
        self.replies = list(replies)
        self.generate = SimpleNamespace(remote=self._generate)

    async def _generate(self, request: GenerateRequest) -> GenerateResult:
        if not self.replies:
            await asyncio.Event().wait()
        text = self.replies.pop(0)
        ids = self.chat.encode(text)
        prompt = request.input_ids or []
        return GenerateResult(
            replica_id="r0",
            text=text,
            output_ids=ids,
            prompt_tokens=len(prompt),
            cached_tokens=0,
            completion_tokens=len(ids),
            finish_reason="stop",
            latency_s=0.01,
        )


class OpenFails(SandboxBackend):
    """A sandbox backend that cannot run here (as bwrap's, when it is not installed)."""

    name = "absent"

    async def open(self, task_id: str, limits: Limits | None = None) -> Any:
        raise SandboxError(ABSENT)


@pytest.fixture(scope="module")
def chat() -> ChatFormat:
    from executor.models import resolve

    return ChatFormat.load(resolve("tiny"))


@pytest.fixture
def local_backend() -> SandboxBackend:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "NO ISOLATION": as meant here
        return LocalBackend(Limits(disk_bytes=None))


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def services(
    chat: ChatFormat, journal: Journal, sandboxes: SandboxBackend, replies: list[str]
) -> Services:
    dispatcher = Dispatcher(SchedulerCore())
    replicas = ReplicaRegistry()
    replicas.add(ReplicaHandle("r0", ScriptedActor(chat, replies), {"max_total_num_tokens": KV}))
    dispatcher.replica_joined("r0", KV)
    return Services(
        model="tiny",
        dispatcher=dispatcher,
        replicas=replicas,
        chat=chat,
        journal=journal,
        telemetry=Telemetry("memory"),
        sandboxes=sandboxes,
        web=WebPolicy(),
    )


def run(s: Services, task_id: str = "t1") -> Any:
    async def go() -> Any:
        return await run_driver(TaskDriver(s, agent(), "look up a", task_id))

    return asyncio.run(go())


def kv_reserved(s: Services) -> int:
    view = s.dispatcher.core.replica("r0")
    assert view is not None
    return view.kv_reserved_tokens


def assert_ended_failed(s: Services, result: Any, reason: str, task_id: str = "t1") -> None:
    """Failed with the reason, in the result and the journal (which the service would
    otherwise resume at its next start), and the task's KV given back."""
    assert result.status == "failed" and result.error is not None and reason in result.error
    record = s.journal.get(task_id)
    assert record.status == "failed" and record.error == result.error
    assert kv_reserved(s) == 0
    view = s.dispatcher.core.task(task_id)
    assert view is None or view.state.value in {"finished", "failed", "cancelled"}


def logged_with_traceback(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(
        r.levelno == logging.ERROR
        and r.name.startswith("executor.")
        and r.exc_info is not None
        and text in r.getMessage()
        for r in caplog.records
    )


# -- every exception in a run ends the task failed, journaled -------------------------


def test_a_sandbox_that_does_not_open_fails_the_task_journaled(
    chat: ChatFormat, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    s = services(chat, journal, OpenFails(), [answer("never asked")])
    result = run(s)
    assert_ended_failed(s, result, f"SandboxError: {ABSENT}")
    assert result.steps == []
    assert logged_with_traceback(caplog, ABSENT)


def test_a_tool_that_raises_is_the_model_s_observation_and_the_task_goes_on(
    chat: ChatFormat, journal: Journal, local_backend: SandboxBackend
) -> None:
    """A tool's own error (here its backend's connection reset) is a failed tool call
    the model reads, not the task's failure."""
    s = services(chat, journal, local_backend, [reply("lookup", key="flaky"), answer("no")])
    result = run(s)
    assert result.status == "succeeded" and result.output == "no"
    (step,) = result.tools
    assert not step.ok and "ConnectionResetError" in step.output
    assert journal.get("t1").status == "succeeded"


def test_a_tool_backend_that_raises_fails_the_task_and_closes_its_sandbox(
    chat: ChatFormat,
    journal: Journal,
    local_backend: SandboxBackend,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The tools' layer itself raises (outside a tool's own error handling)."""
    workspaces: list[Path] = []

    async def broken(self: Toolbox, name: str, args: Any, ctx: ToolContext) -> Any:
        workspaces.append(ctx.workspace)
        raise OSError("the tool backend lost its worker")

    monkeypatch.setattr(Toolbox, "call", broken)
    s = services(chat, journal, local_backend, [reply("lookup", key="a"), answer("x")])
    result = run(s)
    assert_ended_failed(s, result, "OSError: the tool backend lost its worker")
    assert [step.kind for step in result.steps] == ["call"]
    assert type(journal.get("t1").payloads[-1]).__name__ == "ToolStartPayload"  # journaled
    assert workspaces and not workspaces[0].exists()  # the sandbox was closed
    assert logged_with_traceback(caplog, "lost its worker")


def test_an_internal_bug_fails_the_task_with_its_reason(
    chat: ChatFormat,
    journal: Journal,
    local_backend: SandboxBackend,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the task machine")

    monkeypatch.setattr(TaskMachine, "tool_result", bug)
    s = services(chat, journal, local_backend, [reply("lookup", key="a"), answer("x")])
    result = run(s)
    assert_ended_failed(s, result, "RuntimeError: a bug in the task machine")
    assert logged_with_traceback(caplog, "a bug in the task machine")


def test_an_error_past_the_driver_s_own_handling_still_ends_the_task_failed(
    chat: ChatFormat,
    journal: Journal,
    local_backend: SandboxBackend,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``run_driver`` is the last line: here the telemetry fails as the task ends."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("the metrics exporter is gone")

    s = services(chat, journal, local_backend, [answer("42")])
    monkeypatch.setattr(s.telemetry, "record_task", broken)
    result = run(s)
    assert_ended_failed(s, result, "ValueError: the metrics exporter is gone")
    assert len(result.calls) == 1  # the steps it made are in its result
    assert logged_with_traceback(caplog, "metrics exporter is gone")


# -- a handle gives a result for every outcome ----------------------------------------


def test_a_cancelled_task_is_journaled_and_its_handle_gives_a_failed_result(
    chat: ChatFormat, journal: Journal, local_backend: SandboxBackend
) -> None:
    """Cancellation keeps its meaning (the driver's task ends cancelled, journaled
    ``failed: cancelled``); a handle's ``result()`` says so instead of raising."""
    s = services(chat, journal, local_backend, [])  # the call hangs

    async def go() -> Any:
        driver = TaskDriver(s, agent(), "look up a", "t1")
        future = asyncio.get_running_loop().create_task(run_driver(driver))
        handle = TaskHandle("t1", future, driver)
        while kv_reserved(s) == 0:
            await asyncio.sleep(0.01)  # the call is placed: it holds KV
        future.cancel()
        return await handle.result(), future

    result, future = asyncio.run(go())
    assert future.cancelled()
    assert result.status == "failed" and result.error == "cancelled" and result.agent == "t"
    assert_ended_failed(s, result, "cancelled")


def test_a_handle_s_waiter_that_is_cancelled_still_raises(
    chat: ChatFormat, journal: Journal, local_backend: SandboxBackend
) -> None:
    s = services(chat, journal, local_backend, [])

    async def go() -> None:
        driver = TaskDriver(s, agent(), "look up a", "t1")
        handle = TaskHandle("t1", asyncio.ensure_future(run_driver(driver)), driver)
        waiter = asyncio.ensure_future(handle.result())
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(go())
    assert journal.get("t1").error == "cancelled"


# -- Executor.start releases what it opened when a later step fails ----------------------


def open_fds(path: Path) -> list[str]:
    """This process's open files under the journal's name (its -wal and -shm too)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


class Opened:
    """What ``Executor.start`` opened (the real objects), and which were released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.backends: list[SandboxBackend] = []
        self.closed_backends: list[SandboxBackend] = []
        self.shut_down: list[Telemetry] = []
        self.stopped_pools: list[ReplicaPool] = []
        opened = self

        class Local(LocalBackend):
            async def close(self) -> None:
                opened.closed_backends.append(self)
                await super().close()

        def create_backend(name: str) -> SandboxBackend:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                backend = Local(Limits(disk_bytes=None))
            self.backends.append(backend)
            return backend

        shutdown = Telemetry.shutdown
        pool_shutdown = ReplicaPool.shutdown

        def telemetry_shutdown(t: Telemetry) -> None:
            self.shut_down.append(t)
            shutdown(t)

        def stop_pool(pool: ReplicaPool) -> None:
            self.stopped_pools.append(pool)
            pool_shutdown(pool)

        monkeypatch.setattr("executor.runtime.create_backend", create_backend)
        monkeypatch.setattr(Telemetry, "shutdown", telemetry_shutdown)
        monkeypatch.setattr(ReplicaPool, "shutdown", stop_pool)


def test_start_failing_at_the_pool_releases_the_journal_telemetry_and_sandboxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cluster(self: ReplicaPool) -> ReplicaPool:
        raise ExecutorError("the Ray cluster at ray://nowhere:10001 is not reachable")

    monkeypatch.setattr(ReplicaPool, "start", no_cluster)
    opened = Opened(monkeypatch)
    path = tmp_path / "journal.sqlite"
    ex = Executor("tiny", sandbox="local", journal=path, telemetry="memory")
    with pytest.raises(ExecutorError, match="not reachable"):
        asyncio.run(ex.start())
    assert path.exists() and open_fds(path) == []  # the journal was opened, then closed
    assert len(opened.shut_down) == 1
    assert opened.backends and opened.closed_backends == opened.backends
    assert ex.pool is None and ex._services is None


def test_start_failing_after_the_pool_started_stops_the_pool_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def empty_pool(self: ReplicaPool) -> ReplicaPool:
        return self  # started, with no replicas (no Ray needed)

    def bug(self: Fleet) -> None:
        raise RuntimeError("the fleet could not start its monitors")

    monkeypatch.setattr(ReplicaPool, "start", empty_pool)
    monkeypatch.setattr(Fleet, "start", bug)
    opened = Opened(monkeypatch)
    path = tmp_path / "journal.sqlite"
    ex = Executor("tiny", sandbox="local", journal=path, telemetry="memory")
    with pytest.raises(RuntimeError, match="monitors"):
        asyncio.run(ex.start())
    assert len(opened.stopped_pools) == 1 and ex.pool is None
    assert open_fds(path) == []  # the journal and the control channel (the same file)
    assert len(opened.shut_down) == 1 and opened.closed_backends == opened.backends


def test_start_failing_leaves_what_it_was_given_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_backend: SandboxBackend
) -> None:
    """A journal, telemetry, sandbox backend or pool passed in is the caller's: a failed
    start does not close it."""

    def bug(self: Fleet) -> None:
        raise RuntimeError("the fleet could not start its monitors")

    monkeypatch.setattr(Fleet, "start", bug)
    opened = Opened(monkeypatch)
    journal = Journal(tmp_path / "journal.sqlite")
    telemetry = Telemetry("memory")
    pool = ReplicaPool(0)  # not started: the executor only serves on it
    ex = Executor("tiny", pool=pool, sandbox=local_backend, journal=journal, telemetry=telemetry)
    with pytest.raises(RuntimeError, match="monitors"):
        asyncio.run(ex.start())
    journal.create_task("still-open", {"name": "a"}, "goal", [1])  # the journal still works
    assert journal.get("still-open").status == "running"
    journal.close()
    assert opened.shut_down == [] and opened.stopped_pools == [] and ex.pool is pool
    assert opened.backends == []  # (the executor made no backend of its own)
