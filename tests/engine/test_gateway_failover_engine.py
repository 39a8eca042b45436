"""A replica SIGKILLed while gateway sessions have requests and streams in flight,
against a real ``python -m executor serve`` with 2 replicas (the session's r0 and a
victim of this test's own), through the official ``openai`` client.

Before the first token: the victim's engine is SIGSTOPped first, so the calls placed
on it hang there, then SIGKILLed. Every client call completes (on r0), and no stream
shows a token twice: a call that dies before its first token is run again whole.

Mid-reply: streams of long replies, the victim SIGKILLed once a stream on it has
sent some tokens; that stream goes on from the tokens it sent (on r0), token by
token, and ends once, with no more content chunks than tokens generated."""

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
            stream_options={"include_usage": True},
            extra_headers={"X-Session-ID": key},
        )
        chunks = [c async for c in raw.parse()]
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert [f for f in finishes if f] in (["stop"], ["length"])  # one finish
        texts = [t for c in chunks if c.choices and (t := c.choices[0].delta.content)]
        usage = chunks[-1].usage
        assert usage is not None and len(texts) <= usage.completion_tokens
        return raw.headers["x-replica-id"], ["".join(texts)]

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
    for replica, _ in results:
        assert replica == "r0"  # where every call ends: the survivor (nothing was sent)


def test_a_stream_cut_mid_reply_goes_on_on_the_survivor(setup: tuple[Server, list[int]]) -> None:
    srv, pids = setup
    client = openai.AsyncOpenAI(base_url=f"{srv.url}/v1", api_key=TOKEN, max_retries=0, timeout=300)
    max_tokens = 400
    killed = asyncio.Event()

    async def streamed(key: str) -> dict[str, Any]:
        raw = await client.chat.completions.with_raw_response.create(
            model="tiny",
            messages=ASK,
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Session-ID": key},
        )
        replica = raw.headers["x-replica-id"]  # where its first token came from
        before, after, chunks = 0, 0, []
        async for c in raw.parse():
            chunks.append(c)
            if c.choices and c.choices[0].delta.content:
                if killed.is_set():
                    after += 1
                else:
                    before += 1
                    if replica != "r0" and before == 5:
                        signal_all(pids, signal.SIGKILL)  # mid-reply, 5 chunks sent
                        killed.set()
        finishes = [f for c in chunks if c.choices and (f := c.choices[0].finish_reason)]
        return {
            "replica": replica,
            "before": before,
            "after": after,
            "finishes": finishes,
            "usage": chunks[-1].usage,
        }

    async def run() -> list[dict[str, Any]]:
        return await asyncio.wait_for(
            asyncio.gather(*(streamed(f"mid-{i}") for i in range(4))), 240
        )

    results = asyncio.run(run())
    cut = [r for r in results if r["replica"] != "r0"]
    assert cut, f"no stream began on the victim: {results}"
    for r in cut:
        print(
            f"cut stream: {r['before']} chunks before the kill, {r['after']} after, "
            f"{r['usage'].completion_tokens} tokens, finish {r['finishes']}"
        )
    for r in results:
        assert len(r["finishes"]) == 1  # each stream ends once, without an error
        assert r["before"] + r["after"] <= r["usage"].completion_tokens  # no token twice
    for r in cut:
        assert r["after"] > 0  # it went on after the kill, on the survivor
        if r["finishes"] == ["length"]:
            assert r["usage"].completion_tokens == max_tokens  # the rest, not a restart
    rows = {s["id"]: s for s in srv.get("/v1/sessions")["data"]}
    assert all(rows[f"mid-{i}"]["replica_id"] == "r0" for i in range(4))
