"""Seeded agent workload: tasks of sequential calls separated by tools.

A task of agent ``a`` starts from the agent's shared system prompt plus its own
first message; each call adds ``new`` tokens (tool output, reasoning) to the
prompt and generates ``output`` tokens, which join the history. New tokens per
call are sized so the final history reaches ``history_tokens`` on average.
Tool latencies are lognormal with the given median and p99.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

Z99 = 2.3263478740408408  # standard normal 0.99 quantile


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    calls: int = 20
    calls_spread: float = 0.0  # calls uniform in calls x [1 - s, 1 + s]
    history_tokens: int = 30_000  # mean final history
    system_prompt_tokens: int = 1_500
    first_message_tokens: int = 500
    output_tokens: int = 30
    token_spread: float = 0.5  # new/output tokens uniform in mean x [1 - s, 1 + s]
    output_p99_tokens: int = 0  # > 0: output tokens lognormal (median output_tokens, this p99)
    tool_median_s: float = 2.0
    tool_p99_s: float = 4.0
    agents: int = 4
    expect_margin: float = 1.1  # expected_history told to the core = margin x mean
    #: a trace's tasks (:mod:`sim.traces`): drawn in order, cycling, at the Poisson
    #: arrivals instead of generated; the fields above are then the trace's means
    trace: tuple[TaskPlan, ...] = ()

    def __post_init__(self) -> None:
        if self.calls < 1:
            raise ValueError("calls must be >= 1")
        if not 0 <= self.calls_spread < 1 or not 0 <= self.token_spread < 1:
            raise ValueError("spreads must be in [0, 1)")
        if self.output_tokens < 0 or self.system_prompt_tokens < 0:
            raise ValueError("token counts must be >= 0")
        if self.first_message_tokens < 1:
            raise ValueError("first_message_tokens must be >= 1")
        median, p99 = self.tool_median_s, self.tool_p99_s
        if median < 0 or (median > 0 and p99 < median):
            raise ValueError("need 0 <= tool median <= tool p99")
        if self.output_p99_tokens and self.output_p99_tokens < self.output_tokens:
            raise ValueError("output_p99_tokens must be >= output_tokens")
        if self.agents < 1:
            raise ValueError("agents must be >= 1")
        if self.history_tokens < self.initial_prompt + self.calls * self.output_tokens:
            raise ValueError(
                "history_tokens is smaller than the first prompt plus every call's output"
            )

    @property
    def initial_prompt(self) -> int:
        return self.system_prompt_tokens + self.first_message_tokens

    @property
    def mean_new_tokens(self) -> float:
        """Mean new tokens per call after the first (so history reaches the target)."""
        if self.calls == 1:
            return 0.0
        grow = self.history_tokens - self.initial_prompt - self.calls * self.output_tokens
        return grow / (self.calls - 1)

    @property
    def tool_sigma(self) -> float:
        if self.tool_median_s <= 0:
            return 0.0
        return math.log(self.tool_p99_s / self.tool_median_s) / Z99


@dataclass(frozen=True, slots=True)
class TaskPlan:
    task_id: str
    agent: str
    arrival: float
    new_tokens: tuple[int, ...]  # call k's new prompt tokens (call 0: the first prompt)
    output_tokens: tuple[int, ...]
    tool_s: tuple[float, ...]  # tool after call k (len = calls - 1)
    expected_history: int

    @property
    def calls(self) -> int:
        return len(self.new_tokens)


class WorkloadGenerator:
    """Poisson arrivals at ``rate`` tasks/s; every draw from one seeded RNG."""

    def __init__(self, spec: WorkloadSpec, rate: float, seed: int) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.spec = spec
        self.rate = rate
        self._rng = random.Random(seed)
        self._t = 0.0
        self._n = 0

    def _spread(self, mean: float, s: float) -> int:
        return max(0, round(mean * (1.0 + s * (2.0 * self._rng.random() - 1.0))))

    def tool_latency(self) -> float:
        spec = self.spec
        if spec.tool_median_s <= 0:
            return 0.0
        return spec.tool_median_s * math.exp(spec.tool_sigma * self._rng.gauss(0.0, 1.0))

    def next_task(self) -> TaskPlan:
        spec, rng = self.spec, self._rng
        self._t += rng.expovariate(self.rate)
        self._n += 1
        if spec.trace:
            plan = spec.trace[(self._n - 1) % len(spec.trace)]
            return replace(plan, task_id=f"t{self._n}", arrival=self._t)
        calls = spec.calls
        if spec.calls_spread:
            calls = max(1, self._spread(spec.calls, spec.calls_spread))
        new = [spec.initial_prompt] + [
            max(1, self._spread(spec.mean_new_tokens, spec.token_spread)) for _ in range(calls - 1)
        ]
        if spec.output_p99_tokens:
            sigma = math.log(spec.output_p99_tokens / spec.output_tokens) / Z99
            out = [
                max(1, round(spec.output_tokens * math.exp(sigma * rng.gauss(0.0, 1.0))))
                for _ in range(calls)
            ]
        else:
            out = [
                max(1, self._spread(spec.output_tokens, spec.token_spread)) for _ in range(calls)
            ]
        tools = [self.tool_latency() for _ in range(calls - 1)]
        return TaskPlan(
            task_id=f"t{self._n}",
            agent=f"agent{rng.randrange(spec.agents)}",
            arrival=self._t,
            new_tokens=tuple(new),
            output_tokens=tuple(out),
            tool_s=tuple(tools),
            expected_history=int(spec.history_tokens * spec.expect_margin),
        )
