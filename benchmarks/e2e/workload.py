"""The end-to-end benchmark's workload: agent tasks replayed from a plan.

Two scenarios, both seeded:

- ``default``: the plans of the simulator's own generator (:mod:`sim.workload`;
  10-30 calls, uniform token spreads, lognormal tools), so the simulator can
  replay exactly the same tasks for calibration;
- ``heavy_tail``: shaped like agent traces (:func:`heavy_tail_plans`): turns
  heavy-tailed around a median of 20, per-turn observations heavy-tailed,
  tool latency lognormal with a long tail and a few 10-30 s tools (never
  capped), histories up to ~12K tokens, one shared system prompt per agent type.

Each plan gets real token ids: every agent its system prompt (shared by its
tasks), every task its first message, every call its new tokens (the tool
output it adds). A call's prompt is the previous call's prompt, plus the
previous call's output as the engine generated it, plus its new tokens. Between
calls, the task's tool runs for real in its sandbox: a sleep of the planned
latency, then a small command.

The product path (:mod:`benchmarks.e2e.product`) runs the plan through the
executor, whose prompts and replies are its own; :func:`follow_journal` then
rebuilds each task from the executor's journal (its first prompt, its
observations' ids, its replies' lengths), so every contestant does that work.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

from sim.workload import TaskPlan, WorkloadGenerator, WorkloadSpec

#: Token ids are drawn from this range: inside every registered model's vocabulary,
#: clear of the special tokens at its start.
ID_RANGE = (100, 4000)
SCENARIOS = ("default", "heavy_tail", "swe_agent")


@dataclass(frozen=True)
class ReplayTask:
    """One task's plan with its token ids."""

    plan: TaskPlan
    system_ids: tuple[int, ...]
    new_ids: tuple[tuple[int, ...], ...]  # call k's new tokens (k = 0: first message)
    #: the reply grammar (JSON schema) the executor decoded under: the replays decode
    #: under it too (it costs ~20% of a call here); None: free text of the plan's lengths
    reply_schema: str | None = None

    @property
    def task_id(self) -> str:
        return self.plan.task_id

    @property
    def calls(self) -> int:
        return self.plan.calls

    def tool_argv(self, k: int) -> list[str]:
        """The tool after call k: a sleep of its planned latency, then a small command."""
        return ["sh", "-c", f"sleep {self.plan.tool_s[k]:.3f} && echo k={k} && ls / | wc -l"]

    def tool_timeout(self, k: int) -> float:
        """Never cuts a planned tool short (the tail is the point)."""
        return self.plan.tool_s[k] + 60.0


@dataclass(frozen=True)
class HeavyTailSpec:
    """The ``heavy_tail`` scenario's shape (medians, tails, caps of the history)."""

    turns_median: int = 20
    turns_sigma: float = 0.45  # lognormal: p95 ~ 42 turns
    turns_range: tuple[int, int] = (4, 48)
    obs_median: int = 220  # tokens a tool's output adds
    obs_sigma: float = 0.9  # p99 ~ 1.8K
    history_max: int = 12_000  # a task's final history is capped near this
    system_tokens: tuple[int, ...] = (1200, 800, 1000)  # one per agent type
    first_tokens: int = 150
    output_median: int = 24
    output_sigma: float = 0.5
    tool_median_s: float = 0.5
    tool_sigma: float = 1.0  # p99 ~ 5 s
    slow_tool_p: float = 0.03  # ... and this share of tools takes 10-30 s
    slow_tool_s: tuple[float, float] = (10.0, 30.0)

    @property
    def agents(self) -> int:
        return len(self.system_tokens)


def heavy_tail_plans(spec: HeavyTailSpec, tasks: int, seed: int) -> list[TaskPlan]:
    rng = random.Random(seed)
    lo_t, hi_t = spec.turns_range
    out = []
    for n in range(1, tasks + 1):
        turns = min(
            hi_t, max(lo_t, round(spec.turns_median * math.exp(rng.gauss(0, spec.turns_sigma))))
        )
        a = rng.randrange(spec.agents)
        first = spec.system_tokens[a] + spec.first_tokens
        outs = [
            max(4, round(spec.output_median * math.exp(rng.gauss(0, spec.output_sigma))))
            for _ in range(turns)
        ]
        obs = [
            max(8, round(spec.obs_median * math.exp(rng.gauss(0, spec.obs_sigma))))
            for _ in range(turns - 1)
        ]
        room = spec.history_max - first - sum(outs)
        if sum(obs) > room:  # the history stays under the cap: scale the observations
            f = max(room, 8 * len(obs)) / sum(obs)
            obs = [max(8, int(o * f)) for o in obs]
        tools = []
        for _ in range(turns - 1):
            if rng.random() < spec.slow_tool_p:
                tools.append(rng.uniform(*spec.slow_tool_s))
            else:
                tools.append(spec.tool_median_s * math.exp(rng.gauss(0, spec.tool_sigma)))
        out.append(
            TaskPlan(
                task_id=f"t{n}",
                agent=f"agent{a}",
                arrival=float(n),
                new_tokens=(first, *obs),
                output_tokens=tuple(outs),
                tool_s=tuple(tools),
                expected_history=int(1.1 * spec.history_max),
            )
        )
    return out


