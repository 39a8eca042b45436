"""Continuum (Li et al., arXiv 2511.02230, "Continuum: Efficient and Robust
Multi-Turn LLM Agent Scheduling with KV Cache Time-to-Live", also CacheTTL).

When a call ends in a tool call, Continuum pins the task's KV in GPU memory with
a time-to-live; a tool that returns within it finds its history resident, and
when the TTL runs out the KV becomes evictable again. Requests are served
program-level first-come-first-served (a task's later calls keep its place).
Here: the TTL is ``ttl_s`` (2 s), and a tool is pinned when its moving-average
duration (the last ``window`` runs of that tool name; a tool not seen yet is
pinned) is under it; a longer tool's KV is left unpinned for the engine's LRU to
evict under pressure ("released"), as in vLLM. Routing across replicas, which the
paper leaves to the deployment, is :class:`StickyRouter`'s (the task id as
key, min load); program FCFS is the engine's waiting order (the simulator orders
an engine's waiting calls by their task's arrival for this policy). The paper
sets the TTL from a cost model (reload cost, queueing delay saved); the fixed
threshold is the simplification.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from scheduler.baselines.sticky import StickyRouter
from scheduler.decisions import Decision
from scheduler.events import Event, ToolFinished, ToolStarted


@dataclass(frozen=True, slots=True)
class PinKV:
    """Keep the task's cached history on ``replica_id`` from eviction for ``ttl_s``."""

    task_id: str
    replica_id: str
    ttl_s: float


class ContinuumScheduler:
    name = "continuum"

    def __init__(self, ttl_s: float = 2.0, window: int = 32) -> None:
        if ttl_s <= 0 or window < 1:
            raise ValueError("ttl_s must be > 0 and window >= 1")
        self.ttl_s = ttl_s
        self.window = window
        self._router = StickyRouter()
        self._durations: dict[str, deque[float]] = {}  # tool -> its last runs, s
        self._tool: dict[str, tuple[str, float]] = {}  # task -> (tool, started)
        self.pinned_calls = self.unpinned_calls = 0

    def expected_s(self, tool: str) -> float | None:
        runs = self._durations.get(tool)
        return sum(runs) / len(runs) if runs else None

    def handle(self, event: Event) -> list[Decision | PinKV]:
        if isinstance(event, ToolStarted):
            self._tool[event.task_id] = (event.tool, event.time)
            rid = self._router.home.get(event.task_id)
            expected = self.expected_s(event.tool)
            if rid is not None and (expected is None or expected < self.ttl_s):
                self.pinned_calls += 1
                return [PinKV(event.task_id, rid, self.ttl_s)]
            self.unpinned_calls += 1
            return []
        if isinstance(event, ToolFinished):
            tool, started = self._tool.pop(event.task_id, ("", event.time))
            if tool:
                runs = self._durations.setdefault(tool, deque(maxlen=self.window))
                runs.append(event.time - started)
        out: list[Decision | PinKV] = []
        out.extend(self._router.handle(event))
        return out

    def reroute(self, task_id: str) -> list[Decision]:
        return self._router.reroute(task_id)
