"""What a tool call gives back: text for the model plus structured fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tools.errors import ToolsError


class ToolError(ToolsError):
    """Raised by a tool for an expected failure; the model sees ``error: <message>``."""


@dataclass
class ToolResult:
    #: what the model is shown (already truncated to the context's limit)
    text: str
    #: False when the tool could not do what was asked (bad arguments, a failing command...)
    ok: bool = True
    #: short reason when not ok
    error: str | None = None
    #: structured fields (exit_code, timed_out, oom, truncated, duration_s, status...)
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failure(cls, message: str, **data: Any) -> ToolResult:
        return cls(text=f"error: {message}", ok=False, error=message, data=data)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "ok": self.ok, "error": self.error, "data": dict(self.data)}
