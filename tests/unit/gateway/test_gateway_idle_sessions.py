"""10,000 idle sessions: memory stays bounded. Keyed sessions, one tiny request each,
through the whole gateway path on the real scheduler core (stand-in replica, no
engine): the session table stays at its cap (4096, the least recently used idle one
evicted), the core holds a task only for a live session, and the process's RSS
grows by a bounded amount between the table filling and 10,000 sessions later. Then
the idle TTL ends every one of them."""

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
# KV for every idle session's retained prefix: the core keeps a session's KV in its
# tool wait and (today) does not pause idle ones to admit a new one, so on a small
# replica new sessions would wait (429) before the table fills; this test is about
# the gateway's memory, not KV.
KV_TOKENS = 10**8


def make(tok: Any) -> tuple[Gateway, Replica, Dispatcher]:
    dispatcher = Dispatcher(SchedulerCore())
    registry = ReplicaRegistry()
    replica = Replica("r0", tok)
    registry.add(replica)  # type: ignore[arg-type]
    dispatcher.send(ReplicaJoined(dispatcher.now(), "r0", KV_TOKENS, max_running_calls=8))
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
