"""Bad input never gets past the gateway as anything but an OpenAI-shaped 4xx: bodies
generated around the chat-completions schema (wrong types, missing and odd fields,
malformed tool calls and tool choices) go through the whole reply path on the real
scheduler core with a stand-in replica; each one is answered or refused with a
``GatewayError`` of status 400/404/413/429, never another exception."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_gateway_admission import make, tokenizer  # noqa: F401  (the fixture)

from executor.gateway import GatewayError

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "developer", "bogus"])
arguments = st.one_of(st.just('{"city": "Oslo"}'), st.just("{oops"), st.just("[]"), json_values)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=5),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", "g", ""]), "arguments": arguments}
            ),
        }
    ),
    max_size=2,
)
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=5)}
)
content = st.one_of(st.none(), st.text(max_size=30), json_values, st.lists(part, max_size=2))
message = st.one_of(
    st.fixed_dictionaries(
        {"role": roles, "content": content},
        optional={
            "tool_calls": tool_calls,
            "tool_call_id": st.text(max_size=4),
            "name": json_values,
        },
    ),
    json_values,
)
tool = st.one_of(
    st.just(
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "enum": ["Oslo"]}},
                },
            },
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": st.sampled_from(["f", "g"])}, optional={"parameters": json_values}
            ),
        }
    ),
    json_values,
)
good_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user"]), "content": st.text(min_size=1, max_size=20)}
)
odd = json_values
bodies = (
    st.fixed_dictionaries(
        {
            "model": st.sampled_from(["tiny", "tiny", "other"]),
            "messages": st.lists(good_message, min_size=1, max_size=2).flatmap(
                lambda ms: st.lists(message, max_size=2).map(lambda extra: ms + extra)
            )
            | st.lists(message, max_size=4),
        },
        optional={
            "tools": st.lists(tool, max_size=2) | odd,
            "tool_choice": st.sampled_from(["auto", "none", "required", "any"])
            | st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries({"name": st.sampled_from(["f", "g", "h"])}),
                }
            )
            | odd,
            "n": st.integers(-1, 3),
            "max_tokens": st.integers(-2, 9000) | odd,
            "temperature": st.floats(0, 2) | odd,
            "top_p": st.floats(0, 1) | odd,
            "stop": st.text(max_size=3) | odd,
            "seed": st.integers() | odd,
            "stream": st.booleans() | odd,
            "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}]) | odd,
            "prompt_cache_key": st.text(max_size=5) | odd,
            "metadata": odd,
            "user": odd,
            "parallel_tool_calls": st.booleans() | odd,
        },
    )
    | json_values
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
def test_any_body_is_answered_or_refused_in_openai_shape(tokenizer: Any, body: Any) -> None:  # noqa: F811
    async def run() -> None:
        gw, _, _ = make(tokenizer, default_max_tokens=8)
        try:
            reply = await gw.chat(body, {"X-Session-ID": "fuzz"})
        except GatewayError as exc:
            event(f"refused {exc.status}")
            assert exc.status in (400, 404, 413, 429), exc.status
            error = exc.body()["error"]
            assert isinstance(error["message"], str) and error["message"]
        else:
            event("answered")
            assert reply.finish_reason in ("stop", "length", "tool_calls")

    asyncio.run(run())
