"""What a tool call runs with: the task's sandbox and the task's policies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tools.output import DEFAULT_MAX_CHARS
from tools.result import ToolError
from tools.sandbox.base import Sandbox
from tools.web.policy import WebPolicy


@dataclass
class ToolContext:
    """Passed to every tool call of one task (``await tool.invoke(args, ctx)``)."""

    sandbox: Sandbox | None = None
    web: WebPolicy = field(default_factory=WebPolicy)
    #: the text a tool shows the model is cut to this many characters (with a marker)
    max_output_chars: int = DEFAULT_MAX_CHARS
    task_id: str | None = None

    def require_sandbox(self) -> Sandbox:
        if self.sandbox is None:
            raise ToolError("this tool needs the task's sandbox, and the call has none")
        return self.sandbox

    @property
    def workspace(self) -> Path:
        return self.require_sandbox().workspace
