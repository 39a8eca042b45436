"""Tool calls that always decode (issue 30): one grammar per request's tool set, and
the parse of the reply back into OpenAI ``tool_calls``.

What the grammar allows, by ``tool_choice`` (tools' arguments always constrained to
their JSON schema: every tool is treated as ``strict``):

- ``"none"`` or no tools: nothing (the reply is free).
- ``"required"`` / a named function: only calls (of that function), in the family's
  native form (Qwen: ``<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>``),
  one or, with ``parallel_tool_calls``, several; the reply ends after the last call.
  A family without a known format: SGLang's generic JSON constraint
  (``[{"name": ..., "parameters": {...}}]``).
- ``"auto"``, family known: either calls in the native form, or a bare JSON call
  ``{"name": <a tool>, "arguments": {...}}`` (small models write that; it is returned
  as a tool call, not as text), or text that does not start with ``{``, ``<`` or a
  space, in which the native tag still opens a constrained call. A family without
  a known format: no grammar; the reply is parsed for a bare JSON call or Qwen-style
  tags, and the response says so (``X-Tool-Call-Parser: fallback``).

The structural tags (xgrammar's format) are built from SGLang's per-family
``structure_info`` (begin / end / trigger of a call), with at most one whitespace
between JSON tokens. Parsing reuses SGLang's ``FunctionCallParser`` (its detector
per family). Grammars are built once per distinct tool set (``ToolCalls.constraint``
caches them by hash; the engine caches their compiled form by the same text).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from sglang.srt.entrypoints.openai.protocol import Tool, ToolChoice
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.function_call.utils import get_json_schema_constraint

from executor.gateway.errors import bad_request
from executor.gateway.transcript import digest

Choice: TypeAlias = ToolChoice | Literal["auto", "required", "none"]
FALLBACK = "fallback"
# the first character of a free-text reply under "auto": not "{" (a call), not "<"
# (the native tag), not a space (before either); any other printable or non-ASCII
_TEXT_START = r"[!-;=-z|-~\u0080-\U0010ffff]"
_FAMILIES = [  # (what the chat template contains, SGLang's parser for it)
    ("<tool_call>", "qwen25"),
    ("<|python_tag|>", "llama3"),
    ("[TOOL_CALLS]", "mistral"),
]
CACHE_SIZE = 256


def family_parser(chat_template: str, override: str | None = None) -> str | None:
    """SGLang's tool-call parser for the served model (from its chat template), or
    None: no known format."""
    if override:
        if override == FALLBACK:
            return None
        if override not in FunctionCallParser.ToolCallParserEnum:
            raise ValueError(f"unknown tool-call parser {override!r}")
        return override
    return next((p for marker, p in _FAMILIES if marker in chat_template), None)


@dataclass
class Parsed:
    content: str | None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def openai_calls(self) -> list[dict[str, Any]]:
        return [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "index": i,
                "type": "function",
                "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=False)},
            }
            for i, (n, a) in enumerate(self.calls)
        ]


def _strict(tool: Tool) -> Tool:
    params = tool.function.parameters
    if not isinstance(params, dict) or not params:
        params = {"type": "object"}
    fn = tool.function.model_copy(update={"strict": True, "parameters": params})
    return tool.model_copy(update={"function": fn})


def check_choice(tools: list[Tool] | None, choice: Choice) -> None:
    """400 for a ``tool_choice`` the tools cannot satisfy."""
    names = [t.function.name for t in tools or []]
    if len(set(names)) != len(names):
        raise bad_request("tool names must be unique", "tools")
    if isinstance(choice, ToolChoice):
        if choice.function.name not in names:
            raise bad_request(
                f"tool_choice names {choice.function.name!r}, which is not among the tools "
                f"({', '.join(names) or 'none given'})",
                "tool_choice",
            )
    elif choice == "required" and not names:
        raise bad_request('tool_choice "required" needs tools', "tool_choice")


class ToolCalls:
    """The served family's tool-call format: grammars (cached) and parsing."""

    def __init__(self, parser: str | None) -> None:
        self.parser = parser
        self._cache: OrderedDict[str, tuple[str, str] | None] = OrderedDict()
        self.compiled = 0  # constraints built (cache misses), for the tests and metrics

    @property
    def label(self) -> str:
        return self.parser or FALLBACK

    def _allowed(self, tools: list[Tool], choice: Choice) -> list[Tool]:
        if isinstance(choice, ToolChoice):
            return [t for t in tools if t.function.name == choice.function.name]
        return tools

    def constraint(
        self, tools: list[Tool] | None, choice: Choice, parallel: bool
    ) -> tuple[str, str] | None:
        """(sampling key, its value) for the engine: ``structural_tag`` or
        ``json_schema``; None: unconstrained."""
        if not tools or choice == "none":
            return None
        mode = choice if isinstance(choice, str) else choice.model_dump()
        key = digest([[t.model_dump(mode="json") for t in tools], mode, parallel])
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self._build([_strict(t) for t in self._allowed(tools, choice)], choice, parallel)
        self.compiled += 1
        self._cache[key] = value
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return value

    def _build(self, tools: list[Tool], choice: Choice, parallel: bool) -> tuple[str, str] | None:
        if self.parser is None:
            if choice == "auto":
                return None
            schema = get_json_schema_constraint(tools, choice, parallel_tool_calls=parallel)
            return ("json_schema", json.dumps(schema)) if schema is not None else None
        fcp = FunctionCallParser(tools, self.parser)
        if fcp.detector.supports_structural_tag():
            tag = _structural_tag(fcp, tools, parallel, calls_only=choice != "auto")
            return "structural_tag", json.dumps(tag)
        if choice == "auto":
            return None
        found = fcp.get_structure_constraint(choice, parallel)  # the family's own way
        if found is None:
            return None
        kind, value = found
        text = (
            value
            if isinstance(value, str)
            else json.dumps(
                value.model_dump(by_alias=True) if hasattr(value, "model_dump") else value
            )
        )
        return kind, text

    def triggers(self, tools: list[Tool] | None) -> tuple[str, ...]:
        """What opens a call inside text (the fallback parses Qwen-style tags)."""
        if not tools:
            return ()
        if self.parser is None:
            return ("<tool_call>",)
        info = FunctionCallParser(tools, self.parser).detector.structure_info()
        return tuple(sorted({info(t.function.name).trigger for t in tools}))

    def continuation(self, tools: list[Tool] | None, parallel: bool) -> tuple[str, str] | None:
        """The constraint of the rest of an "auto" reply that began as text (a stream
        continued on a survivor, ``streaming.py``): the family's triggered tags."""
        if not tools or self.parser is None:
            return None
        fcp = FunctionCallParser([_strict(t) for t in tools], self.parser)
        if not fcp.detector.supports_structural_tag():
            return None
        native, _, triggers = _tags(fcp, [_strict(t) for t in tools])
        tag = {"type": "structural_tag", "format": _triggered(native, triggers, parallel)}
        return "structural_tag", json.dumps(tag)

    # -- parsing -----------------------------------------------------------------------

    def parse(self, text: str, tools: list[Tool] | None, choice: Choice) -> Parsed:
        """The reply as text and calls (calls only of the request's tools)."""
        if not tools or choice == "none":
            return Parsed(text)
        names = {t.function.name for t in tools}
        if self.parser is None and choice != "auto":
            return _known(_json_calls(text, "parameters"), names, text)
        if text.lstrip().startswith(("{", "[")):
            found = _json_calls(text, "arguments")
            if found:
                return _known(found, names, text)
        parser = FunctionCallParser(tools, self.parser or "qwen25")
        if not parser.has_tool_call(text):
            return Parsed(text)
        normal, items = parser.parse_non_stream(text)
        calls = []
        for item in items:
            try:
                args = json.loads(item.parameters or "{}")
            except json.JSONDecodeError:
                continue
            if item.name and isinstance(args, dict):
                calls.append((item.name, args))
        return _known(calls, names, text, normal.strip() or None)


