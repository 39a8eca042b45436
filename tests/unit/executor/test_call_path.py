"""One typed call (issue 27, item 4), no engine: the driver tells the dispatcher what
happened, every call's fit is checked once where the replicas' KV pools are known
(the actor keeps its own check, same rule), and collaborators come with constructors.

The real ``TaskDriver``, ``Dispatcher`` (on the real scheduler core), ``Journal``,
chat format (the tiny model's tokenizer) and ``ReplicaHandle``; only the replica's
actor is a stand-in that answers from a script.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from executor.agent import FINAL_ANSWER, Agent
from executor.dispatch import Dispatcher
from executor.errors import InvalidRequestError
from executor.fleet.fit import call_limit, check_fits
from executor.fleet.generation import GenerateRequest, GenerateResult
from executor.fleet.handle import ReplicaHandle
from executor.fleet.registry import ReplicaRegistry
from executor.fleet_lifetime import EngineSessions
from executor.loop.chat_format import ChatFormat
from executor.loop.driver import Services, TaskDriver, run_driver
from executor.loop.journal import Journal
from executor.telemetry import Telemetry
from scheduler import SchedulerCore, TaskArrived, TaskFinished, ToolFinished, ToolStarted
from tools import ToolContext, tool
from tools.sandbox import Limits
from tools.sandbox.local import LocalBackend
from tools.web.policy import WebPolicy

KV = 8192


@tool
async def lookup(key: str, ctx: ToolContext) -> str:
    """Look a key up.

    Args:
        key: what to look up
    """
    return f"{key}=1"


def agent() -> Agent:
    return Agent(name="t", tools=[lookup], model="tiny", max_steps=6)


def reply(name: str, **arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments})


class ScriptedActor:
    def __init__(self, chat: ChatFormat, replies: list[str]) -> None:
        self.chat = chat
        self.replies = list(replies)
        self.requests: list[GenerateRequest] = []
        self.released: list[str] = []
        self.generate = SimpleNamespace(remote=self._generate)
        self.release = SimpleNamespace(remote=self._release)

    async def _generate(self, request: GenerateRequest) -> GenerateResult:
        self.requests.append(request)
        text = self.replies.pop(0)
        ids = self.chat.encode(text)
        return GenerateResult(
            replica_id="r0",
            text=text,
            output_ids=ids,
            prompt_tokens=len(request.input_ids or []),
            cached_tokens=0,
            completion_tokens=len(ids),
            finish_reason="stop",
            latency_s=0.01,
        )

    async def _release(self, session_id: str) -> bool:
        self.released.append(session_id)
        return True


@pytest.fixture(scope="module")
def chat() -> ChatFormat:
    from executor.models import resolve

    return ChatFormat.load(resolve("tiny"))


def services(
    chat: ChatFormat, tmp_path: Path, actor: ScriptedActor, info: dict[str, Any]
) -> Services:
    replicas = ReplicaRegistry()
    sessions = EngineSessions(replicas)
    dispatcher = Dispatcher(SchedulerCore(), on_release=sessions.release)
    replicas.add(ReplicaHandle("r0", actor, info))
    dispatcher.replica_joined("r0", KV)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "NO ISOLATION": as meant here
        sandboxes = LocalBackend(Limits(disk_bytes=None))
    return Services(
        model="tiny",
        dispatcher=dispatcher,
        replicas=replicas,
        chat=chat,
        journal=Journal(tmp_path / "journal.sqlite"),
        telemetry=Telemetry("memory"),
        sandboxes=sandboxes,
        web=WebPolicy(),
    )


def test_the_dispatcher_learns_what_happened_from_the_driver(
    chat: ChatFormat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call, a tool, a call, the end: the core hears arrival, tool start, tool finish
    and the finish, and the dispatcher never reads the core's state to guess them."""
    actor = ScriptedActor(chat, [reply("lookup", key="a"), reply(FINAL_ANSWER, answer="a=1")])
    s = services(chat, tmp_path, actor, {"max_total_num_tokens": KV, "release_in_engine": True})
    core = s.dispatcher.core
    events: list[Any] = []
    handle, task = core.handle, core.task
    guessers = {"ready", "next_call", "tool_started", "finished"}

    def spy(event: Any) -> Any:
        events.append(event)
        return handle(event)

    def no_guessing(task_id: str) -> Any:
        caller = inspect.stack()[1].function
        assert caller not in guessers, f"the dispatcher read the core's state in {caller}"
        return task(task_id)

    monkeypatch.setattr(core, "handle", spy)
    monkeypatch.setattr(core, "task", no_guessing)

    async def go() -> Any:
        driver = await TaskDriver.open(s, agent(), "look up a", "t1")
        result = await run_driver(driver)
        await asyncio.sleep(0.05)  # the engine session's release (a spawned job)
        return result

    result = asyncio.run(go())
    s.journal.close()
    assert result.status == "succeeded" and result.output == "a=1"
    kinds = [type(e) for e in events]
    assert kinds.count(TaskArrived) == 1
    assert kinds.index(TaskArrived) < kinds.index(ToolStarted) < kinds.index(ToolFinished)
    assert kinds.index(ToolFinished) < kinds.index(TaskFinished)
    assert actor.released == ["t1"]  # on_release, given to the dispatcher's constructor


def test_a_call_that_does_not_fit_fails_before_the_scheduler_and_the_replica(
    chat: ChatFormat, tmp_path: Path
) -> None:
    """The engine's input limit is part of the fit (as the actor checks it): a prompt
    within the KV pool but over max_req_input_len is refused by the driver, with one
    clear line, before the core or the replica sees it."""
    actor = ScriptedActor(chat, [reply(FINAL_ANSWER, answer="never")])
    info = {"max_total_num_tokens": KV, "max_req_input_len": 300}
    s = services(chat, tmp_path, actor, info)
    assert s.replicas.get("r0") is not None and s.replicas.get("r0").context_tokens == 300  # type: ignore[union-attr]
    ids = chat.prompt("sys", "word " * 400, [])[1]
    s.journal.create_task("big", agent().describe(), "big", ids)

    async def go() -> Any:
        return await run_driver(TaskDriver(s, agent(), "big", "big", prompt_ids=ids))

    result = asyncio.run(go())
    record = s.journal.get("big")
    s.journal.close()
    assert result.status == "failed" and "does not fit the replicas (300 tokens)" in result.error
    assert record.status == "failed"
    assert actor.requests == [] and s.dispatcher.core.task("big") is None


def test_one_fit_rule_for_the_driver_and_the_actor() -> None:
    assert call_limit(8192) == 8192 and call_limit(8192, 4000) == 4000
    check_fits(100, 28, 128, "r")
    with pytest.raises(InvalidRequestError, match=r"100 prompt tokens \+ max_new_tokens 29"):
        check_fits(100, 29, 128, "r")
    check_fits(10**6, 10, None, "r")  # no replica known yet: nothing to check against
