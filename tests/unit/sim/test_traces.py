"""Agent traces (sim/traces.py): the JSONL format read and written back, a bad line
as one clear error naming it, the simulator and the end-to-end benchmark driven
by a trace, and the ``swe_agent`` scenario's statistics."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.e2e import cli as e2e_cli
from benchmarks.e2e.workload import SweAgentSpec, make_swe_agent, shape, swe_agent_plans
from sim import cli as sim_cli
from sim.simulator import SimConfig, Simulation
from sim.traces import TraceError, load_trace, parse_trace, save_trace, spec_of, trace_lines

GOOD = [
    {
        "task_id": "a",
        "agent": "swe",
        "shared_prefix": 100,
        "steps": [{"input": 300, "output": 20, "tool_s": 0.5}, {"input": 50, "output": 10}],
    },
    {"agent": "swe", "shared_prefix": 100, "steps": [{"input": 200, "output": 5}]},
    {"steps": [{"input": 40, "output": 7, "tool_s": 1.25}, {"input": 9, "output": 3, "tool_s": 0}]},
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_trace_is_read_as_the_plans_it_describes(tmp_path: Path) -> None:
    t = load_trace(_write(tmp_path / "t.jsonl", [json.dumps(x) for x in GOOD] + [""]))
    a, b, c = t.plans
    assert (a.task_id, a.agent, a.new_tokens, a.output_tokens, a.tool_s) == (
        "a",
        "swe",
        (300, 50),
        (20, 10),
        (0.5,),
    )
    assert b.task_id == "t2" and b.calls == 1 and b.tool_s == ()  # its line number
    assert c.agent == "agent0" and c.tool_s == (1.25,) and c.expected_history > 59
    assert t.shared_prefix == {"swe": 100, "agent0": 0}


def test_round_trip_of_the_swe_agent_scenario(tmp_path: Path) -> None:
    plans = swe_agent_plans(SweAgentSpec(), 20, seed=3)
    path = tmp_path / "swe.jsonl"
    save_trace(path, plans, {"agent0": SweAgentSpec().system_tokens})
    back = load_trace(path)
    assert back.shared_prefix == {"agent0": SweAgentSpec().system_tokens}
    for p, q in zip(plans, back.plans, strict=True):
        assert q.tool_s == pytest.approx(p.tool_s, abs=1e-4)
        assert replace(q, tool_s=p.tool_s, arrival=p.arrival, expected_history=0) == replace(
            p, expected_history=0
        )
    assert trace_lines(back.plans, back.shared_prefix) == path.read_text().splitlines()
    # the e2e benchmark on the trace: its tasks (all by default), ids of the prefix's size
    args = e2e_cli.parse_args(["--trace", str(path)])
    assert args.tasks == 20 and args.max_total_tokens == 32768
    w = e2e_cli.build_workload(args)
    assert [x.plan.new_tokens for x in w] == [p.new_tokens for p in plans]
    assert all(len(x.system_ids) == SweAgentSpec().system_tokens for x in w)
    assert len({x.system_ids for x in w}) == 1  # one agent: one shared prompt
    more = e2e_cli.build_workload(e2e_cli.parse_args(["--trace", str(path), "--tasks", "25"]))
    assert len({x.task_id for x in more}) == 25 and more[20].plan.calls == plans[0].calls


BAD = [
    ("{not json", "Expecting property name"),
    ('{"steps": []}', "non-empty list"),
    ('{"steps": [{"input": 10, "output": -1}]}', "steps[0].output"),
    ('{"steps": [{"input": 10, "output": 2, "tool_s": 1.0}]}', "the last"),
    ('{"steps": [{"input": 10, "output": 2}, {"input": 3, "output": 1}]}', "steps[0].tool_s"),
    ('{"shared_prefix": 10, "steps": [{"input": 10, "output": 2}]}', "shared_prefix"),
    ('{"steps": [{"input": 1, "output": 1}], "arrivals": 3}', "unknown keys"),
    ('{"task_id": "a", "steps": [{"input": 1, "output": 1}]}', "already on an earlier line"),
    (
        '{"agent": "swe", "shared_prefix": 7, "steps": [{"input": 300, "output": 1}]}',
        "shared_prefix 100 on an earlier line",
    ),
    ("[1, 2]", "JSON object"),
]


@pytest.mark.parametrize(("line", "says"), BAD)
def test_a_bad_line_is_one_error_naming_it(tmp_path: Path, line: str, says: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [json.dumps(GOOD[0]), "", line])
    with pytest.raises(TraceError) as err:
        load_trace(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: ") and says in msg and "\n" not in msg


def test_the_command_lines_say_the_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path / "bad.jsonl", [json.dumps(GOOD[0]), '{"steps": 3}'])
    for parse in (e2e_cli.parse_args, sim_cli.main):
        with pytest.raises(SystemExit) as exit_:
            parse(["--trace", str(path)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"{path}:2: steps must be" in err
    with pytest.raises(TraceError, match="no task"):
        parse_trace(["", "  "], "empty")
    with pytest.raises(TraceError, match="missing.jsonl"):
        load_trace(tmp_path / "missing.jsonl")


def test_the_simulator_replays_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    plans = swe_agent_plans(SweAgentSpec(), 3, seed=0)
    save_trace(path, plans, {"agent0": 1000})
    spec = spec_of(load_trace(path))
    assert spec.trace and spec.system_prompt_tokens == 1000 and spec.agents == 1
    cfg = SimConfig(
        replicas=2, rate=0.05, duration_s=120.0, warmup_s=0.0, drain_s=3600.0, workload=spec
    )
    sim = Simulation(cfg, "ours")
    result = sim.run()
    done = sorted(sim.tasks.values(), key=lambda t: int(t.plan.task_id[1:]))
    assert result.completed == len(done) >= 3 and result.unfinished == 0
    for i, t in enumerate(done):  # the trace's tasks in order, cycling
        assert t.plan.new_tokens == plans[i % 3].new_tokens
        assert t.plan.tool_s == pytest.approx(plans[i % 3].tool_s, abs=1e-4)
    out = tmp_path / "sim.json"
    assert (
        sim_cli.main(
            [
                "--trace",
                str(path),
                "--replicas",
                "2",
                "--duration",
                "60",
                "--warmup",
                "0",
                "--policies",
                "ours",
                "--quiet",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert doc["trace"] == str(path) and doc["config"]["workload"]["trace"] == []


def test_swe_agent_keeps_the_published_step_and_tool_distributions() -> None:
    a = make_swe_agent(SweAgentSpec(), 400, seed=1)
    assert a[:5] == make_swe_agent(SweAgentSpec(), 5, seed=1)  # seeded
    steps = sorted(w.calls for w in a)

    def q(xs: Sequence[float], p: float) -> float:
        return xs[int(p * len(xs))]

    assert 37 <= q(steps, 0.5) <= 43 and 24 <= q(steps, 0.1) <= 30 and 62 <= q(steps, 0.9) <= 80
    assert max(steps) <= 127
    tools = sorted(t for w in a for t in w.plan.tool_s)
    assert 0.13 <= q(tools, 0.5) <= 0.17 and 0.32 <= q(tools, 0.9) <= 0.43
    assert 1.2 <= q(tools, 0.99) <= 3.5 and max(tools) <= 31.6
    assert 0.97 <= sum(t < 1.0 for t in tools) / len(tools) <= 0.99
    s = shape(a)
    assert s["history_max"] <= 12_000 and 7_000 <= s["history_p50"] <= 10_000
    assert statistics.median(o for w in a for o in w.plan.output_tokens) >= 15
    args = e2e_cli.parse_args(["--scenario", "swe_agent", "--tasks", "4"])
    assert args.max_total_tokens == 32768 and len(e2e_cli.build_workload(args)) == 4


def test_a_scenario_is_saved_as_a_trace_for_the_simulator(tmp_path: Path) -> None:
    """``--save-trace``: the workload's tasks, as planned, in the trace format (no
    engines); the same tasks come back from ``--trace``."""
    path = tmp_path / "default.jsonl"
    assert e2e_cli.main(["--tasks", "5", "--seed", "2", "--save-trace", str(path)]) == 0
    planned = e2e_cli.build_workload(e2e_cli.parse_args(["--tasks", "5", "--seed", "2"]))
    back = e2e_cli.build_workload(e2e_cli.parse_args(["--trace", str(path)]))
    assert [w.plan.new_tokens for w in back] == [w.plan.new_tokens for w in planned]
    assert [w.plan.output_tokens for w in back] == [w.plan.output_tokens for w in planned]
    assert [len(w.system_ids) for w in back] == [len(w.system_ids) for w in planned]
    assert {w.plan.agent for w in back} == {w.plan.agent for w in planned}
