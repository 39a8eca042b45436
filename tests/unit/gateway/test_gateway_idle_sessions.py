"""10,000 idle sessions: memory stays bounded. Keyed sessions, one tiny request each,
through the whole gateway path on the real scheduler core (stand-in replica, no
engine): the session table stays at its cap (4096, the least recently used idle one
evicted), the core holds a task only for a live session, and the process's RSS
grows by a bounded amount between the table filling and 10,000 sessions later. Then
the idle TTL ends every one of them. And idle sessions do not lock new ones out of a
small replica's KV: a new one buys room from them (rent or buy, on the
dispatcher's ``Tick``, as no other event comes)."""

from __future__ import annotations

import asyncio
from typing import Any

import psutil
from test_gateway_admission import Chat, Replica, Services, tokenizer  # noqa: F401

from executor.dispatch import Dispatcher
from executor.fleet.registry import ReplicaRegistry
from executor.gateway import Gateway, GatewayConfig
from executor.telemetry import Telemetry
from scheduler import ReplicaJoined, SchedulerCore

ASK = [{"role": "user", "content": "hi"}]
CAP = 4096
SESSIONS = 10_000
RSS_GROWTH_BOUND = 16 * 2**20  # bytes, over the last 5,904 sessions (4.4 MiB in one run)
# KV for every idle session's retained prefix: this test is about the gateway's
# memory, not KV (the last one is).
KV_TOKENS = 10**8


def make(tok: Any, kv_tokens: int = KV_TOKENS) -> tuple[Gateway, Replica, Dispatcher]:
    dispatcher = Dispatcher(SchedulerCore())
    registry = ReplicaRegistry()
    replica = Replica("r0", tok)
    registry.add(replica)  # type: ignore[arg-type]
    dispatcher.send(ReplicaJoined(dispatcher.now(), "r0", kv_tokens, max_running_calls=8))
    services = Services("tiny", dispatcher, registry, Chat(tok), Telemetry("none"))
    return Gateway(lambda: services, GatewayConfig()), replica, dispatcher


def test_ten_thousand_idle_sessions_keep_the_table_at_its_cap(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        now = [0.0]
        gw, replica, d = make(tokenizer)
        gw.sessions.clock = lambda: now[0]
        assert gw.config.max_sessions == CAP  # the default
        body = {"model": "tiny", "messages": ASK, "max_tokens": 2}
        rss = psutil.Process().memory_info().rss
        for i in range(SESSIONS):
            now[0] += 0.001
            await gw.chat(body, {"X-Session-ID": f"idle-{i}"})
            replica.requests.clear()  # (the stand-in's log, not the gateway's memory)
            if i + 1 == CAP:
                rss = psutil.Process().memory_info().rss  # the table just filled
        grown = psutil.Process().memory_info().rss - rss
        assert len(gw.sessions) == CAP
        assert gw.sessions.ended == SESSIONS - CAP  # each one past the cap evicted one
        assert gw.sessions.get("idle-0") is None  # the least recently used went first
        assert gw.sessions.get(f"idle-{SESSIONS - 1}") is not None
        assert d.core.live_tasks == CAP  # an evicted session's core task ended too
        assert grown < RSS_GROWTH_BOUND, f"RSS grew {grown / 2**20:.1f} MiB"
        now[0] += 601.0  # past the idle TTL
        assert gw.sessions.sweep() == CAP
        assert len(gw.sessions) == 0 and d.core.live_tasks == 0
        print(f"RSS growth over the last {SESSIONS - CAP} sessions: {grown / 2**20:.1f} MiB")

    asyncio.run(run())


def test_a_new_session_buys_room_from_idle_ones(tokenizer: Any) -> None:  # noqa: F811
    """A 4,096-token replica (3,891 reservable): idle sessions (13 tokens each) hold
    their KV in a tool wait until it is full; the next new session waits, and with no other event
    to come, the dispatcher's Tick at ``wake_at`` releases idle sessions' KV
    (``MAKE_ROOM``) for it: a reply within a fraction of the 30 s queue bound. Each idle
    session is paused at most 3 times, so the next dozen still get in."""

    async def run() -> None:
        gw, _replica, d = make(tokenizer, kv_tokens=4096)
        body = {"model": "tiny", "messages": ASK, "max_tokens": 2}
        n = 0
        while sum(r.kv_reserved_tokens for r in d.core.replicas()) < 3_891 - 13 and n < 500:
            await asyncio.wait_for(gw.chat(body, {"X-Session-ID": f"s{n}"}), 5.0)
            n += 1
        assert n < 500 and d.core.live_tasks == n  # the pool is full of idle sessions
        bought = d.core.stats().counters.get("work_conserving_admits", 0)
        loop = asyncio.get_running_loop()
        for i in range(12):
            t0 = loop.time()
            # (a GatewayError 429 after queue_wait_s, here a timeout, without the Tick)
            await asyncio.wait_for(gw.chat(body, {"X-Session-ID": f"new{i}"}), 5.0)
            assert loop.time() - t0 < 2.0
        counters = d.core.stats().counters
        assert counters.get("work_conserving_admits", 0) - bought >= 12, counters

    asyncio.run(run())
