"""``shell``: run a command with /bin/sh in the task's sandbox."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.builtin.exec_result import effective_timeout, to_tool_result
from tools.context import ToolContext
from tools.declare import tool
from tools.result import ToolResult


@tool
async def shell(
    ctx: ToolContext,
    command: Annotated[str, Field(min_length=1)],
    timeout_s: Annotated[float | None, Field(gt=0)] = None,
) -> ToolResult:
    """Run a shell command (/bin/sh -c) in the task's workspace, with no network access.

    Args:
        command: the command line, e.g. "ls -la && cat notes.txt"
        timeout_s: seconds before the command is killed (default and maximum: the sandbox's limit)
    """
    sandbox = ctx.require_sandbox()
    timeout = effective_timeout(ctx, timeout_s)
    res = await sandbox.exec(["/bin/sh", "-c", command], timeout=timeout)
    return to_tool_result(res, timeout, sandbox.limits.memory_bytes)
