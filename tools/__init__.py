"""Tools an agent can call, and the sandboxes they run in.

Declaring: ``@tool`` (:mod:`tools.declare`) turns a typed function into a
:class:`Tool` with ``name``, ``description`` and ``parameters_schema`` (JSON
schema). Calling: ``await tool.invoke(args, ToolContext(sandbox=...))`` or
``await Toolbox(tools).call(name, args, ctx)`` returns a :class:`ToolResult`
(``text`` for the model, ``ok``/``error``, structured ``data``) and never
raises for what the model did. Built-ins: :data:`BUILTIN_TOOLS`. Sandboxes:
:func:`create_backend` (``bwrap`` default, ``docker``, ``local``). Errors: every
one the package raises on purpose derives from :class:`ToolsError` (:mod:`tools.errors`).
"""

from tools.builtin import (
    BUILTIN_TOOLS,
    list_files,
    python,
    read_file,
    shell,
    web_fetch,
    write_file,
)
from tools.context import ToolContext
from tools.declare import Tool, ToolDeclarationError, tool
from tools.errors import ToolsError
from tools.result import ToolError, ToolResult
from tools.sandbox import Limits, Sandbox, SandboxBackend, create_backend
from tools.toolbox import Toolbox
from tools.web.policy import WebPolicy

__all__ = [
    "BUILTIN_TOOLS",
    "Limits",
    "Sandbox",
    "SandboxBackend",
    "Tool",
    "ToolContext",
    "ToolDeclarationError",
    "ToolError",
    "ToolResult",
    "Toolbox",
    "ToolsError",
    "WebPolicy",
    "create_backend",
    "list_files",
    "python",
    "read_file",
    "shell",
    "tool",
    "web_fetch",
    "write_file",
]
