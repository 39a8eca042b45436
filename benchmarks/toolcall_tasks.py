"""The framework benchmark's tasks (:mod:`benchmarks.toolcalls`): questions only
tools can answer, their tools (JSON schemas), and ``Run``, what one framework did on
one task (the tools it ran, its final text, its calls' latencies)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema

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

    def sync_http(self) -> httpx.Client:
        """The same, for a synchronous client (smolagents)."""

        def start(request: httpx.Request) -> None:
            request.extensions["t0"] = time.perf_counter()

        def end(response: httpx.Response) -> None:
            self.latencies.append(time.perf_counter() - response.request.extensions["t0"])

        return httpx.Client(timeout=600, event_hooks={"request": [start], "response": [end]})
