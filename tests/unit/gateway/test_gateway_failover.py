"""A replica lost while 4 sessions have requests and streams in flight (engine-free:
the real scheduler core and dispatcher, two stand-in replicas, the official
``openai`` client over ASGI). The replica holding the calls is declared dead (what a
SIGKILLed engine's health check or actor death reports); every client call completes
on the other replica, and no stream shows a token twice.

Streams go token by token (``executor/gateway/streaming.py``): a call that dies
before its first token is run again whole on the core's next placement
(``Gateway._generate`` -> ``Dispatcher.after_replica_death``); one that dies mid-reply
goes on on the survivor from the tokens already sent (its prompt + those ids, the
rest of ``max_tokens``), so the client sees each token once."""

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


def two_replicas(
    tokenizer: Any,  # noqa: F811
) -> tuple[Dispatcher, Replica, Replica, Gateway, openai.AsyncOpenAI]:
    """The gateway on the real core with r0 joined (r1 registered, joining later),
    and the official client over ASGI."""
    d = Dispatcher(SchedulerCore())
    registry = ReplicaRegistry()
    doomed, spare = Replica("r0", tokenizer), Replica("r1", tokenizer)
    for r in (doomed, spare):
        registry.add(r)  # type: ignore[arg-type]
    d.send(ReplicaJoined(d.now(), "r0", 8192, max_running_calls=8))
    services = Services("tiny", d, registry, Chat(tokenizer), Telemetry("none"))
    gw = Gateway(lambda: services, GatewayConfig(queue_wait_s=20))
    app = FastAPI()
    install(app, gw, None)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    client = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="-", http_client=http)
    return d, doomed, spare, gw, client


def test_four_sessions_survive_a_lost_replica(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        d, doomed, spare, gw, client = two_replicas(tokenizer)
        doomed.gate.clear()  # r0 holds every call it gets, as a dying engine would

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
        assert len(spare.requests) == 4  # each call moved once, whole
        for r in spare.requests:
            assert r.input_ids == doomed.requests[0].input_ids  # the same prompt again
        rows = {s.key: s for s in gw.sessions.sessions()}
        assert {k: s.calls for k, s in rows.items()} == {f"s{i}": 1 for i in range(4)}

    asyncio.run(run())


def test_a_stream_cut_mid_reply_goes_on_from_its_sent_tokens(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        d, doomed, spare, gw, client = two_replicas(tokenizer)
        doomed.reply, doomed.hold_at = "one two three four five six", 3
        doomed.gate.clear()  # r0 streams three tokens, then hangs: a dying engine
        spare.reply = " four five six"  # the survivor's continuation

        async def streamed() -> tuple[Any, list[Any]]:
            raw = await client.chat.completions.with_raw_response.create(
                model="tiny",
                messages=ASK,
                max_tokens=20,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"X-Session-ID": "s"},
            )
            return raw.headers, [c async for c in raw.parse()]

        call = asyncio.ensure_future(streamed())
        for _ in range(500):  # three tokens out of r0, the fourth held
            if len(doomed.streamed) == 3:
                break
            await asyncio.sleep(0.01)
        assert len(doomed.streamed) == 3 and not call.done()
        d.send(ReplicaJoined(d.now(), "r1", 8192, max_running_calls=8))
        assert d.replica_died("r0", "SIGKILL", replace=False)
        headers, chunks = await asyncio.wait_for(call, 20)
        texts = [c.choices[0].delta.content for c in chunks if c.choices]
        sent = tokenizer.decode(doomed.streamed)
        assert sent == "one two three"
        assert "".join(t or "" for t in texts) == sent + " four five six"  # each token once
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert headers["x-replica-id"] == "r0"  # where the stream began
        (moved,) = spare.requests
        assert moved.input_ids == [*doomed.requests[0].input_ids, *doomed.streamed]
        assert moved.sampling.max_new_tokens == 20 - 3
        usage = chunks[-1].usage
        rest = len(tokenizer.encode(" four five six", add_special_tokens=False))
        assert usage.completion_tokens == 3 + rest
        assert usage.prompt_tokens == len(doomed.requests[0].input_ids)
        # the session's transcript is the whole reply as generated: the next call reuses it
        (row,) = gw.sessions.sessions()
        assert row.last is not None and row.calls == 1
        spare_ids = tokenizer.encode(" four five six", add_special_tokens=False)
        assert list(row.last.ids) == [*moved.input_ids, *spare_ids]

    asyncio.run(run())
