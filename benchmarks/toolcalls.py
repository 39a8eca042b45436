"""Real agent frameworks, unchanged but for their base URL, on tasks only tools can
answer (issue 30): our gateway against SGLang's own OpenAI server, same weights.

Frameworks (each as its documentation shows, ``tool_choice`` left at its default,
``auto``): a plain ``openai`` chat-completions loop; openai-agents through chat
completions and through responses (its default); langchain-openai ``bind_tools`` in a
loop; smolagents' ``ToolCallingAgent`` (its own loop and prompts, ``final_answer`` a
tool). The clients come with the dev extra (the README's test command installs it).

Tasks (seeded, ``--tasks`` of them, four kinds in turn): a station code, an exchange
rate, a population (one call each) and the temperature at a city's station (two calls
in sequence: the code, then the weather there). Every value is drawn per task, so only
the tools know it. Per server and framework the report gives: tasks whose expected
calls all ran (``tools_right``), answers that contain the value (``answers_right``),
client exceptions by type, model calls and their mean latency (the client's wall time
per HTTP call), and tool calls that repeat an earlier one of the task (same name and
arguments: a model looping on a call whose result it already has).

Servers: ``python -m executor serve`` (the gateway; grammar-constrained tool calls)
and ``python -m sglang.launch_server --tool-call-parser qwen25`` (its parser only),
one at a time, each with all of this machine's cores.

    python -m benchmarks.toolcalls --model qwen2.5-coder-0.5b --tasks 8 --json F
    python -m benchmarks.toolcalls --model tiny --tasks 30   # shapes only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.toolcall_clients import FRAMEWORKS, MAX_TURNS
from benchmarks.toolcall_servers import SERVERS, Endpoint
from benchmarks.toolcall_tasks import SCHEMAS, Run, Task, _key, make_tasks

__all__ = ["FRAMEWORKS", "SCHEMAS", "Run", "Task", "main", "make_tasks", "score"]


def score(task: Task, run: Run) -> dict[str, Any]:
    return {
        "tools_right": run.tools_right(task),
        "answer_right": task.answer in run.final,
        "error": run.error,
        "calls": len(run.latencies),
        "repeats": len(run.ran) - len({_key(n, a) for n, a in run.ran}),
        "ran": [[n, a] for n, a in run.ran],
    }


async def run_framework(name: str, at: Endpoint, model: str, tasks: list[Task]) -> dict[str, Any]:
    runs = []
    latencies: list[float] = []
    for task in tasks:
        run = Run()
        try:
            run.final = await FRAMEWORKS[name](at, model, task, run)
        except Exception as exc:  # the client's exception is the measurement
            run.error = f"{type(exc).__name__}: {str(exc)[:160]}"
        latencies += run.latencies
        runs.append(score(task, run))
    errors: dict[str, int] = {}
    for r in runs:
        if r["error"]:
            kind = r["error"].split(":", 1)[0]
            errors[kind] = errors.get(kind, 0) + 1
    n = len(tasks)
    return {
        "tasks": n,
        "tools_right": sum(r["tools_right"] for r in runs) / n,
        "answers_right": sum(r["answer_right"] for r in runs) / n,
        "exceptions": errors,
        "calls": len(latencies),
        "repeated_tool_calls": sum(r["repeats"] for r in runs),
        "latency_per_call_s": sum(latencies) / len(latencies) if latencies else None,
        "runs": runs,
    }


# -- servers -------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    rows = [
        "| server | framework | tools right | answers right | exceptions | calls | "
        "repeated tool calls | s / call |"
    ]
    rows.append("|---|---|---:|---:|---|---:|---:|---:|")
    for server, frameworks in report["servers"].items():
        for name, r in frameworks.items():
            lat = r["latency_per_call_s"]
            rows.append(
                f"| {server} | {name} | {r['tools_right']:.0%} | {r['answers_right']:.0%} | "
                f"{', '.join(f'{k} {v}' for k, v in r['exceptions'].items()) or '-'} | "
                f"{r['calls']} | {r['repeated_tool_calls']} | "
                f"{'-' if lat is None else f'{lat:.2f}'} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.toolcalls",
        description="Agent frameworks on tool-only tasks: our gateway against SGLang's server.",
    )
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="model (qwen2.5-coder-0.5b)")
    ap.add_argument("--tasks", type=int, default=30, help="tasks per framework (30)")
    ap.add_argument("--seed", type=int, default=0, help="draws the tasks' values (0)")
    ap.add_argument(
        "--frameworks", default=",".join(FRAMEWORKS), help=f"subset of {','.join(FRAMEWORKS)}"
    )
    ap.add_argument("--servers", default="ours,sglang", help="subset of ours,sglang")
    ap.add_argument("--max-total-tokens", type=int, default=16384, help="KV pool (16384)")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    servers = [s for s in args.servers.split(",") if s]
    unknown = [f for f in frameworks if f not in FRAMEWORKS] + [
        s for s in servers if s not in SERVERS
    ]
    if unknown or args.tasks < 1:
        ap.error(
            f"unknown framework or server: {', '.join(unknown)}" if unknown else "--tasks >= 1"
        )
    tasks = make_tasks(args.tasks, args.seed)
    report: dict[str, Any] = {
        "model": args.model,
        "tasks": args.tasks,
        "seed": args.seed,
        "max_turns": MAX_TURNS,
        "servers": {},
    }
    with tempfile.TemporaryDirectory(prefix="toolcalls-") as tmp:
        for server in servers:
            log_dir = Path(tmp) / server
            log_dir.mkdir()
            print(f"[toolcalls] starting {server} ({args.model})", file=sys.stderr)
            with SERVERS[server](args.model, args.max_total_tokens, log_dir) as at:
                out = report["servers"][server] = {}
                for name in frameworks:
                    t0 = time.monotonic()
                    out[name] = asyncio.run(run_framework(name, at, args.model, tasks))
                    out[name]["wall_s"] = round(time.monotonic() - t0, 1)
                    r = out[name]
                    print(
                        f"[toolcalls] {server} {name}: tools {r['tools_right']:.0%}, answers "
                        f"{r['answers_right']:.0%}, exceptions {r['exceptions'] or 0} "
                        f"({r['wall_s']} s)",
                        file=sys.stderr,
                    )
    print(table(report), file=sys.stderr)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(
        json.dumps(
            {k: v for k, v in report.items() if k != "servers"}
            | {
                "summary": {
                    s: {
                        f: {
                            k: r[k]
                            for k in (
                                "tools_right",
                                "answers_right",
                                "exceptions",
                                "latency_per_call_s",
                            )
                        }
                        for f, r in fw.items()
                    }
                    for s, fw in report["servers"].items()
                }
            }
        )
    )
    return 0


if __name__ == "__main__":
    from benchmarks.sglang_http import exit_on_sigterm

    exit_on_sigterm()
    raise SystemExit(main())
