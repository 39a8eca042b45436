"""A sandbox :class:`ExecResult` as a tool result the model can read."""

from __future__ import annotations

from tools.context import ToolContext
from tools.result import ToolResult
from tools.sandbox.base import ExecResult


def effective_timeout(ctx: ToolContext, requested: float | None) -> float:
    """The model may ask for less time than the sandbox's limit, never more."""
    ceiling = ctx.require_sandbox().limits.timeout_s
    return ceiling if requested is None else max(0.1, min(float(requested), ceiling))


def to_tool_result(res: ExecResult, timeout_s: float, memory_bytes: int) -> ToolResult:
    parts = []
    out, err = res.text("stdout"), res.text("stderr")
    if out:
        parts.append(out.rstrip("\n"))
    if err:
        parts.append("[stderr]\n" + err.rstrip("\n"))
    error = None
    if res.timed_out:
        error = (
            f"timed out after {timeout_s:g} s; the command and everything it started were killed"
        )
    elif res.oom:
        error = f"killed: out of memory (limit {memory_bytes // (1024 * 1024)} MiB)"
    elif res.exit_code != 0:
        error = f"exit code {res.exit_code}"
    if error:
        parts.append(f"[{error}]")
    if res.truncated:
        parts.append(
            f"[output truncated: {res.stdout_bytes} bytes on stdout, {res.stderr_bytes} on stderr]"
        )
    text = "\n".join(parts) if parts else "(no output)"
    data = {
        "exit_code": res.exit_code,
        "timed_out": res.timed_out,
        "oom": res.oom,
        "truncated": res.truncated,
        "duration_s": round(res.duration_s, 4),
        "stdout_bytes": res.stdout_bytes,
        "stderr_bytes": res.stderr_bytes,
    }
    return ToolResult(text=text, ok=res.ok, error=error, data=data)
