"""The agent runtime end to end on real engines (tiny model, the session's replicas):
tasks run tools and finish, calls extend each other in the radix cache, tasks share
a replica across their tool waits, the KV budget queues tasks, a killed driver's task
resumes with every tool run exactly once, and bad replies end cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_tools import Runner, mark, marking_agent, tiny_agent, wait

from executor import TaskResult
from executor.loop.journal import Journal, JournalError

pytestmark = pytest.mark.engine
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runner(pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = Runner(pool, tmp_path_factory.mktemp("journal") / "j.sqlite", telemetry="memory")
    yield r
    r.close()


def test_task_runs_a_tool_and_answers(runner: Runner, counter: Path) -> None:
    result = runner.run(tiny_agent(mark), "Mark a record, then answer.")
    assert result.status == "succeeded", result
    assert result.output and len(result.output) <= 12
    assert [t.tool for t in result.tools] == ["mark"]
    assert len(counter.read_text().splitlines()) == 1  # the tool ran exactly once
    assert result.calls[-1].reply.startswith('{"name": "final_answer"')
    # journaled, step by step
    record = runner.ex.journal.get(result.task_id)
    assert record.status == "succeeded" and record.output == result.output
    kinds = [s.kind for s in record.steps]
    assert kinds == ["call", "tool_start", "tool_result", "observation", "call"]
    # traced: invoke_agent > chat, execute_tool, with SGLang's token counts
    spans = [
        s
        for s in runner.ex.telemetry.finished_spans()
        if s.context.trace_id == _task_span(runner, result).context.trace_id
    ]
    names = sorted(s.name for s in spans)
    assert names == ["chat tiny", "chat tiny", "execute_tool mark", "invoke_agent tiny-agent"]
    chat = [s for s in spans if s.name == "chat tiny"][1]
    assert chat.attributes["gen_ai.usage.cache_read.input_tokens"] == result.calls[1].cached_tokens
    assert chat.attributes["gen_ai.usage.input_tokens"] == result.calls[1].prompt_tokens
    assert chat.attributes["executor.replica.id"] == result.calls[1].replica_id


def _task_span(runner: Runner, result: TaskResult) -> Any:
    return next(
        s
        for s in runner.ex.telemetry.finished_spans()
        if s.name.startswith("invoke_agent")
        and s.attributes["gen_ai.conversation.id"] == result.task_id
    )


def test_call_k_extends_call_k_minus_1_in_the_radix_cache(runner: Runner, counter: Path) -> None:
    result = runner.run(marking_agent(), "Mark records until told to stop.")
    calls = result.calls
    assert len(calls) == 6 and result.status == "step_limit"
    record = runner.ex.journal.get(result.task_id)
    observations = [s.payload.ids for s in record.steps if s.kind == "observation"]
    for k in range(1, len(calls)):
        prev, call = calls[k - 1], calls[k]
        assert call.replica_id == prev.replica_id  # sticky
        # the prompt is exactly the previous prompt + its output + one observation ...
        assert call.prompt_tokens == (
            prev.prompt_tokens + prev.completion_tokens + len(observations[k - 1])
        )
        # ... and SGLang served all of the previous prompt from its cache
        assert call.cached_tokens >= prev.prompt_tokens, (k, call, prev)
    assert calls[0].cached_tokens < calls[0].prompt_tokens


def test_tasks_share_a_replica_across_tool_waits(pool: Any, tmp_path: Path) -> None:
    r = Runner(pool, tmp_path / "j.sqlite", replica_ids=["r0"])
    try:
        agent = tiny_agent(wait, max_steps=3)  # one 1-s tool wait, then an answer
        r.run(agent, "warm-up: compiles the reply grammar")
        t0 = time.perf_counter()
        one = r.run(agent, "Wait for system a.")
        single_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        many = r.gather(agent, [f"Wait for system {i}." for i in range(8)])
        eight_s = time.perf_counter() - t0
    finally:
        r.close()
    assert one.status == "succeeded" and all(m.status == "succeeded" for m in many)
    assert {c.replica_id for m in many for c in m.calls} == {"r0"}
    ratio = eight_s / single_s
    print(f"\n[multiplexing] 1 task {single_s:.2f} s, 8 tasks {eight_s:.2f} s: {ratio:.2f}x")
    assert ratio < 4.0  # generous: sequential would be 8x


def test_kv_budget_queues_tasks_and_admits_them_later(pool: Any, tmp_path: Path) -> None:
    # 5,000 reserved tokens per task: one task at a time fits r1's 8,192-token pool
    r = Runner(pool, tmp_path / "j.sqlite", replica_ids=["r1"], kv_reserve_tokens=5000)
    try:
        results = r.gather(tiny_agent(wait, max_steps=3), [f"system {i}" for i in range(3)])
        stats = r.ex.dispatcher.stats
    finally:
        r.close()
    assert all(res.status == "succeeded" for res in results)
    # two tasks waited for admission (and a running task whose KV the core released
    # during its tool wait, to make room, may have queued again before its next call)
    assert stats.queued_admission >= 2
    by_wait = sorted(results, key=lambda res: res.calls[0].queue_wait_s)
    first, last = by_wait[0].calls[0], by_wait[-1].calls[0]
    # the last admitted waited for room: at least until the first admitted task's first
    # call was done (its KV is released at its tool wait at the earliest); timing-free
    assert last.queue_wait_s > first.latency_s > 0 and first.queue_wait_s < last.queue_wait_s


def test_invalid_replies_end_the_task_cleanly(runner: Runner) -> None:
    # 6 tokens can never hold a complete reply: every reply is cut, none is valid
    result = runner.run(tiny_agent(mark, sampling={"max_new_tokens": 6}), "Mark a record.")
    assert result.status == "step_limit" and result.output is None
    assert "no final answer in 4 calls" in (result.error or "")
    assert not result.tools and all(c.finish_reason == "length" for c in result.calls)
    record = runner.ex.journal.get(result.task_id)
    shown = [s.payload.text for s in record.steps if s.kind == "observation"]
    assert len(shown) == 3 and all("error: the reply is not one JSON object" in t for t in shown)


def test_unknown_model_and_empty_goal_are_clear_errors(runner: Runner) -> None:
    from executor import AgentDefinitionError, ExecutorError

    with pytest.raises(AgentDefinitionError, match="serves 'tiny'"):
        runner.run(tiny_agent(mark, model="smollm2-135m"), "x")
    with pytest.raises(ExecutorError, match="goal is empty"):
        runner.run(tiny_agent(mark), "  ")


def test_resume_after_the_driver_was_killed(pool: Any, tmp_path: Path, counter: Path) -> None:
    journal_path, task_id = tmp_path / "j.sqlite", "resume-me"
    import ray

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "support"), str(ROOT)]))
    address = ray.get_runtime_context().gcs_address
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests/support/resume_driver.py"),
                address,
                pool.actor_name("r0"),
                str(journal_path),
                str(counter),
                task_id,
            ],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and _tool_results(journal_path, task_id) < 2:
            if driver.poll() is not None:
                pytest.fail(f"the driver ended before it was killed:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        assert _tool_results(journal_path, task_id) >= 2, "the driver made no progress"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the driver dies; the cluster lives on
        driver.wait(timeout=30)
    before = Journal(journal_path).get(task_id)
    assert before.status == "running"
    done_before = len(before.tool_results())

    r = Runner(pool, journal_path)
    try:
        result = r.loop.run(r.ex.resume(task_id, marking_agent()), timeout=300)
        after = r.ex.journal.get(task_id)
    finally:
        r.close()
    assert result.resumed and result.status == "step_limit", result.error
    assert after.status == "step_limit"
    starts = [s.payload.call_id for s in after.steps if s.kind == "tool_start"]
    assert len(starts) == len(set(starts)) == 5  # one start per call that asked for a tool
    lines = len(counter.read_text().splitlines())
    interrupted = [t for t in result.tools if t.interrupted]
    # every tool ran at most once: one line per start, less one for a start the kill cut
    assert len(starts) - len(interrupted) <= lines <= len(starts)
    assert sum(t.replayed for t in result.tools) == done_before
    assert len(result.tools) == 5


def _tool_results(path: Path, task_id: str) -> int:
    if not path.exists():
        return 0
    j = Journal(path)
    try:
        return len(j.get(task_id).tool_results())
    except (JournalError, sqlite3.Error):  # (not created yet, or busy)
        return 0
    finally:
        j.close()


def test_run_task_on_the_embedded_executor(pool: Any, tmp_path: Path, counter: Path) -> None:
    """The one-call SDK: starts its own replica on first use, stops it on shutdown()."""
    from executor import run_task, shutdown
    from executor.fleet.config import ReplicaConfig

    config = ReplicaConfig(model="tiny", max_total_tokens=4096, num_cpus=0.5, cpu_threads=1)
    try:
        result = run_task(
            tiny_agent(mark), "Mark a record.", replica_config=config, journal=tmp_path / "j.db"
        )
    finally:
        shutdown()
    assert result.status == "succeeded" and [t.tool for t in result.tools] == ["mark"]
    assert Journal(tmp_path / "j.db").get(result.task_id).status == "succeeded"
