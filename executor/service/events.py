"""A task's server-sent events: one per journaled step (its sequence number is the event
id), then the result. Read from the journal, so a client that reconnects with
``Last-Event-ID`` gets every step after it, from this process or from one restarted
after a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from executor.loop.journal import JournalStep
from executor.service.tasks import TaskService

POLL_S = 1.0  # a fallback: steps wake the stream as they are journaled
KEEPALIVE_S = 15.0


def step_event(step: JournalStep) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "kind": str(step.kind),
        **step.payload.model_dump(mode="json", exclude={"ids"}),
    }


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


async def task_events(service: TaskService, task_id: str, after: int) -> AsyncIterator[str]:
    """Steps with a sequence number above ``after``, as they come, then ``result``."""
    wake = service.watch(task_id)
    idle = 0.0
    try:
        while True:
            wake.clear()
            record = service.record(task_id)
            for step in record.steps:
                if step.seq > after:
                    yield sse("step", step_event(step), step.seq)
                    after = step.seq
                    idle = 0.0
            status = service.status(record)
            if status not in ("queued", "running"):
                yield sse("result", service.view(task_id).model_dump(mode="json"))
                return
            try:
                await asyncio.wait_for(wake.wait(), POLL_S)
            except TimeoutError:
                idle += POLL_S
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield ": keep-alive\n\n"
    finally:
        service.unwatch(task_id, wake)
