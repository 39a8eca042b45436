"""The live dashboard's data: a snapshot of the replicas (state, KV occupancy over the
last minutes, calls in flight) and of the recent tasks (state, replica, steps as a
timeline with their queue waits) and of the gateway's live sessions beside them
(session id, calls, cached / prompt tokens per call, queue wait, replica), sent to
the page (``static/dashboard.html``) as server-sent events.

The KV history is sampled here, not in the page, so a page opened now shows the last
minutes too; it is bounded (``HISTORY_S / SAMPLE_S`` points per replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from executor.result import CallStep, ToolStep
from executor.service.tasks import TaskService

if TYPE_CHECKING:
    from executor.gateway import Gateway

SAMPLE_S = 2.0
HISTORY_S = 300.0
PUSH_S = 1.0
RECENT_TASKS = 30


def page() -> str:
    """The dashboard page: one self-contained HTML file (no external resource)."""
    return resources.files("executor.service").joinpath("static/dashboard.html").read_text()


class Dashboard:
    def __init__(self, service: TaskService, gateway: Gateway | None = None) -> None:
        self.service = service
        self.gateway = gateway
        self.kv: dict[str, deque[tuple[float, int]]] = {}
        self._points = int(HISTORY_S / SAMPLE_S)
        self._sampler: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler

    def sample(self) -> None:
        now = time.time()
        live = set()
        for r in self.service.replicas():
            live.add(r.replica_id)
            self.kv.setdefault(r.replica_id, deque(maxlen=self._points)).append(
                (now, r.kv_reserved_tokens)
            )
        for gone in set(self.kv) - live:  # a replica that left: its history goes too
            del self.kv[gone]

    async def _sample_forever(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # never let a bad sample end the sampler
                self.sample()
            await asyncio.sleep(SAMPLE_S)

    # -- the snapshot ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        s = self.service
        replicas = [
            {**r.model_dump(), "kv": [[round(t, 1), n] for t, n in self.kv.get(r.replica_id, ())]}
            for r in s.replicas()
        ]
        active = [tid for tid, h in s.handles.items() if not h.done()]
        recent = [row["task_id"] for row in s.executor.journal.list(RECENT_TASKS)]
        ids = list(dict.fromkeys([*active, *recent]))[: 2 * RECENT_TASKS]
        return {
            "at": time.time(),
            "queue_depth": s.executor.dispatcher.queue_depth,
            "replicas": replicas,
            "tasks": [self._task(tid) for tid in ids],
            "sessions": self._sessions(),
        }

    def _sessions(self) -> list[dict[str, Any]]:
        """The gateway's most recently used live sessions, the latest first."""
        if self.gateway is None:
            return []
        return [s.row() for s in reversed(self.gateway.sessions.sessions()[-RECENT_TASKS:])]

    def _task(self, task_id: str) -> dict[str, Any]:
        view = self.service.view(task_id)
        live = self.service.executor.dispatcher.core.task(task_id)
        timeline: list[dict[str, Any]] = []
        replica = live.replica_id if live is not None else None
        for step in view.steps:
            if isinstance(step, CallStep):
                timeline.append({"kind": "queue", "s": round(step.queue_wait_s, 3)})
                timeline.append(
                    {
                        "kind": "call",
                        "s": round(step.latency_s, 3),
                        "replica": step.replica_id,
                        "cached": step.cached_tokens,
                        "prompt": step.prompt_tokens,
                    }
                )
                replica = replica or step.replica_id
            elif isinstance(step, ToolStep):
                timeline.append(
                    {
                        "kind": "tool",
                        "s": round(step.duration_s, 3),
                        "tool": step.tool,
                        "ok": step.ok,
                    }
                )
            else:
                timeline.append({"kind": "failover", "s": 0.0, "replica": step.replica_id})
        if live is not None and live.replica_id is not None:
            replica = live.replica_id
        return {
            "task_id": task_id,
            "agent": view.agent,
            "status": view.status,
            "replica": replica,
            "calls": sum(1 for t in timeline if t["kind"] == "call"),
            "queue_wait_s": round(sum(t["s"] for t in timeline if t["kind"] == "queue"), 3),
            "latency_s": round(view.latency_s, 3),
            "timeline": timeline,
        }

    async def events(self) -> AsyncIterator[str]:
        """A snapshot now and every ``PUSH_S`` after."""
        while True:
            yield f"event: snapshot\ndata: {json.dumps(self.snapshot())}\n\n"
            await asyncio.sleep(PUSH_S)
