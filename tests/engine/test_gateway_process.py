"""The gateway (issues 26/30) against a real ``python -m executor serve`` on the tiny
model, through the official ``openai`` client: one server for the whole module.

The tiny model's text is meaningless; the shapes, the grammar's guarantees (tool
calls valid against their schemas), the cache hits and the errors are what count.
The server runs with ``EXECUTOR_GATEWAY_TOOL_CALL_PARSER=qwen25`` (the tiny template
has no tool-call format of its own), so the Qwen-family grammars run in the engine.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import jsonschema
import openai
import pytest
from service_process import AUTH, TOKEN, Server

pytestmark = pytest.mark.engine

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
        "unit": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather.", "parameters": WEATHER},
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "The time.", "parameters": TIME},
    },
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


@pytest.fixture(scope="module")
def server(pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(pool, tmp_path_factory.mktemp("gateway-process"))
    srv.env["EXECUTOR_GATEWAY_TOOL_CALL_PARSER"] = "qwen25"
    srv.env["EXECUTOR_GATEWAY_DEFAULT_MAX_TOKENS"] = "32"
    srv.env["EXECUTOR_GATEWAY_MAX_BODY_BYTES"] = "1000000"
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0, timeout=300)


def sessions(server: Server) -> dict[str, Any]:
    return {s["id"]: s for s in server.get("/v1/sessions")["data"]}


def sessions_of(client: openai.OpenAI) -> dict[str, Any]:
    data = client.get("/sessions", cast_to=object)
    assert isinstance(data, dict)
    return {s["id"]: s for s in data["data"]}


def check_calls(calls: Any, allowed: set[str]) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id and call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_models_and_a_plain_chat(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    raw = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=ASK,
        max_tokens=8,
        temperature=0,
        seed=7,
    )
    reply = raw.parse()
    assert reply.object == "chat.completion" and reply.model == "tiny"
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 8
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens >= 0
    assert raw.headers["x-session-id"].startswith("anon-")  # keyless: found by its prefix
    assert raw.headers["x-session-id"] in sessions_of(client)  # ... lives on (idle TTL)


def test_stream_sync_and_async(server: Server, client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=ASK,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0

    async def both() -> tuple[Any, list[Any]]:
        aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0)
        async with aclient:
            plain = await aclient.chat.completions.create(model="tiny", messages=ASK, max_tokens=4)
            stream = await aclient.chat.completions.create(
                model="tiny", messages=ASK, max_tokens=4, stream=True
            )
            return plain, [c async for c in stream]

    plain, streamed = asyncio.run(both())
    assert plain.choices[0].message.role == "assistant" and plain.usage.completion_tokens > 0
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in streamed)  # no usage chunk unless asked


def test_tool_call_round_trip_reuses_the_prefix(server: Server, client: openai.OpenAI) -> None:
    sid = f"s-{uuid.uuid4().hex[:8]}"
    first = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=160,
        extra_headers={"X-Session-ID": sid},
    )
    assert first.headers["x-tool-call-parser"] == "qwen25"
    assert first.headers["x-prefix-reuse"] == "rendered"
    one = first.parse()
    assert one.choices[0].finish_reason == "tool_calls", one.choices[0].message.content
    check_calls(one.choices[0].message.tool_calls, set(SCHEMAS))
    assert sessions(server)[sid]["calls"] == 1

    call = one.choices[0].message.tool_calls[0]
    history = [
        *ASK,
        one.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12 C and sunny"},
    ]
    second = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=history,
        tools=TOOLS,
        max_tokens=160,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        extra_headers={"X-Session-ID": sid},
    )
    assert second.headers["x-prefix-reuse"] == "exact"
    assert second.headers["x-replica-id"] == first.headers["x-replica-id"]  # sticky
    two = second.parse()
    check_calls(two.choices[0].message.tool_calls, {"get_time"})
    assert two.usage.prompt_tokens_details.cached_tokens >= one.usage.prompt_tokens
    assert sessions(server)[sid]["calls"] == 2


def test_cached_tokens_cover_the_last_prompt_keyed_by_prompt_cache_key(
    server: Server, client: openai.OpenAI
) -> None:
    key = f"k-{uuid.uuid4().hex[:8]}"
    one = client.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=6, prompt_cache_key=key
    )
    again = [
        *ASK,
        {"role": "assistant", "content": one.choices[0].message.content},
        {"role": "user", "content": "And tomorrow?"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="tiny",
        messages=again,
        max_tokens=6,
        prompt_cache_key=key,
        extra_headers={"X-Session-Final": "true"},
    )
    two = raw.parse()
    assert raw.headers["x-prefix-reuse"] == "exact"
    assert two.usage.prompt_tokens_details.cached_tokens >= one.usage.prompt_tokens
    assert key not in sessions(server)  # X-Session-Final ended it


def test_auto_tool_choice_is_text_or_valid_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, max_tokens=24, temperature=0
    )
    message = reply.choices[0].message
    if message.tool_calls:
        check_calls(message.tool_calls, set(SCHEMAS))
        assert reply.choices[0].finish_reason == "tool_calls"
    else:
        assert isinstance(message.content, str)
        assert not message.content.lstrip().startswith("{")  # a bare call is never text


def test_keyless_clients_stay_one_session_each_with_cache_hits(server: Server) -> None:
    """Two clients that send no identity at all, with the same system prompt,
    interleaved over four turns: each stays one session on one replica, and each
    call's cached tokens cover the client's previous prompt. (Their first questions
    differ: the tiny model may give both the same first reply, and two identical
    conversations are one to the matcher; the unit test tells apart sessions with the
    same first question by their replies.)"""
    plain = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0, timeout=300)
    system = {"role": "system", "content": f"You are agent {uuid.uuid4().hex[:6]}."}
    histories: list[list[Any]] = [
        [system, {"role": "user", "content": f"Begin task {c}."}] for c in range(2)
    ]
    seen: list[list[tuple[str, str, int, int | None]]] = [[], []]
    for turn in range(4):
        for c in (0, 1):
            raw = plain.chat.completions.with_raw_response.create(
                model="tiny",
                messages=histories[c],
                max_tokens=6,
                temperature=1.0,
                seed=c,
            )
            reply = raw.parse()
            usage = reply.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            seen[c].append(
                (
                    raw.headers["x-session-id"],
                    raw.headers["x-replica-id"],
                    usage.prompt_tokens,
                    usage.prompt_tokens_details.cached_tokens,
                )
            )
            text = reply.choices[0].message.content
            histories[c] += [
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"Turn {turn}, {c}."},
            ]
    print("\n(session, replica, prompt, cached) per call:", seen)
    assert {s[0] for s in seen[0]}.isdisjoint({s[0] for s in seen[1]})
    for calls in seen:
        assert len({c[0] for c in calls}) == 1 and len({c[1] for c in calls}) == 1
        for k in range(1, len(calls)):
            assert (calls[k][3] or 0) >= calls[k - 1][2]
    live = sessions(server)
    assert all(live[calls[0][0]]["calls"] == 4 for calls in seen)
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH, timeout=30).text
    for calls in seen:  # the sessions on /metrics, beside the Agent tasks' metrics
        assert (
            f'executor_gateway_session_calls{{replica_id="{calls[0][1]}",'
            f'session_id="{calls[0][0]}"}} 4.0' in metrics
        )


def test_openai_shaped_errors(server: Server, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-9", messages=ASK)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as n2:
        client.chat.completions.create(model="tiny", messages=ASK, n=2)
    assert n2.value.param == "n"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model="tiny",
            messages=ASK,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch"}},
        )
    assert unknown.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "def f(x): return x\n" * 3000}]
        )
    assert long.value.code == "context_length_exceeded"
    bad_history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{oops"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "x"},
    ]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=bad_history)
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.APIStatusError) as huge:  # over the gateway's body limit
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x" * 1_100_000}]
        )
    assert huge.value.status_code == 413 and huge.value.body is not None
    for body in (b"{not json", b'{"model": "tiny"}', b'{"model": "tiny", "messages": 3}'):
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            content=body,
            timeout=30,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"


def test_delete_ends_a_session(server: Server, client: openai.OpenAI) -> None:
    sid = f"d-{uuid.uuid4().hex[:8]}"
    client.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=4, extra_headers={"X-Session-ID": sid}
    )
    assert sid in sessions(server)
    url = f"{server.url}/v1/sessions/{sid}"
    assert httpx.delete(url, headers=AUTH, timeout=30).json()["deleted"] is True
    assert sid not in sessions(server)
    gone = httpx.delete(url, headers=AUTH, timeout=30)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "session_not_found"


def test_openai_agents_runs_a_tool_through_the_gateway(server: Server) -> None:
    """openai-agents, unchanged but for the base URL: ``Runner.run`` with two function
    tools reaches a tool (the grammar makes the tiny model's call valid) and ends with
    its output; the gateway's session list shows one session. (Enum arguments: the
    tiny model's free strings would run past any token limit.)"""
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    ran: list[tuple[str, dict[str, Any]]] = []

    @function_tool
    def get_weather(city: Literal["Paris", "Oslo"]) -> str:
        """The weather in a city."""
        ran.append(("get_weather", {"city": city}))
        return f"sunny in {city}"

    @function_tool
    def get_time(zone: Literal["UTC", "CET"]) -> str:
        """The time in a zone."""
        ran.append(("get_time", {"zone": zone}))
        return f"noon in {zone}"

    sid = f"agents-{uuid.uuid4().hex[:8]}"

    async def run() -> Any:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0)
        agent = Agent(
            name="weather",
            instructions="Use the tools.",
            tools=[get_weather, get_time],
            model=OpenAIChatCompletionsModel(model="tiny", openai_client=client),
            model_settings=ModelSettings(
                tool_choice="required", max_tokens=160, extra_headers={"X-Session-ID": sid}
            ),
            tool_use_behavior="stop_on_first_tool",
        )
        async with client:
            return await Runner.run(agent, "Weather in Paris?", max_turns=3)

    result = asyncio.run(run())
    assert ran, "no tool ran"
    name, args = ran[0]
    assert name in ("get_weather", "get_time") and all(isinstance(v, str) for v in args.values())
    assert result.final_output == (
        f"sunny in {args['city']}" if name == "get_weather" else f"noon in {args['zone']}"
    )
    assert sessions(server)[sid]["calls"] == 1


