"""The task commands of the CLI: ``run`` (with a live progress display), ``tasks``,
``show`` and ``resume``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from executor.agent import DEFAULT_MODEL, Agent, AgentDefinitionError
from executor.config import ExecutorConfig
from executor.errors import ExecutorError, validation_problems
from executor.fleet.config import ReplicaConfig
from executor.loop.chat_format import ChatFormat
from executor.loop.driver import check_task
from executor.loop.journal import Journal
from executor.models import resolve
from executor.result import CallStep, FailoverStep, Step, TaskResult, ToolStep
from executor.runtime import Executor
from tools.builtin import BUILTIN_TOOLS
from tools.declare import Tool
from tools.sandbox import BACKENDS, check_backend
from tools.web.policy import WebPolicy

DEFAULT_INSTRUCTIONS = (
    "You are a helpful assistant. Use the python tool to compute. As soon as a tool result "
    "gives the answer, call final_answer with it."
)


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """The options that shape an executor, shared by ``run`` and ``serve``."""
    p.add_argument("--replicas", type=int, default=1, help="replicas to start (default: 1)")
    p.add_argument("--max-total-tokens", type=int, default=16384, help="KV pool per replica")
    p.add_argument("--sandbox", default="bwrap", choices=BACKENDS, help="tool sandbox (bwrap)")
    p.add_argument("--allow-host", action="append", default=[], help="web_fetch may reach it")
    p.add_argument("--journal", default=None, help="journal file (default: the user's data dir)")
    p.add_argument(
        "--release-in-engine",
        action="store_true",
        help="tag each task's KV with an SGLang session and close it when the scheduler "
        "releases the task, so the engine evicts it first (default: LRU decides)",
    )


def executor_config(
    args: argparse.Namespace, shape: ReplicaConfig | None = None, **extra: Any
) -> ExecutorConfig:
    """The ExecutorConfig of ``add_executor_options``' options (and ``--model``)."""
    return ExecutorConfig(
        model=args.model,
        replicas=args.replicas,
        replica=shape
        or replica_config(
            args.model,
            args.max_total_tokens,
            args.replicas,
            release_in_engine=args.release_in_engine,
        ),
        sandbox=args.sandbox,
        journal=args.journal,
        web=WebPolicy(allow_hosts=tuple(args.allow_host)),
        progress=True,
        **extra,
    )


def replica_config(
    model: str, max_total_tokens: int, replicas: int, *, release_in_engine: bool = False
) -> ReplicaConfig:
    """Replicas share this machine's cores (a CPU engine runs one torch thread per core)."""
    if replicas < 1:
        raise ExecutorError(f"--replicas must be at least 1, not {replicas}")
    cpus = max(1, (os.cpu_count() or 1) // replicas)
    try:
        return ReplicaConfig(
            model=model,
            max_total_tokens=max_total_tokens,
            num_cpus=cpus,
            cpu_threads=cpus,
            release_in_engine=release_in_engine,
        )
    except ValidationError as exc:
        problems = validation_problems(exc, "replica")
        raise ExecutorError(f"invalid replica options: {problems}") from None


def parse_tools(spec: str) -> list[Tool]:
    """``"python,read_file"`` -> the built-in tools; a clear error for an unknown name."""
    builtins = {t.name: t for t in BUILTIN_TOOLS}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in builtins]
    if unknown:
        raise AgentDefinitionError(
            f"unknown tool(s) {', '.join(unknown)}; the built-ins are {', '.join(builtins)}"
        )
    return [builtins[n] for n in names]


