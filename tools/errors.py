"""The root of the tools package's errors.

:class:`ToolsError` is the base of every error the ``tools`` package raises on
purpose, so ``except ToolsError`` catches all of them and nothing else. Each
subclass lives next to the code that raises it (and is importable from there);
some keep a second, built-in base so that older ``except`` clauses still match:

    ToolsError
    ├── ToolError              tools.result      a tool's expected failure (the model sees it)
    ├── ToolDeclarationError   tools.declare     also a TypeError: a function is not a valid tool
    ├── SandboxError           tools.sandbox.base a sandbox could not do what was asked
    │   └── SandboxUnavailable tools.sandbox.base the backend cannot run on this machine
    └── FetchRefused           tools.web.fetch   a web request not made, or its answer refused

Errors the package does not raise on purpose (an ``OSError`` from the file
system, a ``TypeError`` or ``ValueError`` for a wrong argument, a bug) are not
wrapped in it. This module imports nothing, so any module of the package can
import it.
"""

from __future__ import annotations


class ToolsError(Exception):
    """Base of every error the tools package raises on purpose."""


__all__ = ["ToolsError"]
