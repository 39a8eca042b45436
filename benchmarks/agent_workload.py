"""The end-to-end benchmark's workload: agent tasks replayed from a spec.

The plans come from the simulator's own generator (:mod:`sim.workload`),
so the simulator can replay exactly the same tasks for calibration. Here each
plan gets real token ids: every agent has its own system prompt (shared by its
tasks), every task its own first message, every call its own new tokens (the
tool output and reasoning it adds). A call's prompt is the previous call's
prompt, plus the previous call's output as the engine generated it, plus its
new tokens; the engine generates exactly the planned output tokens
(``ignore_eos``). Between calls, the task's tool runs for real in its sandbox:
a sleep of the planned latency, then a small command.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sim.workload import TaskPlan, WorkloadGenerator, WorkloadSpec

#: Token ids are drawn from this range: inside every registered model's vocabulary,
#: clear of the special tokens at its start.
ID_RANGE = (100, 4000)


@dataclass(frozen=True)
class ReplayTask:
    """One task's plan with its token ids."""

    plan: TaskPlan
    system_ids: tuple[int, ...]
    new_ids: tuple[tuple[int, ...], ...]  # call k's new tokens (k = 0: first message)

    @property
    def task_id(self) -> str:
        return self.plan.task_id

    @property
    def calls(self) -> int:
        return self.plan.calls

    def tool_argv(self, k: int) -> list[str]:
        """The tool after call k: a sleep of its planned latency, then a small command."""
        return ["sh", "-c", f"sleep {self.plan.tool_s[k]:.3f} && echo k={k} && ls / | wc -l"]


def make_workload(spec: WorkloadSpec, tasks: int, seed: int) -> list[ReplayTask]:
    """``tasks`` seeded plans (arrival times unused: the driver keeps a concurrency)."""
    gen = WorkloadGenerator(spec, rate=1.0, seed=seed)
    rng = random.Random(seed + 1)
    lo, hi = ID_RANGE

    def ids(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(lo, hi) for _ in range(n))

    systems = {f"agent{a}": ids(spec.system_prompt_tokens) for a in range(spec.agents)}
    out = []
    for _ in range(tasks):
        plan = gen.next_task()
        first = ids(spec.first_message_tokens)
        rest = tuple(ids(n) for n in plan.new_tokens[1:])
        out.append(ReplayTask(plan, systems[plan.agent], (first, *rest)))
    return out
