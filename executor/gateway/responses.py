"""``POST /v1/responses``: the stateless subset of OpenAI's Responses API (the API
openai-agents uses by default), run as a chat completion on the same sessions, core,
exact prefix reuse and tool-call grammars.

    body -> ResponsesRequest (SGLang's model)            400 on bad input
    instructions + input items -> chat messages           (``chat_body``)
      message -> its role's message; function_call(s) -> the assistant's tool_calls
      (merged into the turn's message, as the reply was returned); function_call_output
      -> a tool message; reasoning -> dropped (no reasoning model is served)
    function tools, tool_choice, text.format, max_output_tokens -> the chat fields
    Gateway.chat(chat body, headers)                      the session, the core, the replica
    Reply -> ResponsesResponse (SGLang's model): a message (output_text) and/or
      function_call items; usage with input_tokens_details.cached_tokens
    stream: the Responses event sequence as the reply decodes (sse.live_response:
      the message's text token by token, as chat streams send it)

Stateless: nothing is stored (``store`` is answered false), so ``previous_response_id``,
``conversation`` and ``background`` are 400s that say to send the whole
conversation as ``input``; so are built-in tools (web search, file search, ...).
The item conversion is written here, not imported from SGLang's
``serving_responses`` (importing that module loads the engine's serving stack).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import ValidationError
from sglang.srt.entrypoints.openai.protocol import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponsesRequest,
    ResponsesResponse,
    UsageInfo,
)

from executor.gateway.errors import bad_request
from executor.gateway.gateway import Reply, _problem
from executor.gateway.render import text_content

# body fields that name the session (identity.py reads them from the chat body)
_IDENTITY = ("prompt_cache_key", "program_id", "metadata", "session_id", "session-id", "user")
_STATEFUL = ("previous_response_id", "conversation")


def parse(body: Any) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    for field in _STATEFUL:
        if body.get(field) is not None:
            raise bad_request(
                f"{field} is not supported: this server keeps no responses; send the "
                "whole conversation as input",
                field,
            )
    if body.get("background"):
        raise bad_request("background responses are not supported", "background")
    if not body.get("model"):
        raise bad_request("model is required", "model")
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        raise _problem(exc) from None
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise bad_request(f"the request does not have the responses shape ({exc})") from None


_TEXT_PARTS = ("input_text", "output_text", "text")


def _text(content: Any, where: str) -> str:
    """A message item's content (a string, or text parts) as one string."""
    if content is None:
        raise bad_request("content must be a string or a list of text parts", f"{where}.content")
    return text_content(content, where, _TEXT_PARTS)


def _arguments(raw: Any) -> str:
    return json.dumps(raw) if isinstance(raw, dict) else str(raw or "{}")


def messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """``instructions`` and ``input`` as chat messages."""
    out: list[dict[str, Any]] = []
    if req.instructions:
        out.append({"role": "system", "content": req.instructions})
    items: list[Any] = (
        [{"role": "user", "content": req.input}] if isinstance(req.input, str) else req.input
    )
    for i, raw in enumerate(items):
        item = raw.model_dump(exclude_none=True) if hasattr(raw, "model_dump") else raw
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request("an input item must be an object", where)
        kind = item.get("type", "message")
        last = out[-1] if out else None
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise bad_request(f"unknown role {role!r}", f"{where}.role")
            text = _text(item.get("content"), where)
            if role == "assistant" and last is not None and last["role"] == "assistant":
                last["content"] = (last["content"] or "") + text  # one turn, several items
            else:
                out.append({"role": role, "content": text})
        elif kind == "function_call":
            if not item.get("name") or not item.get("call_id"):
                raise bad_request("a function_call item needs name and call_id", where)
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": _arguments(item.get("arguments"))},
            }
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # the reply's calls, one turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            text = output if isinstance(output, str) else _text(output, where)
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            continue  # no reasoning model is served: nothing of it goes back in
        else:
            raise bad_request(
                f"input items of type {kind!r} are not supported (message, function_call, "
                "function_call_output)",
                f"{where}.type",
            )
    if not out:
        raise bad_request("input must not be empty", "input")
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad_request(
        "tool_choice must be auto, required, none or a function by name", "tool_choice"
    )