@dataclass(frozen=True)
class SweAgentSpec:
    """The ``swe_agent`` scenario: SWE-agent on SWE-bench Lite (GLM-4.5, 64 tasks,
    ThunderAgent's published profiles: steps median 40, p10 27, p90 71, max 127;
    tools median 0.15 s, p90 0.37 s, p99 2 s, max 31.6 s, 98% under 1 s; output
    median 77, p90 454 tokens; inputs median 21K, p90 47K tokens), its token counts
    scaled to what the CPU holds (histories to 12K: x12/47 of the inputs), its step,
    tool and output distributions kept."""

    steps_median: int = 40
    steps_sigma: tuple[float, float] = (0.307, 0.448)  # log-space, below / above the median
    steps_range: tuple[int, int] = (5, 127)
    history_median: int = 8_500  # a task's final history (per-call inputs ~ half of it)
    history_sigma: float = 0.4
    history_max: int = 12_000
    system_tokens: int = 1_000  # the agent's prompt, shared by every task
    first_tokens: int = 400  # the issue
    output_median: int = 77
    output_sigma: float = 1.385  # p90 454
    output_max: int = 1_024
    obs_sigma: float = 0.9  # the observations' split of the history: heavy-tailed
    tool_median_s: float = 0.15
    tool_sigma: float = 0.705  # p90 0.37 s
    slow_tool_p: float = 0.012  # ... and this share log-uniform in slow_tool_s (p99 ~2 s)
    slow_tool_s: tuple[float, float] = (1.0, 31.6)


