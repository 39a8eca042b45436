"""A set of tools by name: what the agent runtime hands the prompt and calls into."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tools.context import ToolContext
from tools.declare import Tool
from tools.result import ToolResult


class Toolbox:
    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            if not isinstance(t, Tool):
                raise TypeError(f"{t!r} is not a tool (decorate it with @tool)")
            if t.name in self._tools:
                raise ValueError(f"two tools are named {t.name!r}")
            self._tools[t.name] = t

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self]

    def openai_specs(self) -> list[dict[str, Any]]:
        return [t.openai_spec() for t in self]

    async def call(
        self, name: str, args: Mapping[str, Any] | str | None, ctx: ToolContext
    ) -> ToolResult:
        t = self._tools.get(name)
        if t is None:
            available = ", ".join(self._tools) or "none"
            return ToolResult.failure(f"unknown tool {name!r}; available tools: {available}")
        return await t.invoke(args, ctx)
