"""``python -m executor serve``: the executor as an HTTP service (executor/service/)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console

from executor.agent import DEFAULT_MODEL
from executor.cli.tasks import add_executor_options, executor_config
from executor.errors import ExecutorError
from tools.sandbox import check_backend


def add_serve_command(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run one executor as an HTTP service (tasks, events, replicas, metrics)",
        description="One long-lived executor (one scheduler core for the fleet) behind an HTTP "
        "API: POST /v1/tasks, GET /v1/tasks/{id}[/events], /v1/replicas, /metrics, OpenAPI at "
        "/docs. Unfinished tasks of its journal are resumed at start. A bearer token "
        "($EXECUTOR_TOKEN or --token-file) is required to listen beyond loopback.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--token-file", default=None, help="file with the bearer token")
    p.add_argument(
        "--agents",
        action="append",
        default=[],
        metavar="MODULE",
        help="a Python module whose Agent objects clients may name (repeatable)",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default: {DEFAULT_MODEL})")
    add_executor_options(p)
    p.add_argument(
        "--telemetry",
        default=None,
        choices=["none", "console", "otlp"],
        help="OpenTelemetry exporter besides /metrics (default: none)",
    )
    p.add_argument(
        "--max-active",
        type=int,
        default=256,
        help="tasks running or queued at once; more get 429 (256)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="with --replica-actor: a Ray cluster whose replicas to serve on",
    )
    p.add_argument(
        "--replica-actor",
        action="append",
        default=[],
        metavar="NAME",
        help="serve on this running replica actor instead of starting replicas",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    # the service's app (with the gateway's SGLang protocol types: seconds to import) is
    # loaded only by this command, so `run`, `tasks` and --help start at once
    from executor.fleet.pool import ReplicaPool
    from executor.service import ServiceOptions, build_service, serve
    from executor.service.agents import load_agents
    from executor.service.auth import check_bind, load_token

    token = load_token(args.token_file)
    check_bind(args.host, token)  # before any replica starts
    check_backend(args.sandbox)
    if args.replica_actor and not args.ray_address:
        raise ExecutorError("--replica-actor needs --ray-address")
    agents = load_agents(args.agents, args.model)
    pool = ReplicaPool.attach(args.ray_address, args.replica_actor) if args.replica_actor else None
    service = build_service(
        executor_config(args),
        agents,
        pool=pool,
        max_active=args.max_active,
        telemetry=args.telemetry,
    )
    console.print(f"serving on http://{args.host}:{args.port} (docs at /docs)")
    sys.stdout.flush()
    serve(service, ServiceOptions(host=args.host, port=args.port, token=token))
    if pool is not None:
        pool.shutdown()
    return 0
