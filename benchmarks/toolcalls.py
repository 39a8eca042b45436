"""Real agent frameworks, unchanged but for their base URL, on tasks only tools can
answer (issue 30): our gateway against SGLang's own OpenAI server, same weights.

Frameworks (each as its documentation shows, ``tool_choice`` left at its default,
``auto``): a plain ``openai`` chat-completions loop; openai-agents through chat
completions and through responses (its default); langchain-openai ``bind_tools`` in a
loop. smolagents is not in the dev extra, so it is not run. The clients come with the
dev extra (the README's test command installs it).

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
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from benchmarks.toolcall_servers import SERVERS, Endpoint

CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Quito", "Perth"]
CURRENCIES = ["EUR", "GBP", "JPY", "CHF", "NOK"]
SYSTEM = (
    "You are a helpful assistant. Use the tools to find facts; never guess. When you "
    "have the value, answer in one short sentence that contains it."
)
TOOLS: list[dict[str, Any]] = [
    {
        "name": "station_code",
        "description": "The code of the weather station of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": CITIES}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    {
        "name": "weather",
        "description": "The temperature now at a weather station, by its code.",
        "parameters": {
            "type": "object",
            "properties": {"station": {"type": "string", "pattern": "^ST-[0-9]{4}$"}},
            "required": ["station"],
            "additionalProperties": False,
        },
    },
    {
        "name": "exchange_rate",
        "description": "How many units of a currency one US dollar buys today.",
        "parameters": {
            "type": "object",
            "properties": {"currency": {"type": "string", "enum": CURRENCIES}},
            "required": ["currency"],
            "additionalProperties": False,
        },
    },
    {
        "name": "population",
        "description": "The population of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": CITIES}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
]
SCHEMAS = {t["name"]: t["parameters"] for t in TOOLS}


@dataclass
class Task:
    """One question, the tool calls that answer it (in order) and the value."""

    prompt: str
    expected: list[tuple[str, dict[str, Any]]]
    answer: str
    facts: dict[str, str]  # what each tool returns, by its call (name + arguments)


def _key(name: str, args: dict[str, Any]) -> str:
    return f"{name}:{json.dumps(args, sort_keys=True)}"


def make_tasks(n: int, seed: int) -> list[Task]:
    """``n`` tasks, four kinds in turn, every value drawn from ``seed``."""
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        city, currency = rng.choice(CITIES), rng.choice(CURRENCIES)
        code = f"ST-{rng.randrange(1000, 10000)}"
        temp = f"{rng.randrange(-9, 35)} C"
        rate = f"{rng.uniform(0.5, 150):.4f}"
        people = str(rng.randrange(100_000, 9_000_000))
        kind = i % 4
        if kind == 0:
            call = ("station_code", {"city": city})
            tasks.append(
                Task(
                    f"What is the code of the weather station of {city}?",
                    [call],
                    code,
                    {_key(*call): code},
                )
            )
        elif kind == 1:
            call = ("exchange_rate", {"currency": currency})
            text = f"1 USD = {rate} {currency}"
            tasks.append(
                Task(
                    f"How many {currency} does one US dollar buy today?",
                    [call],
                    rate,
                    {_key(*call): text},
                )
            )
        elif kind == 2:
            call = ("population", {"city": city})
            tasks.append(
                Task(f"What is the population of {city}?", [call], people, {_key(*call): people})
            )
        else:
            first, second = ("station_code", {"city": city}), ("weather", {"station": code})
            tasks.append(
                Task(
                    f"What is the temperature at the weather station of {city}? Find its "
                    "station code first, then the weather there.",
                    [first, second],
                    temp,
                    {_key(*first): code, _key(*second): temp},
                )
            )
    return tasks


@dataclass
class Run:
    """What one framework did on one task."""

    ran: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    final: str = ""
    error: str | None = None
    latencies: list[float] = field(default_factory=list)

    def tool(self, task: Task, name: str, args: Any) -> str:
        """Run a tool call of the model: the task's fact, or an error it can read."""
        if not isinstance(args, dict):
            args = {}
        self.ran.append((name, args))
        if name not in SCHEMAS:
            return f"error: no tool {name!r}"
        try:
            jsonschema.validate(args, SCHEMAS[name])
        except jsonschema.ValidationError as exc:
            return f"error: {exc.message}"
        return task.facts.get(_key(name, args), "error: unknown")

    def tools_right(self, task: Task) -> bool:
        """The expected calls ran, in order (other calls may come between)."""
        it = iter(self.ran)
        return all(any(c == want for c in it) for want in task.expected)

    def http(self) -> httpx.AsyncClient:
        """An HTTP client that times each call into ``latencies``."""

        async def start(request: httpx.Request) -> None:
            request.extensions["t0"] = time.perf_counter()

        async def end(response: httpx.Response) -> None:
            self.latencies.append(time.perf_counter() - response.request.extensions["t0"])

        return httpx.AsyncClient(timeout=600, event_hooks={"request": [start], "response": [end]})


