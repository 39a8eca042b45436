"""The generating routes' server-sent events: chat completion chunks and the Responses
event sequence, live (as the reply decodes: ``streaming.py``) or from a finished reply.

    live_chat:     role, each text piece the reply stream lets through, the rest of the
                   text, tool calls, finish, usage, [DONE]
    live_response: created, in_progress, the message item opened at the first text
                   piece and its deltas, then the items' ends and the other items
                   (function calls), completed / incomplete

A failure after the first line is an ``error`` event in OpenAI's shape (the official
clients raise it); before it, the route answers with an HTTP status instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sglang.srt.entrypoints.openai.protocol import (
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    DeltaMessage,
    FunctionResponse,
    ToolCall,
    UsageInfo,
)

from executor.gateway.errors import GatewayError
from executor.gateway.gateway import Reply
from executor.gateway.streaming import Sink

log = logging.getLogger(__name__)


def tool_calls(reply: Reply) -> list[ToolCall] | None:
    calls = reply.parsed.openai_calls()
    if not calls:
        return None
    return [
        ToolCall(id=c["id"], index=c["index"], function=FunctionResponse(**c["function"]))
        for c in calls
    ]


async def _pieces(call: asyncio.Future[Reply], sink: Sink) -> AsyncIterator[str]:
    """The text pieces of a streamed reply as they come, until its call ends."""
    while True:
        text = asyncio.ensure_future(sink.texts.get())
        waiting: set[asyncio.Future[Any]] = {text, call}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not text.done():
            text.cancel()
            break
        yield text.result()
    while not sink.texts.empty():
        yield sink.texts.get_nowait()


async def _guarded(
    lines: AsyncIterator[str], call: asyncio.Future[Reply], error: Callable[[GatewayError], str]
) -> AsyncIterator[str]:
    """``lines``, then an error event where they fail; the call is cancelled when the
    client goes away first."""
    try:
        async for line in lines:
            yield line
    except GatewayError as exc:
        yield error(exc)
    except Exception:
        log.exception("a stream failed")
        yield error(GatewayError(500, "the stream failed"))
    finally:
        if not call.done():
            call.cancel()


# -- chat completions -----------------------------------------------------------------


@dataclass
class Chunks:
    """SSE ``data:`` lines of one chat completion's stream."""

    id: str
    created: int
    model: str

    def chunk(
        self,
        delta: DeltaMessage | None,
        finish: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> str:
        choices = (
            []
            if delta is None
            else [ChatCompletionResponseStreamChoice(index=0, delta=delta, finish_reason=finish)]
        )
        c = ChatCompletionStreamResponse(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=UsageInfo(**usage) if usage is not None else None,
        )
        return f"data: {json.dumps(c.model_dump(mode='json', exclude_none=True))}\n\n"

    def head(self) -> str:
        return self.chunk(DeltaMessage(role="assistant", content=""))

    def text(self, text: str) -> str:
        return self.chunk(DeltaMessage(content=text))

    def tail(self, reply: Reply, include_usage: bool, rest: str | None) -> list[str]:
        """After the text: what is left of it, tool calls, finish, usage, [DONE]."""
        out = [self.text(rest)] if rest else []
        for call in tool_calls(reply) or []:
            out.append(self.chunk(DeltaMessage(tool_calls=[call])))
        out.append(self.chunk(DeltaMessage(), reply.finish_reason))
        if include_usage:
            out.append(self.chunk(None, usage=reply.usage()))
        out.append("data: [DONE]\n\n")
        return out


def _data_error(exc: GatewayError) -> str:
    return f"data: {json.dumps(exc.body())}\n\n"


def live_chat(
    model: str, call: asyncio.Future[Reply], sink: Sink, include_usage: bool
) -> AsyncIterator[str]:
    async def lines() -> AsyncIterator[str]:
        c = Chunks(sink.id, sink.created, model)
        yield c.head()
        async for piece in _pieces(call, sink):
            yield c.text(piece)
        reply = call.result()
        rest = reply.stream.rest(reply.parsed.content) if reply.stream else None
        for line in c.tail(reply, include_usage, rest):
            yield line

    return _guarded(lines(), call, _data_error)


# -- responses --------------------------------------------------------------------------


class Events:
    """The Responses stream's SSE events, numbered in order."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.n, **fields}
        self.n += 1
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n"

    def start(self, response: dict[str, Any]) -> list[str]:
        start = {**response, "status": "in_progress", "output": [], "usage": None}
        return [
            self("response.created", response=start),
            self("response.in_progress", response=start),
        ]

    def open_message(self, i: int, item: dict[str, Any]) -> list[str]:
        part = {**item["content"][0], "text": ""}
        return [
            self("response.output_item.added", output_index=i, item={**item, "content": []}),
            self(
                "response.content_part.added",
                item_id=item["id"],
                output_index=i,
                content_index=0,
                part=part,
            ),
        ]

    def delta(self, i: int, item_id: str, text: str) -> str:
        at = {"item_id": item_id, "output_index": i, "content_index": 0}
        return self("response.output_text.delta", **at, delta=text, logprobs=[])

    def close_message(self, i: int, item: dict[str, Any]) -> list[str]:
        part = item["content"][0]
        at = {"item_id": item["id"], "output_index": i, "content_index": 0}
        return [
            self("response.output_text.done", **at, text=part["text"], logprobs=[]),
            self("response.content_part.done", **at, part=part),
            self("response.output_item.done", output_index=i, item=item),
        ]

    def item(self, i: int, item: dict[str, Any]) -> list[str]:
        """One whole output item: added, its text or arguments, done."""
        if item["type"] == "message":
            text = item["content"][0]["text"]
            delta = [self.delta(i, item["id"], text)] if text else []
            return [*self.open_message(i, item), *delta, *self.close_message(i, item)]
        at = {"item_id": item["id"], "output_index": i}
        return [
            self("response.output_item.added", output_index=i, item={**item, "arguments": ""}),
            self("response.function_call_arguments.delta", **at, delta=item["arguments"]),
            self(
                "response.function_call_arguments.done",
                **at,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self("response.output_item.done", output_index=i, item=item),
        ]

    def end(self, response: dict[str, Any]) -> str:
        incomplete = response["status"] == "incomplete"
        return self(
            "response.incomplete" if incomplete else "response.completed", response=response
        )


def live_response(
    start: dict[str, Any],
    message_id: str,
    finish: Callable[[Reply], dict[str, Any]],
    call: asyncio.Future[Reply],
    sink: Sink,
) -> AsyncIterator[str]:
    """The Responses events as the reply decodes. ``start``: the response before any
    output; ``finish(reply)``: the finished response, whose message item (first,
    ``message_id``) carries the text the stream sent and the rest of it."""
    ev = Events()

    async def lines() -> AsyncIterator[str]:
        for line in ev.start(start):
            yield line
        opened = False
        message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [{"type": "output_text", "text": "", "annotations": []}],
        }
        async for piece in _pieces(call, sink):
            if not opened:
                opened = True
                for line in ev.open_message(0, message):
                    yield line
            yield ev.delta(0, message_id, piece)
        reply = call.result()
        response = finish(reply)
        for i, item in enumerate(response["output"]):
            if i == 0 and opened:
                rest = reply.stream.rest(reply.parsed.content) if reply.stream else ""
                if rest:
                    yield ev.delta(0, item["id"], rest)
                for line in ev.close_message(0, item):
                    yield line
            else:
                for line in ev.item(i, item):
                    yield line
        yield ev.end(response)

    def error(exc: GatewayError) -> str:
        e = exc.body()["error"]
        return ev("error", code=e["code"], message=e["message"], param=e["param"])

    return _guarded(lines(), call, error)
