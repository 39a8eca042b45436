"""The command line: ``python -m executor`` (or ``agent-executor``)."""

from __future__ import annotations

import argparse
import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

from executor.cli.demo import add_demo_commands
from executor.cli.models import add_model_commands
from executor.cli.replicas import add_replica_commands
from executor.cli.serve import add_serve_command
from executor.cli.tasks import add_task_commands
from executor.errors import ExecutorError
from tools.errors import ToolsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m executor",
        description="Agent executor: LLM agents on SGLang replicas hosted in Ray actors.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_model_commands(sub)

    add_demo_commands(sub)
    add_task_commands(sub)
    add_replica_commands(sub)
    add_serve_command(sub)
    return parser


def show_logs(console: Console) -> None:
    """The executor's own log (replica deaths, healing, model conversion) on the console:
    the library logs, the CLI shows."""
    logger = logging.getLogger("executor")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_time=False, show_path=False))
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    show_logs(console)
    try:
        return int(args.func(args, console))
    except (ExecutorError, ToolsError) as exc:  # refused on purpose: one line with the fix
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