MAX_TURNS = 5
MAX_TOKENS = 200


def _args(raw: str) -> Any:
    try:
        return json.loads(raw or "{}")
    except json.JSONDecodeError:
        return None


async def openai_loop(at: Endpoint, model: str, task: Task, run: Run) -> str:
    import openai

    async with run.http() as http:
        client = openai.AsyncOpenAI(
            base_url=at.base, api_key=at.key, http_client=http, max_retries=0
        )
        tools: Any = [{"type": "function", "function": t} for t in TOOLS]
        messages: list[Any] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": task.prompt},
        ]
        for _ in range(MAX_TURNS):
            out = await client.chat.completions.create(
                model=model, messages=messages, tools=tools, temperature=0, max_tokens=MAX_TOKENS
            )
            msg = out.choices[0].message
            messages.append(msg.model_dump(exclude_none=True))
            if not msg.tool_calls:
                return msg.content or ""
            for call in msg.tool_calls:
                fn = call.function  # type: ignore[union-attr]
                result = run.tool(task, fn.name, _args(fn.arguments))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        return ""


async def _agents(at: Endpoint, model: str, task: Task, run: Run, responses: bool) -> str:
    import openai
    from agents import (
        Agent,
        FunctionTool,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)

    def function_tool(spec: dict[str, Any]) -> FunctionTool:
        async def invoke(_ctx: Any, raw: str) -> str:
            return run.tool(task, spec["name"], _args(raw))

        return FunctionTool(
            name=spec["name"],
            description=spec["description"],
            params_json_schema=spec["parameters"],
            on_invoke_tool=invoke,
        )

    async with run.http() as http:
        client = openai.AsyncOpenAI(
            base_url=at.base, api_key=at.key, http_client=http, max_retries=0
        )
        kind = OpenAIResponsesModel if responses else OpenAIChatCompletionsModel
        agent = Agent(
            name="facts",
            instructions=SYSTEM,
            tools=[function_tool(t) for t in TOOLS],
            model=kind(model=model, openai_client=client),
            model_settings=ModelSettings(temperature=0, max_tokens=MAX_TOKENS),
        )
        result = await Runner.run(agent, task.prompt, max_turns=MAX_TURNS)
        return str(result.final_output)


async def agents_chat(at: Endpoint, model: str, task: Task, run: Run) -> str:
    return await _agents(at, model, task, run, responses=False)


async def agents_responses(at: Endpoint, model: str, task: Task, run: Run) -> str:
    return await _agents(at, model, task, run, responses=True)


async def langchain_loop(at: Endpoint, model: str, task: Task, run: Run) -> str:
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    async with run.http() as http:
        llm = ChatOpenAI(
            model=model,
            base_url=at.base,
            api_key=at.key,
            http_async_client=http,
            temperature=0,
            max_tokens=MAX_TOKENS,
            max_retries=0,
        ).bind_tools([{"type": "function", "function": t} for t in TOOLS])
        messages: list[Any] = [SystemMessage(SYSTEM), HumanMessage(task.prompt)]
        for _ in range(MAX_TURNS):
            ai = await llm.ainvoke(messages)
            messages.append(ai)
            if not ai.tool_calls:
                return str(ai.content)
            for call in ai.tool_calls:
                result = run.tool(task, call["name"], call["args"])
                messages.append(ToolMessage(result, tool_call_id=call["id"]))
        return ""


Framework = Callable[[Endpoint, str, Task, Run], Awaitable[str]]
FRAMEWORKS: dict[str, Framework] = {
    "openai": openai_loop,
    "agents_chat": agents_chat,
    "agents_responses": agents_responses,
    "langchain": langchain_loop,
}


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
    raise SystemExit(main())
