"""A replica lost while 4 sessions have requests and streams in flight (engine-free:
the real scheduler core and dispatcher, two stand-in replicas, the official
``openai`` client over ASGI). The replica holding the calls is declared dead (what a
SIGKILLed engine's health check or actor death reports); every client call completes
on the other replica, and no stream shows a token twice.

Why a stream cannot repeat a token today: the gateway streams after the completion
(``routes.chunks`` builds the SSE lines from a finished reply), so a call that dies
with its replica is retried whole on the core's next placement (``Gateway._generate``
-> ``Dispatcher.after_replica_death``) before the first byte is sent; the client sees
only the reply that finished."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
from fastapi import FastAPI
from test_gateway_admission import Chat, Replica, Services, tokenizer  # noqa: F401

from executor.dispatch import Dispatcher
from executor.fleet.registry import ReplicaRegistry
from executor.gateway import Gateway, GatewayConfig
from executor.gateway.routes import install
from executor.telemetry import Telemetry
from scheduler import ReplicaJoined, SchedulerCore

ASK = [{"role": "user", "content": "hello"}]


def test_four_sessions_survive_a_lost_replica(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        d = Dispatcher(SchedulerCore())
        registry = ReplicaRegistry()
        doomed, spare = Replica("r0", tokenizer), Replica("r1", tokenizer)
        for r in (doomed, spare):
            registry.add(r)  # type: ignore[arg-type]
        d.send(ReplicaJoined(d.now(), "r0", 8192, max_running_calls=8))
        doomed.gate.clear()  # r0 holds every call it gets, as a dying engine would
        services = Services("tiny", d, registry, Chat(tokenizer), Telemetry("none"))
        gw = Gateway(lambda: services, GatewayConfig(queue_wait_s=20))
        app = FastAPI()
        install(app, gw, None)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        client = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="-", http_client=http)

        async def plain(key: str) -> str:
            out = await client.chat.completions.create(
                model="tiny", messages=ASK, max_tokens=4, extra_headers={"X-Session-ID": key}
            )
            return out.choices[0].message.content or ""

        async def streamed(key: str) -> list[str]:
            stream = await client.chat.completions.create(
                model="tiny",
                messages=ASK,
                max_tokens=4,
                stream=True,
                extra_headers={"X-Session-ID": key},
            )
            return [c.choices[0].delta.content or "" async for c in stream if c.choices]

        calls = [
            asyncio.ensure_future(f(f"s{i}"))
            for i, f in enumerate([plain, streamed, plain, streamed])
        ]
        for _ in range(200):  # all four in flight on r0
            if len(doomed.requests) == 4:
                break
            await asyncio.sleep(0.01)
        assert len(doomed.requests) == 4 and not any(c.done() for c in calls)
        d.send(ReplicaJoined(d.now(), "r1", 8192, max_running_calls=8))
        assert d.replica_died("r0", "SIGKILL", replace=False)
        results = await asyncio.wait_for(asyncio.gather(*calls), 20)
        assert results[0] == results[2] == "fine"
        for chunks in (results[1], results[3]):
            assert "".join(chunks) == "fine"  # the reply once: no token twice
            assert [c for c in chunks if c] == ["fine"]
        assert len(spare.requests) == 4  # each call moved once, whole
        for r in spare.requests:
            assert r.input_ids == doomed.requests[0].input_ids  # the same prompt again
        rows = {s.key: s for s in gw.sessions.sessions()}
        assert {k: s.calls for k, s in rows.items()} == {f"s{i}": 1 for i in range(4)}

    asyncio.run(run())
