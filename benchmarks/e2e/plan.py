"""What one benchmark run does: its workload (by scenario) and its (contestant, load) runs."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.e2e import EVERY_LOAD, OPEN_CAPABLE
from benchmarks.e2e.workload import HeavyTailSpec, ReplayTask, SweAgentSpec


def middle(loads: list[int]) -> int:
    """The load where every contestant runs (the report's ``contestants``)."""
    return sorted(loads)[len(loads) // 2]


def schedule(
    contestants: list[str], loads: list[int], every_load: tuple[str, ...] = EVERY_LOAD
) -> list[tuple[str, int]]:
    """(contestant, load) runs: those of ``every_load`` at each load, the rest at the
    middle (the CLI passes the contestants it was given by name as ``every_load``)."""
    mid = middle(loads)
    return [
        (n, load)
        for load in sorted(set(loads))
        for n in contestants
        if n in every_load or load == mid
    ]


def open_schedule(contestants: list[str], rates: list[int]) -> list[tuple[str, int]]:
    """Open loop: (contestant, rate) runs, those of OPEN_CAPABLE at every rate, lowest
    rate first."""
    return [(n, r) for r in sorted(set(rates)) for n in contestants if n in OPEN_CAPABLE]


def workload_spec(args: argparse.Namespace) -> Any:
    """The simulator's spec of the scenario (heavy_tail, swe_agent, a trace: its
    means, for the baselines' system prompt)."""
    from sim.workload import WorkloadSpec

    if getattr(args, "trace", None):
        from sim.traces import load_trace, spec_of

        return spec_of(load_trace(args.trace))
    if getattr(args, "scenario", "default") == "swe_agent":
        s = SweAgentSpec()
        return WorkloadSpec(
            calls=s.steps_median,
            history_tokens=s.history_median,
            system_prompt_tokens=s.system_tokens,
            first_message_tokens=s.first_tokens,
            output_tokens=s.output_median,
            tool_median_s=s.tool_median_s,
            tool_p99_s=2.0,
            agents=1,
        )
    if getattr(args, "scenario", "default") == "heavy_tail":
        h = HeavyTailSpec()
        return WorkloadSpec(
            calls=h.turns_median,
            history_tokens=h.history_max,
            system_prompt_tokens=min(h.system_tokens),
            first_message_tokens=h.first_tokens,
            output_tokens=h.output_median,
            tool_median_s=h.tool_median_s,
            tool_p99_s=h.slow_tool_s[1],
            agents=h.agents,
        )
    return WorkloadSpec(
        calls=args.calls,
        calls_spread=args.calls_spread,
        history_tokens=args.history_tokens,
        system_prompt_tokens=args.system_tokens,
        first_message_tokens=args.first_tokens,
        output_tokens=args.output_tokens,
        token_spread=0.5,
        tool_median_s=args.tool_median,
        tool_p99_s=args.tool_p99,
        agents=args.agents,
    )


def build_workload(args: argparse.Namespace) -> list[ReplayTask]:
    from benchmarks.e2e.workload import from_trace, make_heavy_tail, make_swe_agent, make_workload

    if getattr(args, "trace", None):
        return from_trace(args.trace, args.tasks, args.seed)
    if getattr(args, "scenario", "default") == "swe_agent":
        return make_swe_agent(SweAgentSpec(), args.tasks, args.seed)
    if getattr(args, "scenario", "default") == "heavy_tail":
        return make_heavy_tail(HeavyTailSpec(), args.tasks, args.seed)
    return make_workload(workload_spec(args), args.tasks, args.seed)
