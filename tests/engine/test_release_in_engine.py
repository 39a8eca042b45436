"""Release in the engine (``ReplicaConfig.release_in_engine``, SGLang's session radix
cache, on the CPU backend): a released task's history is evicted before a retained
one, even when it was used last; without it the engine's LRU does the opposite. And
through the runtime: every call carries its task's session, warm calls stay warm, and
the task's end closes its session."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def releasing(pool: Any, replica_config: Any) -> Iterator[Any]:
    """One more replica of the session pool, tagging KV by task."""
    (rid,) = pool.add(1, config=replica_config.model_copy(update={"release_in_engine": True}))
    try:
        yield pool[rid]
    finally:
        pool.remove(rid)


def histories(seed: int) -> tuple[list[int], list[int], list[int]]:
    rng = random.Random(seed)

    def seq(n: int) -> list[int]:
        return [rng.randrange(100, 1000) for _ in range(n)]

    return seq(3000), seq(3000), seq(3500)  # two tasks, then pressure (8,192-token pools)


async def cached(handle: Any, ids: list[int], session: str | None = None) -> int:
    request: dict[str, Any] = {"input_ids": ids, "sampling": {"max_new_tokens": 2}}
    if session is not None:
        request["session_id"] = session
    return int((await handle.agenerate(request)).cached_tokens)


def test_a_released_history_is_evicted_first(releasing: Any, pool: Any) -> None:
    a, b, c = histories(1)

    async def scenario(handle: Any, release: bool) -> tuple[int, int]:
        await handle.aflush_cache()
        await cached(handle, b, "b")  # b first (older) ...
        await cached(handle, a, "a")  # ... a last (the most recent)
        if release:
            assert await handle.arelease("a")  # the core released a
        await cached(handle, c)  # pressure: room for 3,500 more tokens
        return await cached(handle, a + [7], "a"), await cached(handle, b + [7], "b")

    a_after, b_after = asyncio.run(scenario(releasing, release=True))
    assert a_after == 0 and b_after == len(b)  # released: evicted; retained: kept whole
    lru_a, lru_b = asyncio.run(scenario(pool["r0"], release=False))
    assert lru_a == len(a) and lru_b < len(b)  # plain LRU: the retained one goes
    assert not asyncio.run(releasing.arelease("nobody"))  # no session, nothing to close
    assert asyncio.run(releasing.arelease("a")) and asyncio.run(releasing.arelease("b"))
    assert releasing.sessions() == []


def test_the_runtime_tags_calls_and_closes_the_session(
    releasing: Any, pool: Any, tmp_path: Path, counter: Path
) -> None:
    from agent_tools import marking_agent

    from executor import Executor

    seen: set[str] = set()

    async def run() -> Any:
        ex = Executor(
            "tiny",
            pool=pool,
            replica_ids=[releasing.replica_id],
            journal=tmp_path / "j.sqlite",
            sandbox="local",
        )
        await ex.start()
        try:
            handle = ex.submit(marking_agent(), "Mark the records.")
            while not handle.done():  # its calls carry its session while it runs
                seen.update(await asyncio.to_thread(releasing.sessions))
                await asyncio.sleep(0.2)
            result = await handle.future
            for _ in range(50):  # the close is sent after the task's end
                if result.task_id not in releasing.sessions():
                    break
                await asyncio.sleep(0.1)
            return result
        finally:
            await ex.close()

    result = asyncio.run(run())
    assert result.status == "step_limit", result.error
    assert all(c.replica_id == releasing.replica_id for c in result.calls)
    assert all(c.cached_tokens > 0 for c in result.calls[1:])  # warm, with sessions on
    assert result.task_id in seen  # tagged while it ran ...
    assert result.task_id not in releasing.sessions()  # ... closed at its end
    assert not asyncio.run(releasing.arelease(result.task_id))  # (so nothing to close now)


def test_the_option_reaches_the_engine() -> None:
    from executor.cli.main import build_parser
    from executor.cli.tasks import executor_config
    from executor.fleet.config import ReplicaConfig

    assert ReplicaConfig(release_in_engine=True).engine_kwargs("m", "cpu", 1)[
        "enable_session_radix_cache"
    ]
    assert "enable_session_radix_cache" not in ReplicaConfig().engine_kwargs("m", "cpu", 1)
    args = build_parser().parse_args(["run", "--model", "tiny", "--release-in-engine", "x"])
    shape = executor_config(args).replica
    assert shape is not None and shape.release_in_engine
    plain = executor_config(build_parser().parse_args(["run", "--model", "tiny", "x"])).replica
    assert plain is not None and not plain.release_in_engine
