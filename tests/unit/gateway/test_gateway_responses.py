"""``POST /v1/responses`` (the stateless subset) through the official ``openai`` client
and openai-agents' default model, in-process over ASGI: the gateway's routes on the
real scheduler core with a stand-in replica that answers scripted text (no engine).

Every body and stream event is also validated against the ``openai`` package's own
pydantic models (the client itself builds them without validating)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from test_gateway_admission import make, tokenizer  # noqa: F401  (the fixture)

from executor.gateway.routes import install

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
    "required": ["city"],
}
TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def app_for(tok: Any) -> tuple[httpx.AsyncClient, openai.AsyncOpenAI, Any, Any, list[str]]:
    """The app, an httpx client of it, the openai client, the gateway, the replica and
    the paths asked for."""
    gw, replica, _d = make(tok, tool_call_parser="qwen25")
    app = FastAPI()
    install(app, gw, None)
    paths: list[str] = []

    async def record(request: httpx.Request) -> None:
        paths.append(request.url.path)

    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gw",
        event_hooks={"request": [record]},
    )
    client = openai.AsyncOpenAI(base_url="http://gw/v1", api_key="-", http_client=http)
    return http, client, gw, replica, paths


def sse_events(text: str) -> list[Any]:
    """The stream's events, each validated as the ``openai`` package's event type
    named by its ``event:`` line."""
    out = []
    for block in text.strip().split("\n\n"):
        kind, data = block.split("\n", 1)
        event = EVENTS.validate_python(json.loads(data.removeprefix("data: ")))
        assert kind == f"event: {event.type}"
        out.append(event)
    return out


def test_text_reply_instructions_usage_and_session(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        http, client, gw, replica, _paths = app_for(tokenizer)
        resp = await client.responses.create(
            model="tiny",
            instructions="Be brief.",
            input="hello",
            max_output_tokens=8,
            temperature=0.5,
            extra_headers={"X-Session-ID": "r1"},
        )
        assert resp.status == "completed" and resp.output_text == "fine"
        assert resp.usage is not None and resp.usage.input_tokens_details.cached_tokens == 0
        assert resp.usage.output_tokens == len(tokenizer.encode("fine", add_special_tokens=False))
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ]
        sent = replica.requests[-1]
        assert sent.input_ids == gw.renderer.prompt(messages, None)
        assert (sent.sampling.max_new_tokens, sent.sampling.temperature) == (8, 0.5)
        session = gw.sessions.get("r1")
        assert session is not None and session.calls == 1
        raw = await http.post(
            "/v1/responses", json={"model": "tiny", "input": "hello", "prompt_cache_key": "r1"}
        )
        assert raw.status_code == 200 and raw.headers["X-Session-ID"] == "r1"
        body = Response.model_validate(raw.json())  # the openai package's own model
        assert body.store is False and body.output[0].type == "message"
        assert session.calls == 2  # prompt_cache_key names the same session

    asyncio.run(run())


def test_a_tool_call_round_trip_reuses_the_prefix_exactly(tokenizer: Any) -> None:  # noqa: F811
    """The reply's function_call item, sent back as input with its output, continues
    the session from the ids it generated (``X-Prefix-Reuse: exact``)."""

    async def run() -> None:
        http, client, gw, replica, _paths = app_for(tokenizer)
        replica.reply = CALL
        ask: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        first = await client.responses.with_raw_response.create(
            model="tiny",
            input=ask,
            tools=TOOLS,
            tool_choice="required",
            extra_headers={"X-Session-ID": "t1"},
        )
        resp = first.parse()
        Response.model_validate(json.loads(first.content))
        (call,) = resp.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id
        assert replica.requests[-1].sampling.structural_tag  # the call was constrained
        replica.reply = "fine"
        history = [*ask, *(i.model_dump(exclude_none=True) for i in resp.output)]
        history.append({"type": "function_call_output", "call_id": call.call_id, "output": "sun"})
        second = await client.responses.with_raw_response.create(
            model="tiny", input=history, tools=TOOLS, extra_headers={"X-Session-ID": "t1"}
        )
        assert second.headers["X-Prefix-Reuse"] == "exact"
        assert second.parse().output_text == "fine"
        prompt, again = replica.requests[0].input_ids, replica.requests[1].input_ids
        out = tokenizer.encode(CALL, add_special_tokens=False)
        assert again[: len(prompt) + len(out)] == prompt + out  # the ids as generated
        # the same conversation sent as chat completions renders to the same prompt
        messages = [
            *ask,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": "sun"},
        ]
        chat = await client.chat.completions.with_raw_response.create(
            model="tiny",
            messages=messages,
            tools=[
                {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
            ],
            extra_headers={"X-Session-ID": "t2", "X-Exact-Reuse": "off"},
        )
        assert chat.headers["X-Prefix-Reuse"] == "rendered"
        rendered = replica.requests[-1].input_ids
        suffix = again[len(prompt) + len(out) :]
        assert rendered[-len(suffix) :] == suffix  # the new turn is the chat path's

    asyncio.run(run())


def test_streams_are_the_responses_event_sequence(tokenizer: Any) -> None:  # noqa: F811
    async def run() -> None:
        http, client, _gw, replica, _paths = app_for(tokenizer)
        async with http.stream(
            "POST", "/v1/responses", json={"model": "tiny", "input": "hi", "stream": True}
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events((await r.aread()).decode())
        kinds = [e.type for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed" and [e.sequence_number for e in events] == list(
            range(len(events))
        )
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "fine" == events[-1].response.output_text
        replica.reply = CALL
        streamed = await client.responses.create(
            model="tiny", input="hi", tools=TOOLS, tool_choice="required", stream=True
        )
        got = [e async for e in streamed]
        done = [e for e in got if e.type == "response.function_call_arguments.done"]
        assert len(done) == 1 and json.loads(done[0].arguments) == {"city": "Paris"}
        final = got[-1]
        assert final.type == "response.completed"
        assert final.response.output[0].type == "function_call"

    asyncio.run(run())


def test_a_live_stream_sends_text_token_by_token_then_the_call(tokenizer: Any) -> None:  # noqa: F811
    """tool_choice auto, a reply that opens as text then calls a tool: the message item
    opens at the first token and its text comes as one delta per token (the call's tag
    held back), then the message closes and the call comes whole; every event valid
    against openai's models, numbered in order; the final response carries both."""

    async def run() -> None:
        http, _client, _gw, replica, _paths = app_for(tokenizer)
        said = "Let me look that up."
        replica.reply = f"{said} {CALL}"
        body = {"model": "tiny", "input": "hi", "tools": TOOLS, "stream": True}
        async with http.stream("POST", "/v1/responses", json=body) as r:
            events = sse_events((await r.aread()).decode())
        assert [e.sequence_number for e in events] == list(range(len(events)))
        kinds = [e.type for e in events]
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert len(deltas) > 3  # token by token, not one piece
        assert "".join(deltas).strip() == said
        assert kinds.index("response.output_text.done") < kinds.index(
            "response.function_call_arguments.done"
        )
        final = events[-1].response
        assert final.output[0].type == "message" and final.output[0].content[0].text.strip() == said
        assert final.output[1].type == "function_call" and final.output[1].name == "get_weather"
        message_ids = {e.item_id for e in events if e.type == "response.output_text.delta"}
        assert message_ids == {final.output[0].id}

    asyncio.run(run())


