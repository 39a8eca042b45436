"""The service on the session's real replicas (FastAPI's TestClient runs the app and
its Executor on one event loop): submit, view, events, cancel, list, replicas,
metrics, and every refusal with its status code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from executor.config import ExecutorConfig
from executor.remote import parse_sse
from executor.service import build_service, create_app

pytestmark = pytest.mark.engine

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_ACTIVE = 3


@pytest.fixture(scope="module")
def client(pool: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    import service_agents

    agents = {a.name: a for a in (service_agents.quick, service_agents.marker)}
    journal = tmp_path_factory.mktemp("service") / "j.sqlite"
    service = build_service(
        ExecutorConfig(model="tiny", journal=journal, sandbox="bwrap"),
        agents,
        pool=pool,
        max_active=MAX_ACTIVE,
    )
    with TestClient(create_app(service, token=TOKEN, max_body_bytes=8192)) as c:
        c.service = service  # type: ignore[attr-defined]
        yield c


def wait_end(client: TestClient, task_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view: dict[str, Any] = client.get(f"/v1/tasks/{task_id}", headers=AUTH).json()
        if view["status"] not in ("queued", "running"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"{task_id} did not end")


def submit(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/v1/tasks", json=body, headers={**AUTH, **headers})


def test_submit_view_and_events(client: TestClient, counter: Path) -> None:
    r = submit(client, {"agent": "quick", "goal": "Mark a record, then answer."})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    assert r.json()["status"] in ("queued", "running")
    with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=AUTH) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        events = list(parse_sse(s.iter_lines()))
    view = wait_end(client, task_id)
    assert view["status"] in ("succeeded", "step_limit"), view
    steps = [e for e in events if e["event"] == "step"]
    assert [int(e["id"]) for e in steps] == list(range(len(steps)))  # every step, in order
    assert steps[0]["data"]["kind"] == "call"
    assert events[-1]["event"] == "result"
    assert events[-1]["data"]["status"] == view["status"]
    assert {s["kind"] for s in view["steps"]} >= {"call", "tool"}  # TaskResult's steps
    assert len(counter.read_text().splitlines()) == len(
        [s for s in view["steps"] if s["kind"] == "tool"]
    )
    # resume the stream after a step: only the later ones come
    with client.stream(
        "GET", f"/v1/tasks/{task_id}/events", headers={**AUTH, "Last-Event-ID": "1"}
    ) as s:
        later = [e for e in parse_sse(s.iter_lines()) if e["event"] == "step"]
    assert [int(e["id"]) for e in later] == list(range(2, len(steps)))

    page = client.get("/v1/tasks", params={"status": view["status"]}, headers=AUTH).json()
    assert task_id in [t["task_id"] for t in page["tasks"]]
    first = client.get("/v1/tasks", params={"limit": 1}, headers=AUTH).json()
    assert len(first["tasks"]) == 1 and first["next_offset"] == 1


def test_idempotency_key(client: TestClient) -> None:
    body = {"agent": "quick", "goal": "Mark a record."}
    a = submit(client, body, **{"Idempotency-Key": "k-1"})
    b = submit(client, body, **{"Idempotency-Key": "k-1"})
    assert a.status_code == b.status_code == 202
    assert a.json()["task_id"] == b.json()["task_id"]  # the retry: the same task
    c = submit(client, {**body, "goal": "Something else."}, **{"Idempotency-Key": "k-1"})
    assert c.status_code == 409, c.text
    wait_end(client, a.json()["task_id"])


def test_inline_agent_of_builtin_tools(client: TestClient) -> None:
    inline = {
        "name": "calc",
        "tools": ["python"],
        "max_steps": 2,
        "tool_choice": "required",
        "max_answer_chars": 12,
        "sampling": {"max_new_tokens": 48},
    }
    r = submit(client, {"agent": inline, "goal": "Compute 2 + 2."})
    assert r.status_code == 202, r.text
    view = wait_end(client, r.json()["task_id"])
    assert view["agent"] == "calc" and view["status"] in ("succeeded", "step_limit", "failed")


def test_bad_input_is_refused_with_the_field(client: TestClient) -> None:
    def problem(r: Any, code: int) -> str:
        assert r.status_code == code, r.text
        return json.dumps(r.json()["detail"])

    assert "goal" in problem(submit(client, {"agent": "quick"}), 422)
    assert "goal" in problem(submit(client, {"agent": "quick", "goal": ""}), 422)
    assert "max_steps" in problem(
        submit(client, {"agent": "quick", "goal": "x", "max_steps": 0}), 422
    )
    assert "agent" in problem(
        submit(client, {"agent": {"name": "x", "tools": ["mark"]}, "goal": "x"}), 422
    )  # inline agents: built-in tools only
    assert "nope" in problem(submit(client, {"agent": "nope", "goal": "x"}), 404)
    assert "task-missing" in problem(client.get("/v1/tasks/task-missing", headers=AUTH), 404)
    problem(client.get("/v1/tasks/task-missing/events", headers=AUTH), 404)
    problem(submit(client, {"agent": "quick", "goal": "x" * 10_000}), 413)
    problem(client.post("/v1/tasks", content=b"{not json", headers=AUTH), 422)
    problem(client.post("/v1/replicas/r9/drain", headers=AUTH), 404)


def test_token_required_everywhere_but_healthz(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    for method, path in [
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/replicas"),
        ("GET", "/v1/tasks/x/events"),
    ]:
        assert client.request(method, path).status_code == 401, path
        bad = {"Authorization": "Bearer wrong"}
        assert client.request(method, path, headers=bad).status_code == 401, path
    assert client.get("/readyz", headers=AUTH).json() == {"ready": True}


def test_replicas_and_metrics(client: TestClient) -> None:
    replicas = client.get("/v1/replicas", headers=AUTH).json()
    assert {r["replica_id"] for r in replicas} >= {"r0", "r1"}
    assert all(r["kv_capacity_tokens"] > 0 for r in replicas)
    text = client.get("/metrics", headers=AUTH).text
    assert "gen_ai" in text or "executor" in text, text[:500]


def test_full_service_answers_429_then_cancel(client: TestClient) -> None:
    ids = []
    for _ in range(MAX_ACTIVE):
        r = submit(client, {"agent": "marker", "goal": "Mark the records."})
        assert r.status_code == 202, r.text
        ids.append(r.json()["task_id"])
    r = submit(client, {"agent": "marker", "goal": "One too many."})
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) > 0
    for task_id in ids:
        assert client.post(f"/v1/tasks/{task_id}/cancel", headers=AUTH).json()["status"] in (
            "cancelled",
            "succeeded",
            "step_limit",
        )
    for task_id in ids:
        view = wait_end(client, task_id, 60)
        assert view["status"] in ("cancelled", "succeeded", "step_limit"), view
    held = client.service.handles  # type: ignore[attr-defined]
    assert not set(ids) & set(held)  # ended tasks are the journal's, not the service's memory
    assert submit(client, {"agent": "quick", "goal": "Room again."}).status_code == 202
