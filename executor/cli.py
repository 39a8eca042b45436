"""The command line: ``python -m executor`` (or ``agent-executor``)."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from executor.cli_replicas import add_replica_commands
from executor.cli_tasks import add_task_commands
from executor.errors import ExecutorError


def _cmd_models(args: argparse.Namespace, console: Console) -> int:
    from executor import models

    if args.build:
        for name in args.build:
            path = models.resolve(name)
            console.print(f"{name}: ready at {path}")
    rows = models.describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="models")
    for col in ("name", "ready", "provenance", "description / how to get it"):
        table.add_column(col)
    for row in rows:
        prov = row["provenance"] or {}
        digest = prov.get("gguf_sha256") or prov.get("weights_sha256") or ""
        source = ", ".join(f"{p}=={prov.get('package_version')}" for p in prov.get("packages", []))
        provenance = (
            f"{source or prov.get('source', '')} sha256:{str(digest)[:12]}" if prov else "-"
        )
        table.add_row(
            str(row["name"]),
            "yes" if row["ready"] else "no",
            provenance,
            f"{row['description']}\n[dim]{row['get']}[/]",
        )
    console.print(table)
    return 0


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from executor.demo import run_demo

    report = run_demo(args.model, args.steps, args.max_total_tokens, console)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m executor",
        description="Agent executor: LLM agents on SGLang replicas hosted in Ray actors.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "models", help="list the registered models, their provenance and how to get them"
    )
    p.add_argument(
        "--build", nargs="+", metavar="NAME", help="build/convert these models into the cache first"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser(
        "demo",
        help="start one replica and show warm vs cold calls of a growing conversation",
        description="Starts a real SGLang replica in a Ray actor and runs a growing "
        "conversation on it: each call extends the previous one, and SGLang's "
        "cached_tokens shows that only the new tokens are prefilled.",
    )
    p.add_argument(
        "--model", default="smollm2-135m", help="model name or HF folder (default: smollm2-135m)"
    )
    p.add_argument("--steps", type=int, default=6, help="calls in the conversation (default: 6)")
    p.add_argument("--max-total-tokens", type=int, default=16384, help="KV pool size in tokens")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    p.set_defaults(func=_cmd_demo)
    add_task_commands(sub)
    add_replica_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        return int(args.func(args, console))
    except ExecutorError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