def swe_agent_plans(spec: SweAgentSpec, tasks: int, seed: int) -> list[TaskPlan]:
    rng = random.Random(f"swe_agent/{seed}")

    def lognormal(median: float, sigma: float) -> float:
        return median * math.exp(rng.gauss(0.0, sigma))

    out = []
    for n in range(1, tasks + 1):
        z = rng.gauss(0.0, 1.0)
        sigma = spec.steps_sigma[0] if z < 0 else spec.steps_sigma[1]
        steps = min(
            spec.steps_range[1],
            max(spec.steps_range[0], round(spec.steps_median * math.exp(sigma * z))),
        )
        history = min(spec.history_max, round(lognormal(spec.history_median, spec.history_sigma)))
        first = spec.system_tokens + spec.first_tokens
        outs = [
            min(spec.output_max, max(4, round(lognormal(spec.output_median, spec.output_sigma))))
            for _ in range(steps)
        ]
        room = history - first - 8 * (steps - 1)
        if sum(outs) > room // 2:  # outputs take at most half the history
            f = max(room // 2, 4 * steps) / sum(outs)
            outs = [max(4, int(o * f)) for o in outs]
        weights = [math.exp(rng.gauss(0.0, spec.obs_sigma)) for _ in range(steps - 1)]
        left = max(0, history - first - sum(outs) - 8 * (steps - 1))
        obs = [8 + int(left * w / sum(weights)) for w in weights] if weights else []
        tools = []
        for _ in range(steps - 1):
            if rng.random() < spec.slow_tool_p:
                lo, hi = spec.slow_tool_s
                tools.append(lo * (hi / lo) ** rng.random())
            else:
                tools.append(lognormal(spec.tool_median_s, spec.tool_sigma))
        out.append(
            TaskPlan(
                task_id=f"t{n}",
                agent="agent0",
                arrival=float(n),
                new_tokens=(first, *obs),
                output_tokens=tuple(outs),
                tool_s=tuple(tools),
                expected_history=int(1.1 * spec.history_max),
            )
        )
    return out


def make_swe_agent(spec: SweAgentSpec, tasks: int, seed: int) -> list[ReplayTask]:
    return with_ids(
        swe_agent_plans(spec, tasks, seed), [spec.system_tokens], spec.first_tokens, seed
    )


def from_trace(path: str, tasks: int | None, seed: int) -> list[ReplayTask]:
    """A trace's first ``tasks`` tasks (all: None; more than it holds: its tasks again,
    in order, under new ids) with token ids (:mod:`sim.traces`)."""
    from sim.traces import load_trace

    trace = load_trace(path)
    n = len(trace) if tasks is None else tasks
    plans = [trace.plans[i % len(trace)] for i in range(n)]
    if n > len(trace):
        plans = [
            dataclasses.replace(p, task_id=f"{p.task_id}~{i // len(trace)}")
            if i >= len(trace)
            else p
            for i, p in enumerate(plans)
        ]
    return with_ids(plans, trace.shared_prefix, 0, seed)


def make_workload(spec: WorkloadSpec, tasks: int, seed: int) -> list[ReplayTask]:
    """``tasks`` seeded plans of the ``default`` scenario (arrival times unused: the
    driver keeps a concurrency)."""
    gen = WorkloadGenerator(spec, rate=1.0, seed=seed)
    plans = [gen.next_task() for _ in range(tasks)]
    systems = [spec.system_prompt_tokens] * spec.agents
    return with_ids(plans, systems, spec.first_message_tokens, seed)


def make_heavy_tail(spec: HeavyTailSpec, tasks: int, seed: int) -> list[ReplayTask]:
    plans = heavy_tail_plans(spec, tasks, seed)
    return with_ids(plans, list(spec.system_tokens), spec.first_tokens, seed)


def with_ids(
    plans: list[TaskPlan],
    system_tokens: list[int] | dict[str, int],
    first_tokens: int,
    seed: int,
) -> list[ReplayTask]:
    """Token ids for each plan: agent ``agent<a>``'s system prompt has
    ``system_tokens[a]`` (a dict: by the agent's name)."""
    rng = random.Random(seed + 1)
    lo, hi = ID_RANGE

    def ids(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(lo, hi) for _ in range(n))

    named = (
        system_tokens
        if isinstance(system_tokens, dict)
        else {f"agent{a}": n for a, n in enumerate(system_tokens)}
    )
    systems = {agent: ids(n) for agent, n in named.items()}
    out = []
    for plan in plans:
        system = systems[plan.agent]
        first = ids(plan.new_tokens[0] - len(system))
        rest = tuple(ids(n) for n in plan.new_tokens[1:])
        out.append(ReplayTask(plan, system, (first, *rest)))
    return out


def follow_journal(
    workload: list[ReplayTask],
    records: dict[str, tuple[list[int], list[int], list[list[int]]]],
    reply_schema: str | None = None,
) -> list[ReplayTask]:
    """The workload as the executor ran it: ``records[task] = (first prompt ids,
    each reply's length, each observation's ids)``, its replies decoded under
    ``reply_schema``. Tool gaps stay the plan's."""
    out = []
    for w in workload:
        first, outputs, observations = records[w.task_id]
        if len(outputs) != w.calls or len(observations) != w.calls - 1:
            raise ValueError(
                f"{w.task_id}: the journal has {len(outputs)} calls and "
                f"{len(observations)} observations; the plan {w.calls} calls"
            )
        plan = dataclasses.replace(
            w.plan,
            new_tokens=(len(first), *(len(o) for o in observations)),
            output_tokens=tuple(outputs),
        )
        new = (tuple(first), *(tuple(o) for o in observations))
        out.append(ReplayTask(plan, (), new, reply_schema))
    return out


def plans_to_json(workload: list[ReplayTask]) -> list[dict[str, Any]]:
    """What the simulator needs of each task (the calibration redone from a report)."""
    return [dataclasses.asdict(w.plan) for w in workload]


def plans_from_json(data: list[dict[str, Any]]) -> list[ReplayTask]:
    out = []
    for p in data:
        plan = TaskPlan(
            task_id=str(p["task_id"]),
            agent=str(p["agent"]),
            arrival=float(p["arrival"]),
            new_tokens=tuple(p["new_tokens"]),
            output_tokens=tuple(p["output_tokens"]),
            tool_s=tuple(p["tool_s"]),
            expected_history=int(p["expected_history"]),
        )
        out.append(ReplayTask(plan, (), tuple(() for _ in plan.new_tokens)))
    return out


def shape(workload: list[ReplayTask]) -> dict[str, Any]:
    """The workload's shape in figures (the report's and the tests')."""
    calls = sorted(w.calls for w in workload)
    hist = sorted(sum(w.plan.new_tokens) + sum(w.plan.output_tokens) for w in workload)
    tools = sorted(t for w in workload for t in w.plan.tool_s)
    obs = sorted(n for w in workload for n in w.plan.new_tokens[1:])

    def q(xs: list[Any], p: float) -> Any:
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else 0

    return {
        "tasks": len(workload),
        "calls": sum(calls),
        "calls_p50": q(calls, 0.5),
        "calls_max": calls[-1] if calls else 0,
        "history_p50": q(hist, 0.5),
        "history_max": hist[-1] if hist else 0,
        "observation_p50": q(obs, 0.5),
        "observation_p99": q(obs, 0.99),
        "tool_p50_s": round(q(tools, 0.5), 3),
        "tool_p99_s": round(q(tools, 0.99), 3),
        "tool_max_s": round(tools[-1], 3) if tools else 0.0,
        "tools_over_10s": sum(t >= 10 for t in tools),
    }
