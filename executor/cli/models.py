"""CLI commands about models: ``models`` (list, provenance, ``--build``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from executor import models


def add_model_commands(sub: Any) -> None:
    p = sub.add_parser(
        "models", help="list the registered models, their provenance and how to get them"
    )
    p.add_argument(
        "--build", nargs="+", metavar="NAME", help="build/convert these models into the cache first"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace, console: Console) -> int:
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
