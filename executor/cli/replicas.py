"""CLI commands about the replicas of a running executor: ``drain``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from executor.fleet.control import ControlChannel


def add_replica_commands(sub: Any) -> None:
    p = sub.add_parser(
        "drain",
        help="take a replica out of service without failing any task",
        description="Ask the running executor that serves REPLICA (through the journal "
        "file they share) to drain it: no new task is placed there, its running calls "
        "finish, its tasks move to other replicas at their next tool wait, then the "
        "replica is stopped. Waits until it is.",
    )
    p.add_argument("replica", help="replica id, e.g. r1 (see the executor's progress output)")
    p.add_argument("--journal", default=None, help="the executor's journal file")
    p.add_argument(
        "--claim-timeout",
        type=float,
        default=15.0,
        help="seconds to wait for an executor to take the request (default: 15)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for the drain to finish (default: 1800)",
    )
    p.set_defaults(func=cmd_drain)


def cmd_drain(args: argparse.Namespace, console: Console) -> int:
    with ControlChannel(args.journal) as control:
        command_id = control.request("drain", args.replica)
        console.print(f"drain of {args.replica} requested; waiting for the executor ...")
        done = control.wait(command_id, claim_timeout_s=args.claim_timeout, timeout_s=args.timeout)
    if done.ok:
        console.print(f"[green]{done.result}[/]")
        return 0
    console.print(f"[red]error:[/] {done.result}")
    return 2
