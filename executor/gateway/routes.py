"""The gateway's HTTP routes, mounted on the service's app (``install``).

    GET    /v1/models                 the served model
    POST   /v1/chat/completions       OpenAI chat completions (``stream`` as SSE chunks)
    POST   /v1/completions            OpenAI completions (a text or token-id prompt)
    POST   /v1/responses              OpenAI responses, the stateless subset (responses.py)
    GET    /v1/sessions               the live sessions (calls, replica, cached tokens)
    DELETE /v1/sessions/{id}          end a session now (its KV is released)

Same bearer token as the rest of the service; every error in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from sglang.srt.entrypoints.openai.protocol import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    DeltaMessage,
    FunctionResponse,
    ModelCard,
    ModelList,
    ToolCall,
    UsageInfo,
)

from executor.gateway import responses
from executor.gateway.completions import complete
from executor.gateway.errors import GatewayError, bad_request
from executor.gateway.gateway import Gateway, Reply
from executor.gateway.streaming import Sink

log = logging.getLogger(__name__)

# bodies bounded by the gateway's own limit
PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape, declared on every route for the codes it can answer."""

    error: ErrorDetail


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


_MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool", "developer"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["role"],
}
# the sampling fields every body shares; the tool fields of chat and responses
_SAMPLING = {
    "temperature": {"type": "number"},
    "top_p": {"type": "number"},
    "seed": {"type": "integer"},
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "stream": {"type": "boolean"},
}
_TOOLS = {
    "tools": {"type": "array", "items": {"type": "object"}},
    "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
}


def _body(fields: dict[str, Any], required: str) -> dict[str, Any]:
    """A JSON request body's OpenAPI entry: ``model``, ``fields`` and the sampling
    fields (the request's model validates the rest); declared so that the schema
    describes the body and a fuzzer generates it."""
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"model": {"type": "string"}, **fields, **_SAMPLING},
                    "required": ["model", required],
                }
            }
        },
    }


_STRING = {"type": "string"}
COMPLETION_BODY = _body(
    {
        "prompt": {"anyOf": [_STRING, {"type": "array", "items": {"type": "integer"}}]},
        "max_tokens": {"type": "integer"},
    },
    "prompt",
)
CHAT_BODY = _body(
    {
        "messages": {"type": "array", "items": _MESSAGE},
        "max_tokens": {"type": "integer"},
        "max_completion_tokens": {"type": "integer"},
        "n": {"type": "integer"},
        **_TOOLS,
        "response_format": {"type": "object"},
    },
    "messages",
)
RESPONSES_BODY = _body(
    {
        "input": {"anyOf": [_STRING, {"type": "array", "items": {"type": "object"}}]},
        "instructions": {"type": "string"},
        "max_output_tokens": {"type": "integer"},
        **_TOOLS,
        "text": {"type": "object"},
    },
    "input",
)


def _calls(reply: Reply) -> list[ToolCall] | None:
    calls = reply.parsed.openai_calls()
    if not calls:
        return None
    return [
        ToolCall(id=c["id"], index=c["index"], function=FunctionResponse(**c["function"]))
        for c in calls
    ]


def response_body(reply: Reply) -> dict[str, Any]:
    message = ChatMessage(role="assistant", content=reply.parsed.content, tool_calls=_calls(reply))
    choice = ChatCompletionResponseChoice(
        index=0, message=message, finish_reason=reply.finish_reason
    )
    out = ChatCompletionResponse(
        id=reply.id,
        created=reply.created,
        model=reply.model,
        choices=[choice],
        usage=UsageInfo(**reply.usage()),
    )
    body: dict[str, Any] = out.model_dump(mode="json")
    return body


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
        for call in _calls(reply) or []:
            out.append(self.chunk(DeltaMessage(tool_calls=[call])))
        out.append(self.chunk(DeltaMessage(), reply.finish_reason))
        if include_usage:
            out.append(self.chunk(None, usage=reply.usage()))
        out.append("data: [DONE]\n\n")
        return out


def chunks(reply: Reply, include_usage: bool) -> list[str]:
    """A finished reply as SSE ``data:`` lines: role, text, tool calls, finish, usage,
    [DONE]."""
    c = Chunks(reply.id, reply.created, reply.model)
    return [c.head(), *c.tail(reply, include_usage, reply.parsed.content)]


