"""The replicas an executor serves on: the one owner of their live handles.

The fleet's lifetime (:mod:`executor.fleet_lifetime`) adds a replica when it joins the
scheduler and removes it when it dies or is drained; everyone else (task
drivers, the health monitor, the operator commands) only reads it.
"""

from __future__ import annotations

from collections.abc import Iterator

from executor.fleet.handle import ReplicaHandle


class ReplicaRegistry:
    def __init__(self) -> None:
        self._handles: dict[str, ReplicaHandle] = {}

    def add(self, handle: ReplicaHandle) -> None:
        self._handles[handle.replica_id] = handle

    def remove(self, replica_id: str) -> ReplicaHandle | None:
        return self._handles.pop(replica_id, None)

    def get(self, replica_id: str) -> ReplicaHandle | None:
        return self._handles.get(replica_id)

    def ids(self) -> list[str]:
        return sorted(self._handles)

    def __contains__(self, replica_id: object) -> bool:
        return replica_id in self._handles

    def __iter__(self) -> Iterator[ReplicaHandle]:
        return iter(list(self._handles.values()))  # a snapshot: safe while it changes

    def __len__(self) -> int:
        return len(self._handles)
