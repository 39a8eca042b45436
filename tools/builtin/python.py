"""``python``: run Python code in the task's sandbox, REPL style."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tools.builtin.exec_result import effective_timeout, to_tool_result
from tools.context import ToolContext
from tools.declare import tool
from tools.result import ToolResult

# Runs inside the sandbox: reads the code from stdin, runs it as __main__, prints
# the value of a final expression (like a REPL), and shows tracebacks of the
# user's code only.
BOOTSTRAP = r"""
import ast, linecache, os, sys, traceback
src = sys.stdin.read()
sys.stdin = open(os.devnull)
linecache.cache["<code>"] = (len(src), None, src.splitlines(True), "<code>")
ns = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    tree = ast.parse(src, "<code>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<code>", "exec"), ns)
    if last is not None:
        value = eval(compile(last, "<code>", "eval"), ns)
        if value is not None:
            print(repr(value))
except SystemExit:
    raise
except BaseException as exc:
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if f.filename != "<string>"])
    sys.stdout.flush()
    print("".join(te.format()), end="", file=sys.stderr)
    sys.exit(1)
"""


@tool
async def python(
    ctx: ToolContext,
    code: Annotated[str, Field(min_length=1)],
    timeout_s: Annotated[float | None, Field(gt=0)] = None,
) -> ToolResult:
    """Run Python 3 code in the task's workspace (no network). The value of a final
    expression is printed, as in a REPL; use print() for anything else.

    Args:
        code: the program text
        timeout_s: seconds before it is killed (default and maximum: the sandbox's limit)
    """
    sandbox = ctx.require_sandbox()
    timeout = effective_timeout(ctx, timeout_s)
    res = await sandbox.exec(["python3", "-c", BOOTSTRAP], stdin=code, timeout=timeout)
    return to_tool_result(res, timeout, sandbox.limits.memory_bytes)
