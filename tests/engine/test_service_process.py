"""The service as a real process: SIGKILLed while its tasks are in calls and in tool
waits, then started again (every task completes, no tool runs twice, a client's event
stream reconnects and misses no step); the remote SDK; drain over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_process import AUTH, TOKEN, Server, running_server

from executor import TaskResult
from executor.loop.journal import Journal
from executor.remote import RemoteExecutor

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def server(pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from running_server(pool, tmp_path_factory.mktemp("service-process"))


def wait_until(what: str, check: Any, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def tool_results(server: Server, task_id: str) -> int:
    view = server.get(f"/v1/tasks/{task_id}")
    return sum(1 for s in view.get("steps", []) if s["kind"] == "tool")


def test_sigkill_and_restart_lose_nothing(server: Server) -> None:
    with RemoteExecutor(server.url, TOKEN) as ex:
        ids = [ex.submit("marker", f"Mark the records ({i}).") for i in range(3)]
        events: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: events.extend(ex.stream(ids[0])), daemon=True)
        reader.start()
        # kill once every task has run a tool: each is then in a call or in a tool wait
        wait_until("a tool run of every task", lambda: all(tool_results(server, t) for t in ids))
        server.kill()
        journal = Journal(server.journal)
        before = {t: journal.get(t) for t in ids}
        assert all(r.status == "running" for r in before.values())
        server.start()  # the same journal and port: it resumes the three tasks
        results = [ex.result(t, timeout_s=300) for t in ids]
        reader.join(timeout=120)
        assert not reader.is_alive(), "the event stream did not end"

    for task_id, result in zip(ids, results, strict=True):
        assert isinstance(result, TaskResult)
        assert result.status == "step_limit", result.error
        assert result.resumed
        record = journal.get(task_id)
        starts = [s.payload.call_id for s in record.steps if s.kind == "tool_start"]
        assert len(starts) == len(set(starts)) == 5  # one start per call that asked for a tool
        assert sum(t.replayed for t in result.tools) == len(before[task_id].tool_results())
    lines = len(server.counter.read_text().splitlines())
    starts_all = sum(1 for t in ids for s in journal.get(t).steps if s.kind == "tool_start")
    interrupted = sum(1 for r in results for t in r.tools if t.interrupted)
    assert starts_all - interrupted <= lines <= starts_all  # no tool ran twice

    # the stream rode out the crash: every step once, in order, then the result
    steps = [int(e["id"]) for e in events if e["event"] == "step"]
    assert steps == list(range(len(journal.get(ids[0]).steps)))
    assert events[-1]["event"] == "result" and events[-1]["data"]["status"] == "step_limit"
    journal.close()


def test_remote_sdk(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    import service_agents

    from executor import run_task

    monkeypatch.setenv("EXECUTOR_TOKEN", TOKEN)  # run_task(executor=URL) takes it from there
    result = run_task(service_agents.quick, "Mark a record, then answer.", executor=server.url)
    assert isinstance(result, TaskResult) and result.agent == "quick"
    assert result.status in ("succeeded", "step_limit") and result.calls
    with RemoteExecutor(server.url, TOKEN) as ex:
        same = ex.result(result.task_id)
        assert same.model_dump() == result.model_dump()  # the view is the TaskResult
        task_id = ex.submit("marker", "Mark, until told to stop.")
        assert ex.cancel(task_id) in ("cancelled", "step_limit")
        assert ex.result(task_id).status in ("failed", "step_limit")
        with pytest.raises(Exception, match="404"):
            ex.view("task-nope")
    with RemoteExecutor(server.url, "wrong") as bad, pytest.raises(Exception, match="401"):
        bad.submit("quick", "x")


def test_the_load_benchmark_small(pool: Any, tmp_path: Path) -> None:
    """benchmarks/service.py's service path at 6 tasks from 3 clients: every task
    accepted, ended, and in the journal once."""
    import argparse

    from rich.console import Console

    from benchmarks.service import service_path

    args = argparse.Namespace(tasks=6, clients=3, max_active=256)
    out = service_path(pool, args, tmp_path, Console(stderr=True))
    assert out["accepted"] == 6 and out["rejected_429"] == 0 and not out["errors"], out
    assert out["journal_once"] and out["journal_all_ended"], out
    assert out["submit_p50_s"] > 0 and out["rss_peak_mb"] >= out["rss_ready_mb"] > 0


def test_drain_moves_tasks_off_the_replica(server: Server) -> None:
    """Last in this module: the server serves on r0 alone afterwards (the actor itself
    lives on: the server attached to it, it does not own it)."""
    with RemoteExecutor(server.url, TOKEN) as ex:
        task_id = ex.submit("marker", "Mark the records.")
        wait_until("the first call", lambda: tool_results(server, task_id) >= 1)
        view = server.get(f"/v1/tasks/{task_id}")
        on = next(s["replica_id"] for s in view["steps"] if s["kind"] == "call")
        r = httpx.post(f"{server.url}/v1/replicas/{on}/drain", headers=AUTH, timeout=30)
        assert r.status_code == 202 and r.json()["status"] == "draining"
        drained_at = len(server.get(f"/v1/tasks/{task_id}")["steps"])
        result = ex.result(task_id, timeout_s=240)
    assert result.status == "step_limit", result.error
    later = [s for s in result.calls[1:] if result.steps.index(s) > drained_at]
    assert later and all(c.replica_id != on for c in later)  # moved at its next tool wait
    states = lambda: {x["replica_id"]: x["state"] for x in server.get("/v1/replicas")}  # noqa: E731
    wait_until("the replica drained", lambda: states()[on] == "drained")
    last = next(rid for rid, state in states().items() if state == "active")
    refused = httpx.post(f"{server.url}/v1/replicas/{last}/drain", headers=AUTH, timeout=30)
    assert refused.status_code == 409 and "last one" in refused.text
    assert httpx.get(f"{server.url}/readyz", headers=AUTH).json() == {"ready": True}
