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
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from sglang.srt.entrypoints.openai.protocol import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatMessage,
    ModelCard,
    ModelList,
    UsageInfo,
)

from executor.gateway import responses, sse
from executor.gateway.completions import complete
from executor.gateway.errors import GatewayError, bad_request
from executor.gateway.gateway import Gateway, Reply
from executor.gateway.sse import tool_calls
from executor.gateway.streaming import Sink

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


def response_body(reply: Reply) -> dict[str, Any]:
    message = ChatMessage(
        role="assistant", content=reply.parsed.content, tool_calls=tool_calls(reply)
    )
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


async def _stream(lines: list[str]) -> AsyncIterator[str]:
    for line in lines:
        yield line


# what the generating routes answer (a stream with "stream": true)
GENERATES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}},
    **_errors(400, 404, 413, 429, 503),
}


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return bool(isinstance(options, dict) and options.get("include_usage"))


def _sse(lines: AsyncIterator[str], headers: dict[str, str]) -> Response:
    """SSE ``lines`` as a streamed response."""
    return StreamingResponse(
        lines, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"}
    )


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
            call, sink = await first_token(body, request.headers)
            lines = sse.live_chat(gateway.model, call, sink, _include_usage(body))
            return _sse(lines, sink.headers)
        reply = await gateway.chat(body, request.headers)
        return JSONResponse(response_body(reply), headers=reply.headers)

    async def first_token(
        body: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[asyncio.Future[Reply], Sink]:
        """A streamed call, once its first token is out (or it is done): errors before
        it are HTTP errors; from it on, the stream's."""
        sink = Sink()
        call = asyncio.ensure_future(gateway.chat(body, headers, sink))
        started = asyncio.ensure_future(sink.started.wait())
        try:
            await asyncio.wait({call, started}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the client went away before the first token
            call.cancel()
            raise
        finally:
            started.cancel()
        if call.done():
            call.result()  # (its error, as an HTTP error)
        return call, sink

    @router.post(
        "/v1/completions", responses=GENERATES, openapi_extra={"requestBody": COMPLETION_BODY}
    )
    async def completions(request: Request) -> Response:
        body = await json_body(request)
        done = await complete(gateway, body, request.headers)
        if body.get("stream"):
            return _sse(_stream(done.chunks(_include_usage(body))), done.headers)
        return JSONResponse(done.body(), headers=done.headers)

    @router.post(
        "/v1/responses", responses=GENERATES, openapi_extra={"requestBody": RESPONSES_BODY}
    )
    async def create_response(request: Request) -> Response:
        body = await json_body(request)
        req = responses.parse(body)
        chat_body = responses.chat_body(req, body)
        if req.stream:
            call, sink = await first_token(chat_body, request.headers)
            ids = responses.new_ids()
            lines = sse.live_response(
                responses.start_body(req, ids[0], sink.created),
                ids[1],
                lambda reply: responses.response_body(req, reply, ids),
                call,
                sink,
            )
            return _sse(lines, sink.headers)
        reply = await gateway.chat(chat_body, request.headers)
        return JSONResponse(responses.response_body(req, reply), headers=reply.headers)

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
