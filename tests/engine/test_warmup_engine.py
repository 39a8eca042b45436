"""executor/warmup.py on a real SGLang replica: a warm-up (a one-token generate of the
task's prompt so far) leaves the prompt cached, so the task's next call prefills only
what is new."""

from __future__ import annotations

import asyncio

import pytest

from executor.dispatch import Dispatcher
from executor.fleet.registry import ReplicaRegistry
from executor.warmup import Warmer
from scheduler import SchedulerCore, WarmUp

pytestmark = pytest.mark.engine

PROMPT = list(reversed(range(100, 1100)))  # 1,000 token ids inside the tiny vocabulary


def test_a_warm_up_leaves_the_prompt_cached_for_the_next_call(pool) -> None:
    handle = pool["r0"]
    assert handle.flush_cache()
    replicas = ReplicaRegistry()
    replicas.add(handle)

    async def main() -> None:
        d = Dispatcher(SchedulerCore())
        w = Warmer(replicas, d)
        w.attach()
        w.remember("t", lambda: PROMPT)
        w.apply(WarmUp("t", "r0", len(PROMPT)))
        for _ in range(600):
            if not w._running:
                break
            await asyncio.sleep(0.05)
        assert w.warmed == 1 and w.failed == 0
        call = await handle.agenerate(
            {"input_ids": PROMPT + [7] * 20, "sampling": {"max_new_tokens": 1}}
        )
        assert call.prompt_tokens == len(PROMPT) + 20
        assert call.cached_tokens >= len(PROMPT)

    asyncio.run(main())