def _response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    fmt = req.text.format if req.text is not None else None
    kind = getattr(fmt, "type", None)
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": getattr(fmt, "name", None) or "response",
            "schema": getattr(fmt, "schema_", None),
            "strict": getattr(fmt, "strict", None),
        },
    }


def chat_body(req: ResponsesRequest, body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions body that runs this request."""
    tools = []
    for i, t in enumerate(req.tools):
        if t.type != "function":
            raise bad_request(
                f"tools of type {t.type!r} are not supported (function tools only)",
                f"tools[{i}].type",
            )
        fn = {"name": t.name, "description": t.description, "parameters": t.parameters}
        tools.append({"type": "function", "function": {k: v for k, v in fn.items() if v}})
    chat: dict[str, Any] = {
        "model": req.model,
        "messages": messages(req),
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stop": req.stop,
        "seed": body.get("seed"),
        "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": _response_format(req),
    }
    if tools:
        chat["tools"] = tools
    if tools or req.tool_choice != "auto":  # (chat's checks: "required" needs tools)
        chat["tool_choice"] = _tool_choice(req.tool_choice)
    chat.update({k: body[k] for k in _IDENTITY if k in body})
    return {k: v for k, v in chat.items() if v is not None}


def new_ids() -> tuple[str, str]:
    """A response's id and its message item's."""
    return f"resp_{uuid.uuid4().hex[:24]}", f"msg_{uuid.uuid4().hex[:24]}"


def response_body(
    req: ResponsesRequest, reply: Reply, ids: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The finished response, in the Responses shape (a streamed reply's message text:
    what the stream sent, then the rest of the reply's)."""
    response_id, message_id = ids or new_ids()
    output: list[Any] = []
    calls = reply.parsed.openai_calls()
    content = reply.parsed.content or ""
    if reply.stream is not None and reply.stream.sent:
        content = reply.stream.sent + reply.stream.rest(reply.parsed.content)
    if content or not calls:
        text = ResponseOutputText(type="output_text", text=content, annotations=[])
        output.append(
            ResponseOutputMessage(
                id=message_id,
                type="message",
                role="assistant",
                status="completed",
                content=[text],
            )
        )
    for c in calls:
        output.append(
            ResponseFunctionToolCall(
                id=f"fc_{uuid.uuid4().hex[:24]}",
                type="function_call",
                call_id=c["id"],
                name=c["function"]["name"],
                arguments=c["function"]["arguments"],
                status="completed",
            )
        )
    cut = reply.finish_reason == "length"
    return _response(
        req,
        response_id,
        reply.created,
        output=output,
        status="incomplete" if cut else "completed",
        incomplete_details={"reason": "max_output_tokens"} if cut else None,
        usage=UsageInfo(**reply.usage()),
    )


def start_body(req: ResponsesRequest, response_id: str, created: int) -> dict[str, Any]:
    """The response before its output (a live stream's created / in_progress)."""
    return _response(req, response_id, created, output=[], status="in_progress")


def _response(
    req: ResponsesRequest, response_id: str, created: int, **fields: Any
) -> dict[str, Any]:
    out = ResponsesResponse(
        id=response_id,
        created_at=created,
        model=req.model,
        parallel_tool_calls=bool(req.parallel_tool_calls),
        tool_choice=req.tool_choice,
        tools=req.tools,
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        store=False,
        temperature=req.temperature,
        top_p=req.top_p,
        text=req.text.model_dump(mode="json", by_alias=True) if req.text else None,
        user=req.user,
        metadata=req.metadata,
        **fields,
    )
    result: dict[str, Any] = out.model_dump(mode="json", by_alias=True)
    return result
