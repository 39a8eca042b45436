"""executor/warmup.py: the core's WarmUp applied through a dispatcher on a (fake)
replica: the task's prompt so far, one new token, the report back; cancelled by a
release; a task whose prompt is unknown gives its room back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from executor.agent import Agent
from executor.dispatch import Dispatcher
from executor.fleet.generation import GenerateRequest
from executor.fleet.pool import ReplicaPool
from executor.fleet.registry import ReplicaRegistry
from executor.runtime import Executor
from executor.warmup import Warmer
from scheduler import (
    CallFinished,
    ReleaseCause,
    ReleaseKV,
    ReplicaJoined,
    RunCall,
    SchedulerConfig,
    SchedulerCore,
    TaskArrived,
    TaskFinished,
    ToolFinished,
    ToolStarted,
    WarmedUp,
    WarmUp,
)


class FakeReplica:
    def __init__(self, replica_id: str, block: bool = False) -> None:
        self.replica_id = replica_id
        self.requests: list[GenerateRequest] = []
        self.gate = asyncio.Event()
        if not block:
            self.gate.set()

    async def agenerate(self, request: GenerateRequest) -> Any:
        self.requests.append(request)
        await self.gate.wait()
        return object()


def _setup(block: bool = False) -> tuple[Dispatcher, Warmer, FakeReplica, list[Any]]:
    cfg = SchedulerConfig(
        warm_up=True,
        retention_ratio=0.0,
        max_running_calls=2,
        kv_headroom=0.0,
        growth_prior_tokens=0,
        prefill_tokens_per_s=10_000.0,
    )
    released: list[tuple[str, str]] = []
    d = Dispatcher(SchedulerCore(cfg), clock=lambda: 0.0, on_release=lambda r, t: None)
    d.on_release = lambda r, t: released.append((r, t))
    replicas = ReplicaRegistry()
    fake = FakeReplica("r0", block)
    replicas.add(fake)  # type: ignore[arg-type]
    w = Warmer(replicas, d)
    w.attach()
    log: list[Any] = []
    send = d.send
    d.send = lambda e: log.extend(send(e)) or log  # type: ignore[method-assign]
    # a (10K tokens) is paused in its 10 s tool for b; b runs and ends
    d.send(ReplicaJoined(0.0, "r0", 20_000))
    d.send(TaskArrived(0.0, "a", "x", 3, prompt_tokens=8_000))
    d.send(CallFinished(1.0, "a", "r0", 8_000, 0, 2_000, 1.0))
    d.send(TaskArrived(1.5, "b", "x", 3, prompt_tokens=12_000))
    d.send(ToolStarted(2.0, "a", "slow", expected_s=10.0))
    d.send(CallFinished(3.0, "b", "r0", 12_000, 0, 10, 1.0))
    d.send(TaskFinished(4.0, "b"))
    log.append(released)
    return d, w, fake, log


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_warm_up_prefills_the_prompt_so_far_and_the_next_call_is_warm() -> None:
    async def main() -> None:
        d, w, fake, log = _setup()
        w.remember("a", lambda: list(range(10_000)))
        d.send(WarmedUp(10.0, "zz", "r0"))  # any event at 10 s: a's warm-up is due
        assert WarmUp("a", "r0", 10_000) in log
        await _settle()
        [req] = fake.requests
        assert req.input_ids == list(range(10_000)) and req.session_id == "a"
        assert req.sampling.max_new_tokens == 1
        assert w.warmed == 1 and d.core.stats().counters["warm_up_done"] == 1
        d.send(ToolFinished(12.0, "a"))
        assert RunCall("a", "r0", cold=False) in log

    asyncio.run(main())


def test_a_release_cancels_the_warm_up_and_still_reaches_on_release() -> None:
    async def main() -> None:
        d, w, fake, log = _setup(block=True)
        released = log[-1]
        w.remember("a", lambda: [1, 2, 3])
        d.send(WarmedUp(10.0, "zz", "r0"))
        await _settle()
        assert len(fake.requests) == 1 and w.started == 1
        d.send(TaskArrived(10.5, "c", "x", 3, prompt_tokens=15_000))  # needs a's room
        assert ReleaseKV("a", "r0", 10_000, ReleaseCause.WARM_UP_CANCELLED) in log
        assert ("r0", "a") in released
        await _settle()
        assert w.warmed == 0 and "a" not in w._running

    asyncio.run(main())


def test_an_unknown_prompt_gives_the_room_back() -> None:
    async def main() -> None:
        d, w, fake, log = _setup()
        d.send(WarmedUp(10.0, "zz", "r0"))
        assert WarmUp("a", "r0", 10_000) in log
        await _settle()
        assert not fake.requests and w.failed == 1
        assert ReleaseKV("a", "r0", 10_000, ReleaseCause.WARM_UP_CANCELLED) in log

    asyncio.run(main())


def test_an_executor_applies_warm_ups_with_each_task_s_transcript(tmp_path: Path) -> None:
    """The real executor attaches a warmer: the dispatcher's WarmUp goes to it, each
    task's transcript so far is known while it runs (its first prompt before its first
    call) and forgotten when it ends."""
    pool = ReplicaPool(0)  # no replica: the task waits at admission, never calls

    async def main() -> None:
        ex = Executor("tiny", pool=pool, sandbox="local", journal=tmp_path / "j.sqlite")
        await ex.start()
        try:
            warmer = ex.warmer
            assert warmer is not None and ex.dispatcher.on_warm_up == warmer.apply
            handle = ex.submit(Agent(name="a", model="tiny", tools=[]), "goal", task_id="t1")
            await asyncio.sleep(0.05)
            prompt = warmer._prompts["t1"]()
            assert prompt and prompt == ex.journal.get("t1").prompt_ids
            handle.future.cancel()
            assert (await handle.result()).error == "cancelled"
            assert "t1" not in warmer._prompts
        finally:
            await ex.close()

    asyncio.run(main())
