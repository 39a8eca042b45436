"""``ReplyStream`` (the pure part of token-by-token streaming): what a client is sent
as a reply decodes, by the reply's form; where a survivor continues after a replica
dies mid-reply; the whole reply put back together."""

from __future__ import annotations

from typing import Any

import pytest

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
    s = ReplyStream("auto", Sink(), (TRIGGER,), ("structural_tag", "TRIGGERED"))
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
