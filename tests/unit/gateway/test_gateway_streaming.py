"""``ReplyStream`` (the pure part of token-by-token streaming): what a client is sent
as a reply decodes, by the reply's form; where a survivor continues after a replica
dies mid-reply; the whole reply put back together."""

from __future__ import annotations

from typing import Any

import pytest
from test_gateway_admission import tokenizer  # noqa: F401

from executor.fleet.generation import GenerateResult, TokenDelta
from executor.gateway.streaming import ReplyStream, Sink

TRIGGER = "<tool_call>"


def sent(sink: Sink) -> list[str]:
    out = []
    while not sink.texts.empty():
        out.append(sink.texts.get_nowait())
    return out


def feed(stream: ReplyStream, *pieces: str) -> None:
    for text in pieces:  # one token each, ids 100, 101, ... in order
        stream.feed(TokenDelta(ids=[100 + len(stream.ids)], text=text))


def test_free_text_is_sent_as_it_comes() -> None:
    sink = Sink()
    s = ReplyStream("free", sink)
    assert not sink.started.is_set()
    feed(s, "Hel", "lo", " <tool_call>")  # no tools: a tag is only text
    assert sink.started.is_set()
    assert sent(sink) == ["Hel", "lo", " <tool_call>"]
    assert s.safe == 3 and s.safe_text == s.sent == "Hello <tool_call>"


def test_auto_text_holds_back_what_could_begin_a_call() -> None:
    sink = Sink()
    s = ReplyStream("auto", sink, (TRIGGER,))
    feed(s, "Let", " me look.", " <tool")
    assert sent(sink) == ["Let", " me look."]  # " <tool" could open a tag: held
    assert s.safe == 2
    feed(s, "box>")  # it did not: sent, with what follows
    assert sent(sink) == [" <toolbox>"]
    feed(s, " ", TRIGGER, '{"name"')
    assert sent(sink) == [" "]  # a call opened: the rest is held to the end
    assert s.state == "held" and s.safe == 5
    assert s.rest("Let me look. <toolbox>") == ""
    assert s.rest("Let me look. <toolbox> and more") == "and more"
    assert s.rest(None) == ""


@pytest.mark.parametrize("first", ["{", "[", "<", "  {"])
def test_auto_reply_that_opens_as_a_call_is_held(first: str) -> None:
    sink = Sink()
    s = ReplyStream("auto", sink, (TRIGGER,))
    feed(s, first, '"name": "f"}')
    assert sent(sink) == [] and s.state == "held" and s.safe == 0
    assert sink.started.is_set()  # decoding has begun: the response may start


def test_whole_replies_send_nothing_until_the_end() -> None:
    sink = Sink()
    s = ReplyStream("whole", sink)
    feed(s, "text", " more")
    assert sent(sink) == [] and s.safe == 0


def request(**sampling: Any) -> dict[str, Any]:
    return {
        "input_ids": [1, 2, 3],
        "sampling": {"max_new_tokens": 10, **sampling},
        "rid": "r",
        "session_id": "s",
    }


def result(text: str, ids: list[int], prompt: int, cached: int = 0) -> GenerateResult:
    return GenerateResult(
        replica_id="r1",
        text=text,
        output_ids=ids,
        prompt_tokens=prompt,
        cached_tokens=cached,
        completion_tokens=len(ids),
        finish_reason="stop",
        latency_s=0.1,
    )


def test_a_survivor_continues_after_the_safe_ids_under_the_continuation() -> None:
    s = ReplyStream("auto", Sink(), (TRIGGER,), lambda: ("structural_tag", "TRIGGERED"))
    feed(s, "Hi", " there", " <to")  # the third is held: not safe
    nxt = s.resume(request(structural_tag="FULL", temperature=0.0))
    assert nxt is not None
    assert nxt["input_ids"] == [1, 2, 3, 100, 101]  # the prompt, then the safe ids
    assert nxt["sampling"] == {
        "max_new_tokens": 8,
        "temperature": 0.0,
        "structural_tag": "TRIGGERED",  # text may still open a call: triggered tags
    }
    assert s.ids == [100, 101] and s.text == "Hi there"
    feed(s, " ok")  # the survivor's first token
    whole = s.finish(result(" ok", [7], prompt=5, cached=5), 3, "r1")
    assert whole.text == "Hi there ok"
    assert whole.output_ids == [100, 101, 7]
    assert (whole.prompt_tokens, whole.completion_tokens, whole.cached_tokens) == (3, 3, 3)