def _known(
    calls: list[tuple[str, dict[str, Any]]], names: set[str], text: str, said: str | None = None
) -> Parsed:
    """The calls of known tools, with the text ``said`` before them; none: all text."""
    good = [(n, a) for n, a in calls if n in names]
    return Parsed(said, good) if good else Parsed(text)


def _json_calls(text: str, args_key: str) -> list[tuple[str, dict[str, Any]]]:
    """Calls written as JSON: one object or a list of objects with ``name`` and
    ``args_key`` (``arguments``; SGLang's generic constraint writes ``parameters``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        match = re.match(r"\s*(\{.*\}|\[.*\])", text, re.DOTALL)
        try:
            data = json.loads(match.group(1)) if match else None
        except json.JSONDecodeError:
            return []
    items = data if isinstance(data, list) else [data]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return []
        args = item.get(args_key, item.get("arguments", item.get("parameters", {})))
        if not isinstance(args, dict):
            return []
        calls.append((item["name"], args))
    return calls


def _tags(fcp: FunctionCallParser, tools: list[Tool]) -> tuple[list[Any], list[Any], list[str]]:
    """Each tool's call in the family's native form and as bare JSON, and the triggers
    (from SGLang's per-family ``structure_info``); at most one whitespace between JSON
    tokens (a weak model cannot wander in whitespace)."""
    info = fcp.detector.structure_info()
    native, bare = [], []
    triggers: set[str] = set()
    for t in tools:
        name = t.function.name
        schema = {
            "type": "json_schema",
            "json_schema": t.function.parameters,
            "max_whitespace_cnt": 1,
        }
        s = info(name)
        triggers.add(s.trigger)
        native.append({"type": "tag", "begin": s.begin, "content": schema, "end": s.end})
        bare.append(
            {
                "type": "tag",
                "begin": '{"name":"' + name + '", "arguments":',
                "content": schema,
                "end": "}",
            }
        )
    return native, bare, sorted(triggers)


def _triggered(native: list[Any], triggers: list[str], parallel: bool) -> dict[str, Any]:
    """Free text in which a trigger opens a constrained call."""
    return {
        "type": "triggered_tags",
        "triggers": triggers,
        "tags": native,
        "stop_after_first": not parallel,
    }


def _structural_tag(
    fcp: FunctionCallParser, tools: list[Tool], parallel: bool, *, calls_only: bool
) -> dict[str, Any]:
    """The structural tag (xgrammar's format) of calls in the family's native form:
    calls only (required / named), or for "auto" calls, one bare JSON call, or text
    (in which the native tag opens a call). After the last call the reply ends."""
    native, bare, triggers = _tags(fcp, tools)
    calls: dict[str, Any] = (
        {"type": "tags_with_separator", "tags": native, "separator": "\n", "at_least_one": True}
        if parallel
        else {"type": "or", "elements": native}
    )
    if calls_only:
        return {"type": "structural_tag", "format": calls}
    text = {
        "type": "sequence",
        "elements": [
            {"type": "regex", "pattern": _TEXT_START},
            _triggered(native, triggers, parallel),
        ],
    }
    return {
        "type": "structural_tag",
        "format": {"type": "or", "elements": [calls, {"type": "or", "elements": bare}, text]},
    }
