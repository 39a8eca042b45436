"""Per-replica queue of ready calls: priority order plus an aging bound.

Entries are never removed in place; an entry is stale when its task is no
longer READY on this replica with the same ``ready_seq`` (lazy deletion keeps
every operation O(log n)). The FIFO beside the heap implements the
anti-starvation rule: a call that has waited ``starvation_s`` runs first.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from scheduler.task import Task

Entry = tuple[tuple[float, ...], int, Task, int]


class RunQueue:
    __slots__ = ("_heap", "_fifo", "_is_valid", "live")

    def __init__(self, is_valid: Callable[[Task, int], bool]) -> None:
        self._heap: list[Entry] = []
        self._fifo: deque[tuple[float, Task, int]] = deque()
        self._is_valid = is_valid
        self.live = 0  # ready calls (maintained by the core)

    def push(self, key: tuple[float, ...], seq: int, task: Task, now: float) -> None:
        heapq.heappush(self._heap, (key, seq, task, task.ready_seq))
        self._fifo.append((now, task, task.ready_seq))

    def pop(self, now: float, starvation_s: float) -> Task | None:
        """The next call to run, or None when none is ready."""
        fifo, valid = self._fifo, self._is_valid
        while fifo and not valid(fifo[0][1], fifo[0][2]):
            fifo.popleft()
        if fifo and now - fifo[0][0] >= starvation_s:
            return fifo.popleft()[1]
        heap = self._heap
        while heap:
            _, _, task, rseq = heapq.heappop(heap)
            if valid(task, rseq):
                return task
        return None

    def clear(self) -> None:
        self._heap.clear()
        self._fifo.clear()
        self.live = 0

    def __len__(self) -> int:
        return len(self._heap)
