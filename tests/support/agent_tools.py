"""Tools and agents for the runtime tests (imported by the tests and by resume_driver.py).

The tiny model has random weights: its replies are valid only because the reply
grammar forces them, so its tools take enums (a free integer or string would run
to max_new_tokens), and its answers are kept short with max_answer_chars.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any, Literal

from executor import Agent, Executor, TaskResult
from executor.sdk import LoopThread
from tools import tool

COUNTER_ENV = "AGENT_TEST_COUNTER"


@tool
async def mark(label: Literal["a", "b"]) -> str:
    """Record a side effect: append a line to the counter file.

    Args:
        label: what to record
    """
    with open(os.environ[COUNTER_ENV], "a") as f:  # the effect happens first ...
        f.write(f"{label}\n")
    await asyncio.sleep(0.3)  # ... then the tool takes a while
    return f"recorded {label}"


@tool
async def wait(label: Literal["a", "b"]) -> str:
    """Wait for a slow external system (one second).

    Args:
        label: which system
    """
    await asyncio.sleep(1.0)
    return f"{label} is ready"


def tiny_agent(*tools: Any, **overrides: Any) -> Agent:
    fields: dict[str, Any] = {
        "name": "tiny-agent",
        "model": "tiny",
        "tools": list(tools) or [mark],
        "tool_choice": "required",
        "max_steps": 4,
        "max_answer_chars": 12,
        "sampling": {"max_new_tokens": 48},
    }
    fields.update(overrides)
    return Agent(**fields)


def marking_agent() -> Agent:
    """Calls ``mark`` on every step until its step limit (5 tool runs in 6 calls)."""
    return tiny_agent(mark, reset_tool_choice=False, answer_on_repeat=False, max_steps=6)


class Gate:
    """Holds tools inside their run until the test releases them (thread-safe)."""

    def __init__(self) -> None:
        self.inside = threading.Semaphore(0)
        self.release = threading.Event()

    def reset(self) -> None:
        self.inside = threading.Semaphore(0)
        self.release.clear()


GATE = Gate()


@tool
async def gated(label: Literal["a", "b"]) -> str:
    """Record a side effect, then wait for an external system.

    Args:
        label: what to record
    """
    with open(os.environ[COUNTER_ENV], "a") as f:
        f.write(f"{label}\n")
    GATE.inside.release()
    while not GATE.release.is_set():
        await asyncio.sleep(0.02)
    return f"recorded {label}"


class Runner:
    """An Executor over the session's replicas, driven from a loop thread."""

    def __init__(self, pool: Any, journal: Path, **options: Any) -> None:
        self.loop = LoopThread("test-executor")
        options.setdefault("heal", False)  # the session's pool is shared: no replacements
        self.ex = Executor("tiny", pool=pool, journal=journal, sandbox="bwrap", **options)
        self.loop.run(self.ex.start(), timeout=120)

    def run(self, agent: Any, goal: str, **kw: Any) -> TaskResult:
        return self.loop.run(self.ex.run(agent, goal, **kw), timeout=300)

    def gather(self, agent: Any, goals: list[str]) -> list[TaskResult]:
        async def all_of() -> list[TaskResult]:
            return list(await asyncio.gather(*(self.ex.run(agent, g) for g in goals)))

        return self.loop.run(all_of(), timeout=600)

    def close(self) -> None:
        self.loop.run(self.ex.close(), timeout=120)
        self.loop.close()
