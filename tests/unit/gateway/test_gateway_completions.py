"""``POST /v1/completions`` through the official ``openai`` client, in-process over
ASGI: the gateway's routes on the real scheduler core with a stand-in replica (no
engine). Text and token-id prompts, sampling fields passed to the replica, usage
with cached tokens, streaming, session identity from the chat carriers, and
OpenAI-shaped refusals the client raises as its own exception types."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from test_gateway_admission import make, tokenizer  # noqa: F401  (the fixture)

from executor.gateway.routes import install


def client_for(tok: Any) -> tuple[openai.AsyncOpenAI, Any, Any]:
    gw, replica, _d = make(tok)
    app = FastAPI()
    install(app, gw, None)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    client = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="-", http_client=http)
    return client, gw, replica


def test_completions_text_ids_stream_and_sessions(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        client, gw, replica = client_for(tokenizer)
        out = await client.completions.create(
            model="tiny",
            prompt="Once upon a time",
            max_tokens=5,
            temperature=0.5,
            top_p=0.9,
            stop=["\n"],
            seed=7,
            extra_headers={"X-Session-ID": "c1"},
        )
        assert out.object == "text_completion" and out.choices[0].text == "fine"
        assert out.choices[0].finish_reason == "stop"
        assert out.usage is not None and out.usage.completion_tokens > 0
        details = out.usage.prompt_tokens_details
        assert details is not None and details.cached_tokens == 0
        sent = replica.requests[-1]
        assert sent.input_ids == list(tokenizer.encode("Once upon a time"))
        s = sent.sampling
        assert (s.max_new_tokens, s.temperature, s.top_p, s.stop, s.sampling_seed) == (
            5,
            0.5,
            0.9,
            ["\n"],
            7,
        )
        session = gw.sessions.get("c1")
        assert session is not None and session.calls == 1  # a keyed session lives on
        again = await client.completions.create(
            model="tiny", prompt=[1, 2, 3], max_tokens=3, extra_body={"prompt_cache_key": "c1"}
        )
        assert replica.requests[-1].input_ids == [1, 2, 3] and again.choices[0].text == "fine"
        assert session.calls == 2  # the same session: prompt_cache_key is a carrier
        chunks = [
            c
            async for c in await client.completions.create(
                model="tiny",
                prompt="Hi",
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        ]
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == "fine" and chunks[-1].usage is not None
        assert len(gw.sessions) == 1  # no identity: a one-call session, ended

    asyncio.run(run())


def test_completions_refusals_are_openai_errors(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        client, gw, _replica = client_for(tokenizer)
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="other", prompt="x")
        for bad in (
            {"prompt": [10**9]},
            {"prompt": ""},
            {"prompt": ["a", "b"]},
            {"prompt": "x", "n": 2},
            {"prompt": "x", "echo": True},
            {"prompt": "x", "max_tokens": 10**6},
            {"prompt": "x", "max_tokens": -1},
        ):
            with pytest.raises(openai.BadRequestError):
                await client.completions.create(model="tiny", **bad)  # type: ignore[call-overload]
        assert len(gw.sessions) == 0  # refused requests leave no session

    asyncio.run(run())
