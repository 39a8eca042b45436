"""A replica SIGKILLed while 4 gateway sessions have requests and streams in flight,
against a real ``python -m executor serve`` with 2 replicas (the session's r0 and a
victim of this test's own), through the official ``openai`` client.

The victim's engine is SIGSTOPped first, so the calls placed on it hang there (some
calls do not complete while it is stopped: they are in flight on it), then
SIGKILLed. Every client call completes (on r0), and no stream shows a token twice:
the gateway streams after the completion, so a call that dies with its replica is
retried whole before the first byte is sent (each stream: one role chunk, the text
in one chunk, one finish)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from chaos_tools import engine_pids, signal_all
from service_process import TOKEN, Server

pytestmark = pytest.mark.engine

ASK = [{"role": "user", "content": "Tell me a long story about a lighthouse."}]


@pytest.fixture
def setup(pool: Any, tmp_path: Path) -> Iterator[tuple[Server, list[int]]]:
    victim = pool.add(1)[0]
    pids = engine_pids(pool, victim)
    srv = Server(pool, tmp_path)
    srv.cmd[srv.cmd.index(pool.actor_name("r1"))] = pool.actor_name(victim)
    try:
        srv.start()
        yield srv, pids
    finally:
        signal_all(pids, signal.SIGKILL)
        srv.stop()
        pool.remove(victim)


def test_four_sessions_survive_a_sigkilled_replica(setup: tuple[Server, list[int]]) -> None:
    srv, pids = setup
    client = openai.AsyncOpenAI(base_url=f"{srv.url}/v1", api_key=TOKEN, max_retries=0, timeout=300)

    async def plain(key: str) -> tuple[str, list[str]]:
        raw = await client.chat.completions.with_raw_response.create(
            model="tiny", messages=ASK, max_tokens=48, extra_headers={"X-Session-ID": key}
        )
        out = raw.parse()
        return raw.headers["x-replica-id"], [out.choices[0].message.content or ""]

    async def streamed(key: str) -> tuple[str, list[str]]:
        raw = await client.chat.completions.with_raw_response.create(
            model="tiny",
            messages=ASK,
            max_tokens=48,
            stream=True,
            extra_headers={"X-Session-ID": key},
        )
        chunks = [c async for c in raw.parse()]
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert [f for f in finishes if f] in (["stop"], ["length"])  # one finish
        texts = [c.choices[0].delta.content for c in chunks if c.choices]
        return raw.headers["x-replica-id"], [t for t in texts if t]

    async def run() -> list[tuple[str, list[str]]]:
        signal_all(pids, signal.SIGSTOP)  # calls placed on the victim hang there
        calls = [
            asyncio.ensure_future(f(f"fo-{i}"))
            for i, f in enumerate([plain, streamed, plain, streamed])
        ]
        await asyncio.sleep(8)
        hung = sum(not c.done() for c in calls)
        assert hung > 0, "no call was in flight on the victim"
        signal_all(pids, signal.SIGKILL)
        started = time.monotonic()
        done = await asyncio.wait_for(asyncio.gather(*calls), 240)
        took = time.monotonic() - started
        print(f"{hung} calls in flight on the victim; all done {took:.1f} s after the kill")
        return done

    results = asyncio.run(run())
    for replica, texts in results:
        assert replica == "r0"  # where every call ends: the survivor
        assert len(texts) <= 1  # the reply's text once (a stream: one content chunk)
