"""A typed client for one replica actor: sync and async calls, Ray's failures translated.

Callers never see Ray's exception types: a dead or unreachable actor becomes
``ReplicaUnavailableError(replica_id, ...)``; a refused request stays an
``InvalidRequestError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from executor.errors import ExecutorError, ReplicaUnavailableError
from executor.generation import Capacity, GenerateRequest, GenerateResult

T = TypeVar("T")
_DEAD = RayActorError  # ActorDiedError, ActorUnavailableError


def _unwrap(exc: RayTaskError) -> BaseException:
    """The executor's own error raised inside the actor, without Ray's wrapper."""
    cause = exc.cause
    return cause if isinstance(cause, ExecutorError | TimeoutError) else exc


class ReplicaHandle:
    def __init__(self, replica_id: str, actor: Any, info: dict[str, Any]) -> None:
        self.replica_id = replica_id
        self.actor = actor
        self.info = info  # what the replica reported when ready (KV pool, vocab, PIDs)

    def _get(self, ref: Any, timeout: float | None) -> Any:
        try:
            return ray.get(ref, timeout=timeout)
        except GetTimeoutError:
            raise ReplicaUnavailableError(self.replica_id, f"no answer in {timeout} s") from None
        except _DEAD as exc:
            raise ReplicaUnavailableError(self.replica_id, type(exc).__name__) from exc
        except RayTaskError as exc:
            raise _unwrap(exc) from None

    async def _await(self, ref: Awaitable[T]) -> T:
        try:
            return await ref
        except _DEAD as exc:
            raise ReplicaUnavailableError(self.replica_id, type(exc).__name__) from exc
        except RayTaskError as exc:
            raise _unwrap(exc) from None

    # sync
    def generate(
        self, request: GenerateRequest | dict[str, Any], timeout: float | None = None
    ) -> GenerateResult:
        return self._get(self.actor.generate.remote(request), timeout)

    def capacity(self, timeout: float | None = 30) -> Capacity:
        return self._get(self.actor.capacity.remote(), timeout)

    def flush_cache(self, timeout: float | None = 60) -> bool:
        return self._get(self.actor.flush_cache.remote(), timeout)

    def health(self, timeout: float = 10) -> dict[str, Any]:
        return self._get(self.actor.health.remote(timeout), timeout + 5)

    def pids(self, timeout: float | None = 10) -> dict[str, Any]:
        return self._get(self.actor.pids.remote(), timeout)

    # async
    async def agenerate(self, request: GenerateRequest | dict[str, Any]) -> GenerateResult:
        return await self._await(self.actor.generate.remote(request))

    async def acapacity(self) -> Capacity:
        return await self._await(self.actor.capacity.remote())

    async def aflush_cache(self) -> bool:
        return await self._await(self.actor.flush_cache.remote())

    async def ahealth(self, timeout: float) -> dict[str, Any]:
        """The engine must answer within ``timeout`` (``TimeoutError`` otherwise)."""
        return await asyncio.wait_for(self._await(self.actor.health.remote(timeout)), timeout + 1)
