"""``RemoteExecutor``: submit to, watch and cancel tasks of an executor service
(``python -m executor serve``) over HTTP; results are the same ``TaskResult``.

    from executor.remote import RemoteExecutor

    with RemoteExecutor("http://127.0.0.1:8000", token) as ex:
        task_id = ex.submit("calc", "What is 1234 * 5678?")
        for event in ex.stream(task_id):      # every step, then the result
            print(event)
        print(ex.result(task_id).output)

``run_task(agent, goal, executor=URL)`` (or ``$EXECUTOR_URL``) does all of it for an
agent the service has by name, or for one of built-in tools only (sent inline).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx

from executor.agent import Agent
from executor.errors import ExecutorError
from executor.result import TaskResult
from tools.builtin import BUILTIN_TOOLS

URL_ENV = "EXECUTOR_URL"
TOKEN_ENV = "EXECUTOR_TOKEN"
ENDED = ("succeeded", "step_limit", "failed", "cancelled")


class RemoteError(ExecutorError):
    """The service refused a request (its status code and its reason)."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def agent_spec(agent: Agent | str, registered: bool = False) -> str | dict[str, Any]:
    """What a submit names: a registered agent's name, or an inline agent (built-in tools)."""
    if isinstance(agent, str):
        return agent
    builtins = {t.name for t in BUILTIN_TOOLS}
    if registered or any(t.name not in builtins for t in agent.tools):
        return agent.name  # the service must have it (its tools are code)
    d = agent.describe()
    return {
        k: d[k]
        for k in (
            "name",
            "instructions",
            "tools",
            "max_steps",
            "sampling",
            "tool_choice",
            "max_answer_chars",
            "answer_hint",
        )
    }


def to_result(view: dict[str, Any]) -> TaskResult:
    """A finished task's view as a ``TaskResult`` (a cancelled task is ``failed``)."""
    if view["status"] == "cancelled":
        view = {**view, "status": "failed", "error": view.get("error") or "cancelled"}
    return TaskResult.model_validate(view)


class RemoteExecutor:
    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout_s: float = 30.0
    ) -> None:
        url = url or os.environ.get(URL_ENV)
        if not url:
            raise ExecutorError(f"no service URL: pass one or set ${URL_ENV}")
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise RemoteError(response.status_code, detail)
        return response.json()

    def submit(
        self,
        agent: Agent | str,
        goal: str,
        *,
        max_steps: int | None = None,
        idempotency_key: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"agent": agent_spec(agent), "goal": goal}
        if max_steps is not None:
            body["max_steps"] = max_steps
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return str(self._json(self._http.post("/v1/tasks", json=body, headers=headers))["task_id"])

    def view(self, task_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._json(self._http.get(f"/v1/tasks/{task_id}"))
        return view

    def result(self, task_id: str, *, timeout_s: float = 600.0, poll_s: float = 0.5) -> TaskResult:
        """Wait for the task's end (riding out a restart of the service) and return it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                view = self.view(task_id)
                if view["status"] in ENDED:
                    return to_result(view)
            except httpx.TransportError:
                pass  # the service is restarting
            if time.monotonic() > deadline:
                raise ExecutorError(f"task {task_id} did not end within {timeout_s:.0f} s")
            time.sleep(poll_s)

    def cancel(self, task_id: str) -> str:
        return str(self._json(self._http.post(f"/v1/tasks/{task_id}/cancel"))["status"])

    def stream(
        self, task_id: str, *, last_event_id: int | None = None, reconnect_s: float = 120.0
    ) -> Iterator[dict[str, Any]]:
        """Every step (``{"event": "step", "id": seq, "data": ...}``), then the result;
        reconnects with ``Last-Event-ID`` when the connection breaks, so no step is missed
        or repeated."""
        last, deadline = last_event_id, None
        while True:
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/tasks/{task_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=None),
                ) as r:
                    if r.status_code >= 400:
                        r.read()
                        self._json(r)
                    deadline = None
                    for event in parse_sse(r.iter_lines()):
                        if event.get("id") is not None:
                            last = int(event["id"])
                        yield event
                        if event["event"] == "result":
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass
            deadline = deadline or time.monotonic() + reconnect_s
            if time.monotonic() > deadline:
                raise ExecutorError(f"lost the event stream of {task_id}")
            time.sleep(0.5)


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                event.setdefault("event", "message")
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value
    return


def run_remote(
    agent: Agent | str, goal: str, url: str | None = None, token: str | None = None
) -> TaskResult:
    with RemoteExecutor(url, token) as ex:
        return ex.result(ex.submit(agent, goal))