def test_responses_api_round_trip_and_openai_agents_default_model(
    server: Server, client: openai.OpenAI
) -> None:
    """``/v1/responses`` on the real engine: a required call valid against its schema,
    sent back with its output continues the prefix exactly (call 2's cached tokens
    cover call 1's prompt); openai-agents' default model (the Responses API) runs a
    tool and ends with its output."""
    from agents import (
        Agent,
        ModelSettings,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    tools: Any = [
        {
            "type": "function",
            "name": t["function"]["name"],
            "parameters": t["function"]["parameters"],
        }
        for t in TOOLS
    ]
    sid = f"resp-{uuid.uuid4().hex[:8]}"
    first = client.responses.with_raw_response.create(
        model="tiny",
        instructions=ASK[0]["content"],
        input=ASK[1]["content"],
        tools=tools,
        tool_choice="required",
        max_output_tokens=160,
        extra_headers={"X-Session-ID": sid},
    )
    one = first.parse()
    calls = [i for i in one.output if i.type == "function_call"]
    assert calls and one.status == "completed"
    for c in calls:
        jsonschema.validate(json.loads(c.arguments), SCHEMAS[c.name])
    history: list[Any] = [{"role": "user", "content": ASK[1]["content"]}]
    history += [i.model_dump(exclude_none=True) for i in one.output]
    history += [
        {"type": "function_call_output", "call_id": c.call_id, "output": "12 C"} for c in calls
    ]
    second = client.responses.with_raw_response.create(
        model="tiny",
        instructions=ASK[0]["content"],
        input=history,
        tools=tools,
        tool_choice="none",
        max_output_tokens=8,
        extra_headers={"X-Session-ID": sid},
    )
    assert second.headers["x-prefix-reuse"] == "exact"
    two = second.parse()
    assert one.usage is not None and two.usage is not None
    assert two.usage.input_tokens_details.cached_tokens >= one.usage.input_tokens
    assert sessions(server)[sid]["calls"] == 2

    set_tracing_disabled(True)
    ran: list[str] = []

    @function_tool
    def get_time(zone: Literal["UTC", "CET"]) -> str:
        """The time in a zone."""
        ran.append(zone)
        return f"noon in {zone}"

    async def run() -> Any:
        aclient = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0)
        agent = Agent(
            name="clock",
            instructions="Use the tools.",
            tools=[get_time],
            model=OpenAIResponsesModel(model="tiny", openai_client=aclient),
            model_settings=ModelSettings(tool_choice="required", max_tokens=160),
            tool_use_behavior="stop_on_first_tool",
        )
        async with aclient:
            return await Runner.run(agent, "Time in Oslo?", max_turns=3)

    result = asyncio.run(run())
    assert ran and result.final_output == f"noon in {ran[0]}"


