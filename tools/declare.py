"""``@tool``: a typed Python function becomes a tool with a JSON schema.

    @tool
    async def grep(ctx: ToolContext, pattern: str, path: str = ".") -> str:
        \"\"\"Search files in the workspace.

        Args:
            pattern: a regular expression
            path: file or directory, relative to the workspace
        \"\"\"

The parameters (all but one annotated :class:`ToolContext`, which the runtime
passes) become a pydantic model: its JSON schema is ``tool.parameters_schema``
(what the prompt shows), and it validates the arguments the model wrote
before the function runs. ``await tool.invoke(args, ctx)`` never raises for
anything the model did: bad arguments, a refused request, a crash inside the
tool all come back as a :class:`ToolResult` with ``ok=False`` and a clear
message. Descriptions come from the docstring (first paragraph; ``Args:`` or
``:param x:`` entries) or from ``Annotated[T, Field(description=...)]``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.context import ToolContext
from tools.errors import ToolsError
from tools.output import truncate_text
from tools.result import ToolError, ToolResult
from tools.sandbox.base import SandboxError

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class ToolDeclarationError(TypeError, ToolsError):
    """A function cannot be made into a tool (the message says what to change).

    Also a TypeError (what it was first), so ``except TypeError`` still catches it.
    """


class Tool:
    """A declared tool. ``name``, ``description``, ``parameters_schema`` go in the prompt."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        if not NAME_RE.match(self.name):
            raise ToolDeclarationError(f"tool name {self.name!r} must match {NAME_RE.pattern}")
        summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
        self.description = (description or summary or self.name).strip()
        self.ctx_param, self.args_model = _build_model(fn, self.name, arg_docs)
        self.parameters_schema: dict[str, Any] = _clean_schema(self.args_model.model_json_schema())
        self.is_async = inspect.iscoroutinefunction(fn)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The undecorated function, for direct use in code and tests."""
        return self.fn(*args, **kwargs)

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters_schema,
        }

    def openai_spec(self) -> dict[str, Any]:
        """The ``tools=[...]`` entry of OpenAI-style chat templates."""
        return {"type": "function", "function": self.spec()}

    def validate(self, args: Mapping[str, Any] | str | None) -> BaseModel:
        """The validated arguments, or ToolError with a message written for the model."""
        if args is None:
            args = {}
        if isinstance(args, str | bytes):
            try:
                args = json.loads(args or "{}")
            except json.JSONDecodeError as exc:
                raise ToolError(
                    f"arguments for tool {self.name!r} are not valid JSON: {exc}"
                ) from exc
        if not isinstance(args, Mapping):
            raise ToolError(
                f"arguments for tool {self.name!r} must be a JSON object, got {type(args).__name__}"
            )
        try:
            return self.args_model.model_validate(dict(args))
        except ValidationError as exc:
            raise ToolError(_explain(self, exc)) from None

    async def invoke(
        self, args: Mapping[str, Any] | str | None, ctx: ToolContext | None = None
    ) -> ToolResult:
        """Validate ``args`` and run the tool in ``ctx`` (the task's sandbox and policies)."""
        ctx = ctx or ToolContext()
        try:
            model = self.validate(args)
            kwargs = {name: getattr(model, name) for name in type(model).model_fields}
            if self.ctx_param:
                kwargs[self.ctx_param] = ctx
            if self.is_async:
                value = await self.fn(**kwargs)
            else:
                value = await asyncio.to_thread(self.fn, **kwargs)
            result = _to_result(value)
        except ToolError as exc:
            result = ToolResult.failure(str(exc))
        except SandboxError as exc:
            result = ToolResult.failure(f"sandbox: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("tool %s failed", self.name)
            result = ToolResult.failure(f"tool {self.name!r} failed: {type(exc).__name__}: {exc}")
        text, cut = truncate_text(result.text, ctx.max_output_chars)
        if cut:
            result.text = text
            result.data["output_truncated"] = True
        return result

    def invoke_sync(
        self, args: Mapping[str, Any] | str | None, ctx: ToolContext | None = None
    ) -> ToolResult:
        """``invoke`` for code without an event loop (not from inside a running one)."""
        return asyncio.run(self.invoke(args, ctx))


@typing.overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@typing.overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a tool: ``@tool`` or ``@tool(name=..., description=...)``."""
    if fn is not None:
        return Tool(fn, name=name, description=description)
    return lambda f: Tool(f, name=name, description=description)


def _build_model(
    fn: Callable[..., Any], tool_name: str, arg_docs: dict[str, str]
) -> tuple[str | None, type[BaseModel]]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ToolDeclarationError(
            f"tool {tool_name!r}: cannot read its type hints: {exc}"
        ) from exc
    ctx_param: str | None = None
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolDeclarationError(
                f"tool {tool_name!r}: parameter {param.name!r} must be a plain named parameter"
            )
        hint = hints.get(param.name)
        if hint is ToolContext:
            ctx_param = param.name
            continue
        if hint is None:
            raise ToolDeclarationError(
                f"tool {tool_name!r}: parameter {param.name!r} needs a type hint"
            )
        default = ... if param.default is param.empty else param.default
        doc = arg_docs.get(param.name)
        fields[param.name] = (hint, Field(default, description=doc) if doc else default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    try:
        model = pydantic.create_model(f"{tool_name}_arguments", __config__=config, **fields)
        model.model_json_schema()
    except Exception as exc:
        raise ToolDeclarationError(
            f"tool {tool_name!r}: no JSON schema for its parameters: {exc}"
        ) from exc
    return ctx_param, model


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """First paragraph, and per-argument text from ``Args:`` / ``:param x:`` entries."""
    paragraphs = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
    summary = " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""
    if re.match(r"^(Args|Arguments|Parameters|Returns):", summary):
        summary = ""
    args: dict[str, str] = {}
    for m in re.finditer(r":param\s+(\w+):\s*(.+?)(?=\n\s*:|\Z)", doc, re.S):
        args[m.group(1)] = " ".join(m.group(2).split())
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n(.*?)(?:\n\S|\Z)", doc, re.S | re.M)
    if section:
        current, indent = None, 0
        for line in section.group(1).splitlines():
            entry = re.match(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if entry and (current is None or len(line) - len(line.lstrip()) <= indent):
                current, indent = entry.group(1), len(line) - len(line.lstrip())
                args[current] = entry.group(2).strip()
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
    return summary, args


def _clean_schema(schema: Any) -> Any:
    """Drop pydantic's generated ``title`` keys (noise in a prompt); keep field names."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "title" and isinstance(value, str):
                continue
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {k: _clean_schema(v) for k, v in value.items()}
            else:
                out[key] = _clean_schema(value)
        return out
    if isinstance(schema, list):
        return [_clean_schema(v) for v in schema]
    return schema


def _explain(t: Tool, exc: ValidationError) -> str:
    expected = ", ".join(
        f"{name}{'' if f.is_required() else '?'}" for name, f in t.args_model.model_fields.items()
    )
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unexpected argument {where!r}")
        elif err["type"] == "missing":
            problems.append(f"missing required argument {where!r}")
        else:
            got = json.dumps(err.get("input"), default=repr)
            if len(got) > 80:
                got = got[:77] + "..."
            problems.append(f"argument {where!r}: {err['msg']} (got {got})")
    return (
        f"invalid arguments for tool {t.name!r}: "
        + "; ".join(problems)
        + f". Expected arguments: {expected or 'none'}."
    )


def _to_result(value: Any) -> ToolResult:
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult(text="(no output)")
    if isinstance(value, str):
        return ToolResult(text=value)
    if isinstance(value, BaseModel):
        data = value.model_dump(mode="json")
        return ToolResult(text=json.dumps(data, ensure_ascii=False), data=data)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return ToolResult(text=str(value))
    return ToolResult(text=text, data=value if isinstance(value, dict) else {"value": value})