async def _stream(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _live(
    gateway: Gateway, call: asyncio.Future[Reply], sink: Sink, include_usage: bool
) -> AsyncIterator[str]:
    """A chat completion's SSE lines as it decodes: the role, each piece of text the
    reply stream lets through, then the rest from the whole reply. An error after the
    first line is an ``error`` event (OpenAI's shape; the client raises it)."""
    c = Chunks(sink.id, sink.created, gateway.model)
    try:
        yield c.head()
        while True:
            text = asyncio.ensure_future(sink.texts.get())
            waiting: set[asyncio.Future[Any]] = {text, call}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not text.done():
                text.cancel()
                break
            yield c.text(text.result())
        while not sink.texts.empty():
            yield c.text(sink.texts.get_nowait())
        reply = call.result()
        rest = reply.stream.rest(reply.parsed.content) if reply.stream else None
        for line in c.tail(reply, include_usage, rest):
            yield line
    except GatewayError as exc:
        yield f"data: {json.dumps(exc.body())}\n\n"
    except Exception:
        log.exception("a chat completion's stream failed")
        yield f"data: {json.dumps(GatewayError(500, 'the stream failed').body())}\n\n"
    finally:
        if not call.done():
            call.cancel()


# what the generating routes answer (a stream with "stream": true)
GENERATES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}},
    **_errors(400, 404, 413, 429, 503),
}


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return bool(isinstance(options, dict) and options.get("include_usage"))


def _answer(
    lines: list[str] | None, body: Callable[[], dict[str, Any]], headers: dict[str, str]
) -> Response:
    """The SSE ``lines`` as a stream, else ``body()`` as JSON."""
    if lines is not None:
        return StreamingResponse(
            _stream(lines),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    return JSONResponse(body(), headers=headers)


def install(app: FastAPI, gateway: Gateway, token: str | None) -> None:
    """Mount the routes and the OpenAI-shaped error handler on ``app``."""
    # (here, not at the top: executor.service imports this module, and the gateway's
    # routes can be mounted on an app of their own, as the schema fuzz test does)
    from executor.service.auth import authorized

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    app.add_exception_handler(GatewayError, on_error)

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if not authorized(authorization, token):
            raise GatewayError(
                401,
                "a valid bearer token is required (Authorization: Bearer <token>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(dependencies=[Depends(auth)], responses=_errors(401))

    @router.get("/v1/models", responses=_errors(503))
    async def models() -> dict[str, Any]:
        card = ModelCard(
            id=gateway.model, owned_by="agent-executor", max_model_len=gateway.context_tokens()
        )
        listing: dict[str, Any] = ModelList(data=[card]).model_dump(mode="json")
        return listing

    async def json_body(request: Request) -> Any:
        limit = gateway.config.max_body_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:  # before reading it
            raise GatewayError(413, f"the body is over {limit} bytes")
        raw = await request.body()
        if len(raw) > limit:  # (a chunked body has no content-length)
            raise GatewayError(413, f"the body is over {limit} bytes")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad_request(f"the body is not valid JSON ({exc})") from None

    @router.post(
        "/v1/chat/completions", responses=GENERATES, openapi_extra={"requestBody": CHAT_BODY}
    )
    async def chat(request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, dict) and body.get("stream"):
            return await stream_chat(body, request.headers)
        reply = await gateway.chat(body, request.headers)
        return _answer(None, lambda: response_body(reply), reply.headers)

    async def stream_chat(body: dict[str, Any], headers: Mapping[str, str]) -> Response:
        """Errors before the first token are HTTP errors; from it on, the stream."""
        sink = Sink()
        call = asyncio.ensure_future(gateway.chat(body, headers, sink))
        started = asyncio.ensure_future(sink.started.wait())
        try:
            await asyncio.wait({call, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
            if not call.done() and not sink.started.is_set():
                call.cancel()
        if call.done():
            call.result()  # (its error, as an HTTP error)
        return StreamingResponse(
            _live(gateway, call, sink, _include_usage(body)),
            media_type="text/event-stream",
            headers={**sink.headers, "Cache-Control": "no-cache"},
        )

    @router.post(
        "/v1/completions", responses=GENERATES, openapi_extra={"requestBody": COMPLETION_BODY}
    )
    async def completions(request: Request) -> Response:
        body = await json_body(request)
        done = await complete(gateway, body, request.headers)
        lines = done.chunks(_include_usage(body)) if body.get("stream") else None
        return _answer(lines, done.body, done.headers)

    @router.post(
        "/v1/responses", responses=GENERATES, openapi_extra={"requestBody": RESPONSES_BODY}
    )
    async def create_response(request: Request) -> Response:
        body = await json_body(request)
        req = responses.parse(body)
        reply = await gateway.chat(responses.chat_body(req, body), request.headers)
        out = responses.response_body(req, reply)
        return _answer(responses.events(out) if req.stream else None, lambda: out, reply.headers)

    @router.get("/v1/sessions")
    async def sessions() -> dict[str, Any]:
        return {
            "data": [s.row() for s in gateway.sessions.sessions()],
            "ended": gateway.sessions.ended,
            "matched": gateway.sessions.matched,
        }

    @router.delete("/v1/sessions/{session_id}", responses=_errors(404))
    async def end(session_id: str) -> dict[str, Any]:
        if not gateway.end_session(session_id):
            raise GatewayError(
                404, f"no live session {session_id!r}", param="session_id", code="session_not_found"
            )
        return {"id": session_id, "object": "session", "deleted": True}

    app.include_router(router)