def test_free_continuation_drops_the_constraint_and_chains_across_two_deaths() -> None:
    s = ReplyStream("free", Sink())
    feed(s, "a", "b")
    first = s.resume(request())
    assert first is not None and first["input_ids"] == [1, 2, 3, 100, 101]
    feed(s, "c")
    second = s.resume(request())
    assert second is not None and second["input_ids"] == [1, 2, 3, 100, 101, 102]
    assert second["sampling"]["max_new_tokens"] == 7
    whole = s.finish(result("d", [9], prompt=6), 3, "r2")
    assert whole.text == "abcd" and whole.output_ids == [100, 101, 102, 9]
    assert s.resumes == 2


def test_nothing_safe_means_the_same_request_again() -> None:
    s = ReplyStream("whole", Sink())
    feed(s, '{"a":', " 1}")
    req = request(json_schema="{}")
    assert s.resume(req) is req
    assert s.ids == [] and s.text == ""
    r = result('{"a": 1}', [5, 6], prompt=3)
    assert s.finish(r, 3, "r1") is r


def test_a_reply_at_max_tokens_when_its_replica_died_is_complete() -> None:
    s = ReplyStream("free", Sink())
    feed(s, *["x"] * 10)
    assert s.resume(request()) is None
    whole = s.finish(None, 3, "r1")
    assert whole.text == "x" * 10 and whole.finish_reason == "length"
    assert (whole.replica_id, whole.completion_tokens, whole.prompt_tokens) == ("r1", 10, 3)


# -- through the route, with the official client (engine-free: a stand-in replica) ----

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _client(tok: Any, reply: str) -> tuple[Any, Any]:
    import httpx
    import openai
    from fastapi import FastAPI
    from test_gateway_admission import make

    from executor.gateway.routes import install

    gw, replica, _ = make(tok)
    replica.reply = reply
    app = FastAPI()
    install(app, gw, None)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key="-", http_client=http), replica


def test_chat_streams_text_per_token_then_the_call_whole(tokenizer: Any) -> None:  # noqa: F811
    """tool_choice auto: the text before the call's tag comes a token at a time, the
    call once, complete, with finish ``tool_calls``; no content chunk holds the tag."""
    import asyncio

    said = "Let me look that up."

    async def run() -> list[Any]:
        client, _ = _client(tokenizer, f"{said} {CALL}")
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "weather?"}],
            tools=TOOLS,
            stream=True,
        )
        return [c async for c in stream]

    chunks = asyncio.run(run())
    texts = [t for c in chunks if c.choices and (t := c.choices[0].delta.content)]
    assert len(texts) > 3 and "".join(texts).strip() == said
    assert not any("<tool" in t for t in texts)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == '{"city": "Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_an_error_after_the_first_token_is_an_error_event(tokenizer: Any) -> None:  # noqa: F811
    """The replica refuses mid-reply (an engine abort): the client, already reading the
    stream, gets OpenAI's error event, which the official client raises."""
    import asyncio

    import openai

    from executor.errors import InvalidRequestError

    async def run() -> list[str]:
        client, replica = _client(tokenizer, "one two three four")
        replica.hold_at = 2
        replica.gate.clear()
        got: list[str] = []

        async def refuse() -> None:
            while len(replica.streamed) < 2:
                await asyncio.sleep(0.01)
            replica.fail = InvalidRequestError("the engine aborted the request: test")
            replica.gate.set()

        refusing = asyncio.ensure_future(refuse())  # (ASGI: the body comes all at once)
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="aborted"):
            async for c in stream:
                if c.choices and c.choices[0].delta.content:
                    got.append(c.choices[0].delta.content)
        await refusing
        return got

    assert "".join(asyncio.run(run())) == "one two"
