"""A typed client for one replica actor: sync and async calls, Ray's failures translated.

Callers never see Ray's exception types. A dead actor (``ActorDiedError``)
becomes ``ReplicaUnavailableError``: the replica is gone. An actor that did not
answer this time (``ActorUnavailableError``: transient, as Ray Serve treats it)
becomes ``ReplicaUnreachableError``, which is not a death. A refused request
stays an ``InvalidRequestError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from executor.errors import ExecutorError, ReplicaUnavailableError, ReplicaUnreachableError
from executor.fleet.fit import call_limit
from executor.fleet.generation import Capacity, GenerateRequest, GenerateResult, TokenDelta

T = TypeVar("T")


def _translate(replica_id: str, exc: RayActorError) -> ExecutorError:
    """Ray's actor errors: ``ActorUnavailableError`` is temporary, the rest
    (``ActorDiedError``) is death."""
    if isinstance(exc, ActorUnavailableError):
        return ReplicaUnreachableError(replica_id, type(exc).__name__)
    return ReplicaUnavailableError(replica_id, type(exc).__name__)


def _unwrap(exc: RayTaskError) -> BaseException:
    """The executor's own error raised inside the actor, without Ray's wrapper."""
    cause = exc.cause
    return cause if isinstance(cause, ExecutorError | TimeoutError) else exc


class ReplicaHandle:
    def __init__(self, replica_id: str, actor: Any, info: dict[str, Any]) -> None:
        self.replica_id = replica_id
        self.actor = actor
        self.info = info  # what the replica reported when ready (KV pool, vocab, PIDs)

    @property
    def context_tokens(self) -> int:
        """The longest prompt plus reply one call may have here (its KV pool, and the
        engine's input limit where the replica reports it: :mod:`executor.fleet.fit`)."""
        limit = self.info.get("max_req_input_len")
        return call_limit(
            int(self.info["max_total_num_tokens"]), None if limit is None else int(limit)
        )

    def _get(self, ref: Any, timeout: float | None) -> Any:
        try:
            return ray.get(ref, timeout=timeout)
        except GetTimeoutError:
            raise ReplicaUnavailableError(self.replica_id, f"no answer in {timeout} s") from None
        except RayActorError as exc:
            raise _translate(self.replica_id, exc) from exc
        except RayTaskError as exc:
            raise _unwrap(exc) from None

    async def _await(self, ref: Awaitable[T]) -> T:
        try:
            return await ref
        except RayActorError as exc:
            raise _translate(self.replica_id, exc) from exc
        except RayTaskError as exc:
            raise _unwrap(exc) from None

    # sync
    def generate(
        self, request: GenerateRequest | dict[str, Any], timeout: float | None = None
    ) -> GenerateResult:
        result: GenerateResult = self._get(self.actor.generate.remote(request), timeout)
        return result

    def capacity(self, timeout: float | None = 30) -> Capacity:
        capacity: Capacity = self._get(self.actor.capacity.remote(), timeout)
        return capacity

    def flush_cache(self, timeout: float | None = 60) -> bool:
        return bool(self._get(self.actor.flush_cache.remote(), timeout))

    def health(self, timeout: float = 10) -> dict[str, Any]:
        answer: dict[str, Any] = self._get(self.actor.health.remote(timeout), timeout + 5)
        return answer

    def pids(self, timeout: float | None = 10) -> dict[str, Any]:
        pids: dict[str, Any] = self._get(self.actor.pids.remote(), timeout)
        return pids

    # async
    async def agenerate(self, request: GenerateRequest | dict[str, Any]) -> GenerateResult:
        return await self._await(self.actor.generate.remote(request))

    async def astream(
        self, request: GenerateRequest | dict[str, Any]
    ) -> AsyncIterator[TokenDelta | GenerateResult]:
        """The call token by token (``ReplicaActor.generate_stream``): ``TokenDelta``s,
        then the ``GenerateResult``; Ray's failures translated as for ``agenerate``.
        Closed early (the caller stopped reading), the actor's generator is cancelled."""
        stream = self.actor.generate_stream.options(num_returns="streaming").remote(request)
        done = False
        try:
            async for ref in stream:
                item: TokenDelta | GenerateResult = await self._await(ref)
                yield item
            done = True
        except RayActorError as exc:
            raise _translate(self.replica_id, exc) from exc
        finally:
            if not done:
                with contextlib.suppress(Exception):
                    ray.cancel(stream)

    async def arelease(self, session_id: str) -> bool:
        """Close the task's engine session (see ``ReplicaActor.release``)."""
        released: bool = await self._await(self.actor.release.remote(session_id))
        return released

    def sessions(self, timeout: float | None = 10) -> list[str]:
        open_sessions: list[str] = self._get(self.actor.sessions.remote(), timeout)
        return open_sessions

    async def acapacity(self) -> Capacity:
        return await self._await(self.actor.capacity.remote())

    async def aflush_cache(self) -> bool:
        return await self._await(self.actor.flush_cache.remote())

    async def ahealth(self, timeout: float) -> dict[str, Any]:
        """The engine must answer within ``timeout`` (``TimeoutError`` otherwise)."""
        return await asyncio.wait_for(self._await(self.actor.health.remote(timeout)), timeout + 1)
