"""The shape of a model reply: exactly one tool call of the agent's tools, or a final answer.

The JSON schema below is handed to SGLang as structured output, so the engine
can only produce one of::

    {"name": "python", "arguments": {...the tool's parameters...}}
    {"name": "final_answer", "arguments": {"answer": "..."}}

the JSON a Qwen-style tool-calling template puts in ``<tool_call>``, with the
answer itself a pseudo-tool (small models follow "call final_answer" best).

:func:`parse_reply` still checks every reply (a reply cut by ``max_new_tokens``
is not valid JSON): what does not parse becomes an :class:`InvalidReply` the
model is shown, never an exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from executor.agent import FINAL_ANSWER, Agent


@dataclass(frozen=True)
class ToolCall:
    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class FinalAnswer:
    text: str


@dataclass(frozen=True)
class InvalidReply:
    reason: str


Reply = ToolCall | FinalAnswer | InvalidReply


def _tool_shape(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def reply_schema(agent: Agent, tool_choice: str) -> dict[str, Any]:
    """The reply grammar for one call. ``tool_choice``: "auto", "required", a tool's name,
    or ``final_answer`` (the answer only)."""
    tools = [t for t in agent.tools if tool_choice in ("auto", "required", t.name)]
    shapes = [_tool_shape(t.name, t.parameters_schema) for t in tools]
    if tool_choice in ("auto", FINAL_ANSWER):
        shapes.append(_tool_shape(FINAL_ANSWER, answer_parameters(agent)))
    return shapes[0] if len(shapes) == 1 else {"anyOf": shapes}


def answer_parameters(agent: Agent) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "minLength": 1, "maxLength": agent.max_answer_chars}
        },
        "required": ["answer"],
        "additionalProperties": False,
    }


def answer_spec(agent: Agent) -> dict[str, Any]:
    """The final answer as a tool in the template's ``tools=[...]`` list."""
    return {
        "type": "function",
        "function": {
            "name": FINAL_ANSWER,
            "description": "Give the final answer to the task and stop. Call it as soon as "
            "you know the answer.",
            "parameters": answer_parameters(agent),
        },
    }


def reply_format() -> str:
    """How the system prompt tells the model to answer (the grammar enforces it anyway)."""
    return (
        'Reply with exactly one JSON object: {"name": <tool name>, "arguments": {...}}. '
        f"When you know the answer, call {FINAL_ANSWER}."
    )


def parse_reply(text: str, agent: Agent) -> Reply:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return InvalidReply(f"the reply is not one JSON object ({exc.msg} at {exc.pos})")
    if not isinstance(data, dict):
        return InvalidReply("the reply must be a JSON object")
    if set(data) != {"name", "arguments"} or not isinstance(data["name"], str):
        return InvalidReply(f'expected {{"name": ..., "arguments": {{...}}}}, got {sorted(data)}')
    args = data["arguments"]
    if not isinstance(args, dict):
        return InvalidReply("'arguments' must be a JSON object")
    if data["name"] == FINAL_ANSWER:
        answer = args.get("answer")
        if not isinstance(answer, str) or not answer:
            return InvalidReply(f'{FINAL_ANSWER} needs {{"answer": "<text>"}}')
        return FinalAnswer(answer)
    return ToolCall(data["name"], args)
