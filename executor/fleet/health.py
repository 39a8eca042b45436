"""Health checks: a replica that stops answering is declared dead, not waited on forever.

A replica's death is usually loud: its actor dies (Ray says so at the next call)
or its engine's processes die (the actor's watchdog exits the actor). A hang is
silent: a paused or deadlocked engine takes calls and never answers. The monitor
probes every replica each ``interval_s``; a probe asks the actor for its
engine's load, which goes through the engine's scheduler process, so it proves
the whole path answers. A replica is declared dead when a probe says its actor
died or its engine is gone, or after ``failures`` probes in a row got no answer
within ``timeout_s`` (an actor Ray calls *unavailable*, a transient state, is
one such miss, not a death).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from executor.errors import ReplicaUnavailableError, ReplicaUnreachableError
from executor.fleet.handle import ReplicaHandle
from executor.fleet.registry import ReplicaRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthConfig:
    interval_s: float = 2.0
    """Time between two probes of a replica."""
    timeout_s: float = 20.0
    """A probe unanswered this long is a miss. The engine answers between two forward
    passes, so this must exceed the longest one (a long prefill chunk on a CPU)."""
    failures: int = 2
    """Misses in a row that declare a replica dead."""
    retry_after_s: float = 4.0
    """A call that found its replica unreachable (Ray's ``ActorUnavailableError``) is
    retried there after this long, unless the replica is declared dead meanwhile (the
    task then moves). A node that died shows its actors as unreachable for ~10 s
    before Ray calls them dead, and each such call fails in ~2 s: retried at once, a
    task spent its retries (and failed) before the probes' verdict."""

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0 or self.failures < 1:
            raise ValueError("health checks need interval_s > 0, timeout_s > 0, failures >= 1")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")


class HealthMonitor:
    def __init__(
        self,
        config: HealthConfig,
        replicas: ReplicaRegistry,
        on_dead: Callable[[str, str], object],
    ) -> None:
        """``replicas``: the live set (read at each round); ``on_dead(replica_id, reason)``."""
        self.config = config
        self.replicas = replicas
        self.on_dead = on_dead
        self._misses: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.config.interval_s)

    async def check(self) -> None:
        """Probe every replica once, concurrently."""
        await asyncio.gather(*(self._probe(h) for h in self.replicas))

    async def _probe(self, handle: ReplicaHandle) -> None:
        rid, c = handle.replica_id, self.config
        try:
            await handle.ahealth(c.timeout_s)
        except ReplicaUnavailableError as exc:
            self._dead(rid, exc.reason)
        except Exception as exc:  # no answer in time, or an answer that is an error
            if isinstance(exc, TimeoutError):
                what = f"no health answer in {c.timeout_s:g} s"
            elif isinstance(exc, ReplicaUnreachableError):
                what = f"actor unavailable ({exc.reason})"
            else:
                what = f"health check failed: {exc}"
            misses = self._misses[rid] = self._misses.get(rid, 0) + 1
            log.warning("replica %s: %s (%d of %d)", rid, what, misses, c.failures)
            if misses >= c.failures:
                self._dead(rid, f"{what}, {misses} times in a row")
        else:
            self._misses.pop(rid, None)

    def _dead(self, replica_id: str, reason: str) -> None:
        self._misses.pop(replica_id, None)
        if replica_id in self.replicas:
            self.on_dead(replica_id, reason)
