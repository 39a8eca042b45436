"""The command line: ``python -m executor`` (or ``agent-executor``), one module per
command group."""

from executor.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