def test_langchain_bind_tools_loop_reuses_the_prefix(server: Server) -> None:
    """langchain-openai's ``ChatOpenAI(...).bind_tools`` in a two-step loop with the
    session in ``default_headers``: the tool call comes back as a tool message and the
    second call is served from the first one's ids (cached tokens cover its prompt)."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    sid = f"lc-{uuid.uuid4().hex[:8]}"
    chat = ChatOpenAI(
        model="tiny",
        base_url=f"{server.url}/v1",
        api_key=TOKEN,  # type: ignore[arg-type]
        default_headers={"X-Session-ID": sid},
        max_retries=0,
        max_completion_tokens=160,
    )
    bound = chat.bind_tools(TOOLS, tool_choice="required")
    history: list[Any] = [HumanMessage("What is the weather in Paris?")]
    first = bound.invoke(history)
    assert first.tool_calls, first
    call = first.tool_calls[0]
    jsonschema.validate(call["args"], SCHEMAS[call["name"]])
    history += [first, ToolMessage("12 C", tool_call_id=call["id"])]
    second = bound.invoke(history)
    assert second.tool_calls
    seen = sessions(server)[sid]
    assert seen["calls"] == 2
    prompt_1 = first.usage_metadata["input_tokens"] if first.usage_metadata else 0
    assert prompt_1 > 0 and seen["cached_tokens"][-1] >= prompt_1


def test_exact_reuse_against_re_rendering(client: openai.OpenAI) -> None:
    """The same three-call tool loop twice: with exact reuse (the default) each call's
    cached tokens cover the last prompt and reply as generated; re-rendered
    (``X-Exact-Reuse: off``) the tiny template drops the tool calls, so the cache
    misses from the reply on. Prints the per-call figures (run with ``-s``)."""
    figures: dict[str, list[tuple[int, int, int]]] = {}
    for mode in ("on", "off"):
        sid = f"reuse-{mode}-{uuid.uuid4().hex[:6]}"
        history: list[Any] = [{"role": "system", "content": f"Session {sid}."}, ASK[1]]
        figures[mode] = []
        for step in range(3):
            reply = client.chat.completions.create(
                model="tiny",
                messages=history,
                tools=TOOLS,
                tool_choice="required",
                max_tokens=160,
                extra_headers={"X-Session-ID": sid, "X-Exact-Reuse": mode},
            )
            usage = reply.usage
            assert usage is not None and usage.prompt_tokens_details is not None
            cached = usage.prompt_tokens_details.cached_tokens
            figures[mode].append((usage.prompt_tokens, cached, usage.completion_tokens))
            message = reply.choices[0].message
            check_calls(message.tool_calls, set(SCHEMAS))
            history += [
                message.model_dump(exclude_none=True),
                {
                    "role": "tool",
                    "tool_call_id": message.tool_calls[0].id,  # type: ignore[index]
                    "content": f"result {step}",
                },
            ]
    print("\n(prompt, cached, completion) per call:", figures)
    on, off = figures["on"], figures["off"]
    for k in (1, 2):
        # exact: the last prompt and its reply from the cache (the reply's last token,
        # not yet in the cache when the call ended, may be prefilled)
        assert on[k][1] >= on[k - 1][0] + on[k - 1][2] - 1
        # re-rendered: the last prompt at most, the reply is no longer the generated ids
        assert off[k][1] <= off[k - 1][0] + 1
