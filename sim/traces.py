"""Agent traces as JSONL: one task per line, its steps' token counts and tool times.

Each line is a JSON object::

    {"task_id": "t1", "agent": "swe", "shared_prefix": 1000,
     "steps": [{"input": 1400, "output": 77, "tool_s": 0.15},
               {"input": 230, "output": 41, "tool_s": 0.4},
               {"input": 180, "output": 90}]}

- ``steps`` (required, at least one): the task's model calls in order. ``input``:
  the new input tokens of the call (step 0: its whole first prompt, the shared
  prefix included; step k: what the tool's output and the context add after the
  previous call's output); ``output``: the tokens the call generates; ``tool_s``:
  seconds of the tool run after the call (required, >= 0, on every step but the
  last, where it must be absent or 0).
- ``agent`` (optional, default ``agent0``): the agent type; ``shared_prefix``
  (optional, default 0): the first tokens of step 0's input that are the agent's
  system prompt, shared by all its tasks (one value per agent, below step 0's input).
- ``task_id`` (optional, default ``t<line number>``, unique).

Blank lines are skipped. A bad line is one :class:`TraceError` naming the file and
the line. The simulator (``python -m sim --trace F``) and the end-to-end
benchmark (``python -m benchmarks.e2e --trace F``) replay the tasks in the file's
order at their own arrivals.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.workload import TaskPlan, WorkloadSpec


class TraceError(ValueError):
    """A trace file that cannot be read: the message names the file and the line."""


@dataclass(frozen=True)
class Trace:
    plans: tuple[TaskPlan, ...]
    shared_prefix: dict[str, int]  # agent -> its system prompt's tokens

    def __len__(self) -> int:
        return len(self.plans)


def _count(step: dict[str, Any], key: str, k: int, low: int) -> int:
    value = step.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"steps[{k}].{key} must be an integer >= {low}, not {value!r}")
    return value


def _task(data: Any, n: int) -> tuple[TaskPlan, int]:
    if not isinstance(data, dict):
        raise ValueError("a line is a JSON object (one task)")
    unknown = set(data) - {"task_id", "agent", "shared_prefix", "steps"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise ValueError("steps must be a non-empty list of objects")
    new = [_count(s, "input", k, 1) for k, s in enumerate(steps)]
    out = [_count(s, "output", k, 1) for k, s in enumerate(steps)]
    tools = []
    for k, s in enumerate(steps):
        t = s.get("tool_s", None if k < len(steps) - 1 else 0.0)
        if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
            raise ValueError(f"steps[{k}].tool_s must be a number >= 0, not {t!r}")
        if k == len(steps) - 1 and t:
            raise ValueError(f"steps[{k}] is the last: no tool runs after it (tool_s {t})")
        tools.append(float(t))
    prefix = data.get("shared_prefix", 0)
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 0 <= prefix < new[0]:
        raise ValueError(f"shared_prefix must be an integer in [0, steps[0].input), not {prefix!r}")
    agent = data.get("agent", "agent0")
    task_id = data.get("task_id", f"t{n}")
    if not isinstance(agent, str) or not agent or not isinstance(task_id, str) or not task_id:
        raise ValueError("agent and task_id must be non-empty strings")
    total = sum(new) + sum(out)
    plan = TaskPlan(
        task_id=task_id,
        agent=agent,
        arrival=0.0,
        new_tokens=tuple(new),
        output_tokens=tuple(out),
        tool_s=tuple(tools[:-1]),
        expected_history=int(1.1 * total),
    )
    return plan, prefix


def parse_trace(lines: Iterable[str], source: str = "<trace>") -> Trace:
    plans: list[TaskPlan] = []
    prefix: dict[str, int] = {}
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            plan, p = _task(json.loads(line), n)
            if plan.task_id in seen:
                raise ValueError(f"task_id {plan.task_id!r} is already on an earlier line")
            if prefix.setdefault(plan.agent, p) != p:
                raise ValueError(
                    f"agent {plan.agent!r} has shared_prefix {prefix[plan.agent]} "
                    f"on an earlier line, {p} here"
                )
        except ValueError as exc:  # json.JSONDecodeError is one
            raise TraceError(f"{source}:{n}: {exc}") from None
        seen.add(plan.task_id)
        plans.append(plan)
    if not plans:
        raise TraceError(f"{source}: no task in the trace")
    return Trace(tuple(plans), prefix)


def load_trace(path: str | Path) -> Trace:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TraceError(f"{path}: {exc.strerror or exc}") from None
    return parse_trace(text.splitlines(), str(path))


def trace_lines(plans: Iterable[TaskPlan], shared_prefix: dict[str, int]) -> list[str]:
    """Plans as trace lines (what :func:`parse_trace` reads back)."""
    out = []
    for p in plans:
        steps: list[dict[str, Any]] = []
        for k in range(p.calls):
            step: dict[str, Any] = {"input": p.new_tokens[k], "output": p.output_tokens[k]}
            if k < p.calls - 1:
                step["tool_s"] = round(p.tool_s[k], 4)
            steps.append(step)
        line = {
            "task_id": p.task_id,
            "agent": p.agent,
            "shared_prefix": shared_prefix.get(p.agent, 0),
            "steps": steps,
        }
        out.append(json.dumps(line))
    return out


def save_trace(path: str | Path, plans: Iterable[TaskPlan], shared_prefix: dict[str, int]) -> None:
    Path(path).write_text("\n".join(trace_lines(plans, shared_prefix)) + "\n")


def spec_of(trace: Trace) -> WorkloadSpec:
    """The simulator's workload spec for a trace: its tasks drawn in order (cycling)
    at the run's arrivals, and its means where a spec needs one (the baselines'
    shared prefix: the smallest agent's)."""
    plans = trace.plans
    calls = max(1, round(statistics.median(p.calls for p in plans)))
    output = max(1, round(statistics.mean(o for p in plans for o in p.output_tokens)))
    first = max(1, round(statistics.mean(p.new_tokens[0] for p in plans)))
    system = min(trace.shared_prefix.values())
    tools = sorted(t for p in plans for t in p.tool_s) or [0.0]
    median, p99 = statistics.median(tools), tools[min(len(tools) - 1, int(0.99 * len(tools)))]
    history = round(statistics.mean(sum(p.new_tokens) + sum(p.output_tokens) for p in plans))
    return WorkloadSpec(
        calls=calls,
        history_tokens=max(history, first + calls * output),
        system_prompt_tokens=system,
        first_message_tokens=max(1, first - system),
        output_tokens=output,
        tool_median_s=median,
        tool_p99_s=max(p99, median),
        agents=max(1, len(trace.shared_prefix)),
        trace=plans,
    )