def add_task_commands(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run one agent task on a local replica, with live progress",
        description="Run an agent task: the model thinks, calls tools in a sandbox, and answers. "
        "Starts a local Ray cluster with the model's replica(s) (30-60 s on a CPU), shows each "
        "step live (tool, tokens, cache hits), then the answer and a table of the steps.",
    )
    p.add_argument("goal", help="what the agent should do")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default: {DEFAULT_MODEL})")
    p.add_argument(
        "--tools",
        default="python",
        help="comma-separated built-in tools: "
        f"{', '.join(t.name for t in BUILTIN_TOOLS)} (default: python)",
    )
    p.add_argument("--instructions", default=DEFAULT_INSTRUCTIONS, help="the agent's instructions")
    p.add_argument("--max-steps", type=int, default=8, help="model calls allowed (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens per reply (256)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0)")
    add_executor_options(p)
    p.add_argument(
        "--telemetry",
        default=None,
        choices=["none", "console", "otlp"],
        help="OpenTelemetry exporter (default: $EXECUTOR_TELEMETRY or none)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tasks", help="list the journal's tasks, newest first")
    p.add_argument("--journal", default=None, help="journal file")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("show", help="show one task's steps from the journal")
    p.add_argument("task_id")
    p.add_argument("--journal", default=None, help="journal file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "resume",
        help="continue a task whose driver died (no journaled tool runs again)",
        description="Continue a journaled task after its driver process died. Journaled tool "
        "results are reused, never run again; a tool interrupted mid-run is reported, not "
        "repeated. Works for agents whose tools are all built-ins.",
    )
    p.add_argument("task_id")
    p.add_argument("--journal", default=None, help="journal file")
    p.add_argument("--max-total-tokens", type=int, default=16384, help="KV pool per replica")
    p.add_argument("--sandbox", default="bwrap", choices=BACKENDS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resume)


