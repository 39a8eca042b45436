"""An in-process replica for engine-free tests of the real driver, dispatcher and fleet.

:class:`FakeActor` has the interface of a replica's Ray actor handle (each method's
``.remote(...)`` returns an awaitable), so the real :class:`ReplicaHandle` wraps it
and translates its failures exactly as it does Ray's: the actor raises Ray's own
exception types. A test makes it fail, hang or die on command:

- ``fail_next(n)``: its next ``n`` calls raise ``ActorUnavailableError`` (transient:
  the handle says ``ReplicaUnreachableError``, the core retries the call there);
- ``hang()``: calls (and health probes) wait until ``unhang()``, then answer late;
- ``die()``: every call, in flight or new, raises ``ActorDiedError`` (dead:
  ``ReplicaUnavailableError``, the core moves the task).

The model's answers come from :class:`Brain`, a pure function of the prompt (as a
greedy model is): a task moved to another replica replays its history there and
gets the same continuation. :class:`FakePool` stands in for ``ReplicaPool`` (the
fleet's start, discard and stop of replicas).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError

from executor.agent import FINAL_ANSWER, Agent
from executor.errors import ExecutorError
from executor.fleet.generation import GenerateRequest, GenerateResult
from executor.fleet.handle import ReplicaHandle
from executor.loop.chat_format import ChatFormat
from tools import ToolContext, tool

KV = 8192

#: every run of the ``lookup`` tool, in order: (task_id, key)
TOOL_RUNS: list[tuple[str, str]] = []


@tool
async def lookup(key: str, ctx: ToolContext) -> str:
    """Look a key up.

    Args:
        key: what to look up
    """
    TOOL_RUNS.append((ctx.task_id, key))
    return f"{key}=ok"


def agent(max_steps: int = 8) -> Agent:
    return Agent(name="t", tools=[lookup], model="tiny", max_steps=max_steps)


@dataclass
class Brain:
    """The model: looks up ``k0``, ``k1``, ... until the prompt holds ``lookups``
    results, then answers with how many it saw."""

    chat: ChatFormat
    lookups: int = 2

    def reply(self, input_ids: list[int]) -> str:
        seen = self.chat.tokenizer.decode(input_ids).count("=ok")
        if seen < self.lookups:
            return json.dumps({"name": "lookup", "arguments": {"key": f"k{seen}"}})
        return json.dumps({"name": FINAL_ANSWER, "arguments": {"answer": f"saw {seen}"}})


@dataclass
class Attempt:
    """One call that reached the actor: its request and how it ended."""

    request: GenerateRequest
    outcome: str = "in flight"  # answered, unavailable, died, in flight


class FakeActor:
    def __init__(self, replica_id: str, brain: Brain) -> None:
        self.replica_id = replica_id
        self.brain = brain
        self.attempts: list[Attempt] = []
        self.released: list[str] = []
        self.dead = False
        self._failures = 0
        self._open = asyncio.Event()  # set: calls answer; clear: they hang
        self._open.set()
        self._death = asyncio.Event()
        self.entered = asyncio.Event()  # a call reached the actor (cleared by the test)
        self.on_call: Callable[[Attempt], None] | None = None  # runs as a call arrives
        # runs once an answer is on its way back, before the caller wakes to read it
        self.on_answer: Callable[[Attempt], None] | None = None
        self.jobs: list[asyncio.Task[GenerateResult]] = []
        self.generate = SimpleNamespace(remote=self._remote_generate)
        self.release = SimpleNamespace(remote=self._release)
        self.health = SimpleNamespace(remote=self._health)
        self.capacity = SimpleNamespace(remote=self._capacity)

    # -- commands ---------------------------------------------------------------------

    def fail_next(self, n: int = 1) -> None:
        self._failures += n

    def hang(self) -> None:
        self._open.clear()

    def unhang(self) -> None:
        self._open.set()

    def die(self) -> None:
        self.dead = True
        self._death.set()

    @property
    def answered(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome == "answered"]

    # -- the actor's methods ----------------------------------------------------------

    async def _until_open_or_dead(self) -> None:
        if self._open.is_set():
            return
        opened = asyncio.ensure_future(self._open.wait())
        died = asyncio.ensure_future(self._death.wait())
        try:
            await asyncio.wait({opened, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            died.cancel()

    def _remote_generate(self, request: GenerateRequest) -> asyncio.Future[GenerateResult]:
        """As Ray's: the call runs in the actor whether or not its caller still waits
        (a caller that stops waiting does not stop the engine's answer)."""
        attempt = Attempt(request)
        job = asyncio.get_running_loop().create_task(self._generate(attempt))
        job.add_done_callback(lambda j: j.cancelled() or j.exception())
        self.jobs.append(job)
        reply = asyncio.shield(job)
        if self.on_answer is not None:
            hook = self.on_answer
            reply.add_done_callback(lambda r: attempt.outcome == "answered" and hook(attempt))
        return reply

    async def _generate(self, attempt: Attempt) -> GenerateResult:
        request = attempt.request
        self.attempts.append(attempt)
        self.entered.set()
        if self.on_call is not None:
            self.on_call(attempt)
        if not self.dead and self._failures > 0:
            self._failures -= 1
            attempt.outcome = "unavailable"
            raise ActorUnavailableError("the actor did not answer this time", None)
        await self._until_open_or_dead()
        if self.dead:
            attempt.outcome = "died"
            raise ActorDiedError()
        ids = request.input_ids or []
        text = self.brain.reply(ids)
        out = self.brain.chat.encode(text)
        attempt.outcome = "answered"
        return GenerateResult(
            replica_id=self.replica_id,
            text=text,
            output_ids=out,
            prompt_tokens=len(ids),
            cached_tokens=0,
            completion_tokens=len(out),
            finish_reason="stop",
            latency_s=0.001,
        )

    async def _release(self, session_id: str) -> bool:
        if self.dead:
            raise ActorDiedError()
        self.released.append(session_id)
        return True

    async def _health(self, timeout: float) -> dict[str, Any]:
        await self._until_open_or_dead()
        if self.dead:
            raise ActorDiedError()
        return {"ok": True}

    async def _capacity(self) -> dict[str, Any]:
        return {"max_total_num_tokens": KV}


def handle(replica_id: str, brain: Brain, **info: Any) -> ReplicaHandle:
    """The real handle on a fake actor (``handle(...).actor`` is the FakeActor)."""
    return ReplicaHandle(
        replica_id, FakeActor(replica_id, brain), {"max_total_num_tokens": KV, **info}
    )


def actor(h: ReplicaHandle | None) -> FakeActor:
    assert h is not None and isinstance(h.actor, FakeActor)
    return h.actor


@dataclass
class FakePool:
    """``ReplicaPool``'s interface for the fleet: hands out handles, starts new replicas
    (``add``; ``start_fails``: the next one does not come up), discards dead ones."""

    brain: Brain
    handles: dict[str, ReplicaHandle] = field(default_factory=dict)
    discarded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    start_fails: bool = False
    _next: int = 0

    def start(self, n: int) -> list[str]:
        ids = []
        for _ in range(n):
            rid = f"r{self._next}"
            self._next += 1
            self.handles[rid] = handle(rid, self.brain)
            ids.append(rid)
        return ids

    def __getitem__(self, replica_id: str) -> ReplicaHandle:
        return self.handles[replica_id]

    def add(self, n: int = 1) -> list[str]:  # (the fleet calls it in a thread)
        if self.start_fails:
            raise ExecutorError("the replica's engine did not start: out of memory")
        return self.start(n)

    def discard(self, replica_id: str) -> None:
        self.discarded.append(replica_id)
        self.handles.pop(replica_id, None)

    def remove(self, replica_id: str) -> None:
        self.removed.append(replica_id)
        self.handles.pop(replica_id, None)
