"""Active replicas ordered by free KV budget (most free first).

A max-heap with lazy invalidation: every change of a replica's free budget
pushes a fresh entry (its ``version``); stale entries are dropped when they
surface. The heap is rebuilt when stale entries outnumber live ones, so
memory stays O(replicas) and every operation is O(log replicas) amortized.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from scheduler.replica import Replica
from scheduler.states import ReplicaState


class FleetIndex:
    __slots__ = ("_heap", "_members")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, Replica]] = []
        self._members: dict[str, Replica] = {}

    def __len__(self) -> int:
        return len(self._members)

    def update(self, replica: Replica) -> None:
        """Record the replica's current free budget (call after every change)."""
        replica.version += 1
        if replica.state is not ReplicaState.ACTIVE:
            self._members.pop(replica.id, None)
            return
        self._members[replica.id] = replica
        heapq.heappush(self._heap, (-replica.free, replica.seq, replica.version, replica))
        if len(self._heap) > 4 * len(self._members) + 64:
            self._rebuild()

    def remove(self, replica: Replica) -> None:
        replica.version += 1
        self._members.pop(replica.id, None)

    def _rebuild(self) -> None:
        self._heap = [(-r.free, r.seq, r.version, r) for r in self._members.values()]
        heapq.heapify(self._heap)

    def _valid(self, entry: tuple[int, int, int, Replica]) -> bool:
        r = entry[3]
        return entry[2] == r.version and r.state is ReplicaState.ACTIVE

    def most_free(self, k: int) -> list[Replica]:
        """Up to ``k`` active replicas with the most free budget, most free first."""
        heap = self._heap
        out: list[Replica] = []
        keep: list[tuple[int, int, int, Replica]] = []
        while heap and len(out) < k:
            entry = heapq.heappop(heap)
            if self._valid(entry):
                out.append(entry[3])
                keep.append(entry)
        for entry in keep:
            heapq.heappush(heap, entry)
        return out

    def __iter__(self) -> Iterator[Replica]:
        return iter(self._members.values())