class Progress:
    """A live table of a task's steps, fed by the executor's on_step callback."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: list[tuple[str, ...]] = []
        self.started = time.perf_counter()
        self.live = Live(self._table(), console=console, refresh_per_second=8, transient=False)

    def _table(self) -> Table:
        table = Table(title="agent task", expand=False)
        for col in ("step", "what", "tokens (prompt / cached / out)", "s", "detail"):
            table.add_column(col)
        for row in self.rows:
            table.add_row(*row)
        table.caption = f"{time.perf_counter() - self.started:.1f} s"
        return table

    def on_step(self, task_id: str, step: Step) -> None:
        self.rows.append(step_row(step))
        self.live.update(self._table())


def step_row(step: Step) -> tuple[str, ...]:
    if isinstance(step, CallStep):
        return (
            str(step.step),
            f"call @{step.replica_id}",
            f"{step.prompt_tokens} / {step.cached_tokens} / {step.completion_tokens}",
            f"{step.latency_s:.2f}",
            _short(step.reply),
        )
    if isinstance(step, FailoverStep):
        return (
            str(step.step),
            "[yellow]failover[/]",
            "",
            "",
            f"replica {step.replica_id}: {_short(step.reason)}; replaying the history elsewhere",
        )
    assert isinstance(step, ToolStep)
    flag = " (replayed)" if step.replayed else " (interrupted)" if step.interrupted else ""
    return (
        str(step.step),
        f"tool {step.tool}{flag}",
        "",
        f"{step.duration_s:.2f}",
        _short(step.output if step.ok else f"[red]{step.output}[/]"),
    )


def _short(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _print_result(result: TaskResult, as_json: bool, console: Console) -> int:
    if as_json:
        print(json.dumps(result.model_dump(), indent=2))
    calls = result.calls
    cached = sum(c.cached_tokens for c in calls)
    prompt = sum(c.prompt_tokens for c in calls)
    console.print(
        f"[bold]{result.status}[/] in {result.latency_s:.1f} s: {len(calls)} calls, "
        f"{len(result.tools)} tool runs, cache hits {cached}/{prompt} prompt tokens "
        f"({(cached / prompt if prompt else 0):.0%}); task {result.task_id}"
    )
    if result.output is not None:
        console.print(f"[bold green]answer:[/] {result.output}")
    if result.error:
        console.print(f"[red]error:[/] {result.error}")
    return 0 if result.ok else 1


def _drive(
    args: argparse.Namespace,
    console: Console,
    make: Callable[[Callable[[str, Step], None]], Executor],
    work: Callable[[Executor], Awaitable[TaskResult]],
) -> int:
    """Start an executor (``make`` gets the progress callback), do ``work`` on it under
    the live progress table, stop it, print the result."""
    progress = Progress(console)
    executor = make(progress.on_step)

    async def main() -> TaskResult:
        async with executor:
            progress.started = time.perf_counter()
            with progress.live:
                return await work(executor)

    return _print_result(asyncio.run(main()), args.json, console)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    agent = Agent(
        name="cli",
        instructions=args.instructions,
        tools=parse_tools(args.tools),
        model=args.model,
        max_steps=args.max_steps,
        sampling={"max_new_tokens": args.max_new_tokens, "temperature": args.temperature},
    )
    # everything that can be refused is refused here, before Ray or a replica starts
    if not args.goal.strip():
        raise ExecutorError("the goal is empty: say what the agent should do")
    check_backend(args.sandbox)  # a missing sandbox is one line, before the model converts
    shape = replica_config(
        args.model, args.max_total_tokens, args.replicas, release_in_engine=args.release_in_engine
    )
    check_task(agent, args.goal, ChatFormat.load(resolve(args.model)), shape.max_total_tokens)
    return _drive(
        args,
        console,
        lambda on_step: Executor(
            executor_config(args, shape, telemetry=args.telemetry), on_step=on_step
        ),
        lambda ex: ex.run(agent, args.goal),
    )


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    check_backend(args.sandbox)
    with Journal(args.journal) as journal:
        model = str(journal.get(args.task_id).agent["model"])
    return _drive(
        args,
        console,
        lambda on_step: Executor(
            ExecutorConfig(
                model=model,
                replica=replica_config(model, args.max_total_tokens, 1),
                sandbox=args.sandbox,
                journal=args.journal,
                progress=True,
            ),
            on_step=on_step,
        ),
        lambda ex: ex.resume(args.task_id),
    )


def cmd_tasks(args: argparse.Namespace, console: Console) -> int:
    with Journal(args.journal) as journal:
        rows = journal.list(args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"tasks in {journal.path}")
    for col in ("task", "agent", "status", "calls", "started", "goal"):
        table.add_column(col)
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        table.add_row(
            r["task_id"], r["agent"], r["status"], str(r["calls"]), started, _short(r["goal"], 50)
        )
    console.print(table)
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    with Journal(args.journal) as journal:
        record = journal.get(args.task_id)
    steps = [
        {"seq": s.seq, "kind": str(s.kind), **s.payload.model_dump(mode="json", exclude={"ids"})}
        for s in record.steps
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "task_id": record.task_id,
                    "status": record.status,
                    "goal": record.goal,
                    "output": record.output,
                    "error": record.error,
                    "steps": steps,
                },
                indent=2,
            )
        )
        return 0
    table = Table(title=f"{record.task_id}: {record.status}")
    for col in ("seq", "kind", "detail"):
        table.add_column(col)
    for s in steps:
        info = s.get("info", {})
        if s["kind"] == "call":
            detail = (
                f"@{info['replica_id']} prompt {info['prompt_tokens']} cached "
                f"{info['cached_tokens']} out {info['completion_tokens']}: {_short(info['reply'])}"
            )
        elif s["kind"] == "tool_start":
            detail = f"{s['tool']} {_short(json.dumps(s['arguments']))}"
        elif s["kind"] == "tool_result":
            detail = _short(info.get("output", ""))
        elif s["kind"] == "failover":
            detail = f"replica {info['replica_id']}: {_short(info['reason'])}"
        else:
            detail = _short(s.get("text", ""))
        table.add_row(str(s["seq"]), s["kind"], detail)
    console.print(f"goal: {record.goal}")
    console.print(table)
    if record.output is not None:
        console.print(f"[bold green]answer:[/] {record.output}")
    if record.error:
        console.print(f"[red]error:[/] {record.error}")
    return 0