def test_openai_agents_default_model_runs_a_tool_and_answers(tokenizer: Any) -> None:  # noqa: F811
    """openai-agents as the README sets it up (a default client, the model by name:
    its default API is Responses): a tool call, the tool, then the final answer, one
    keyless session whose second call reuses the first's ids exactly."""
    from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled

    set_tracing_disabled(True)
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    async def run() -> None:
        _http, client, gw, replica, paths = app_for(tokenizer)
        replica.script = [CALL]  # then "fine"
        set_default_openai_client(client, use_for_tracing=False)
        agent = Agent(
            name="weather", instructions="Use the tools.", tools=[get_weather], model="tiny"
        )
        result = await Runner.run(agent, "Weather in Paris?", max_turns=3)
        assert ran == ["Paris"] and result.final_output == "fine"
        assert paths == ["/v1/responses"] * 2
        assert len(replica.requests) == 2 and gw.exact_reuses == 1
        assert len(gw.sessions) == 1  # keyless: the second call joined the first's session

    asyncio.run(run())


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": TOOLS, "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": []}, "input"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content"),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
        ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"max_output_tokens": 10**6}, "max_tokens"),
        ({"model": None}, "model"),
    ],
)
def test_refusals_are_openai_errors_and_leave_no_session(
    tokenizer: Any,  # noqa: F811
    extra: dict[str, Any],
    param: str,
) -> None:
    async def run() -> None:
        http, client, gw, _replica, _paths = app_for(tokenizer)
        body = {"model": "tiny", "input": "x", **extra}
        r = await http.post("/v1/responses", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="other", input="x")
        assert len(gw.sessions) == 0

    asyncio.run(run())
