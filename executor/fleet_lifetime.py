"""The executor's replicas over their lifetime: joined, probed, declared dead,
replaced, drained.

- **Death** comes from a task whose call failed on the replica, or from the
  health monitor (actor gone, engine gone, or no answer in time). The scheduler
  core hears ``ReplicaDied`` once (through the dispatcher) and places the
  replica's tasks again; the fleet hears of it from the dispatcher's queue of
  deaths, kills the dead actor (a hung one could otherwise answer later) and,
  with ``heal``, starts a new replica in its place, which joins when it serves.
  Whether the tasks wait for it or fail is the core's decision.
- **Drain** stops new placements on a replica, lets its running calls finish,
  moves its tasks at their next tool wait, then stops the replica.
- **Operator commands** (``python -m executor drain``) arrive through the
  journal file's control table (:mod:`executor.fleet.control`).

Collaborators come with the constructors: the registry of live handles and the
engine sessions (:class:`EngineSessions`, whose ``release`` the dispatcher is
built with) are made first, then the dispatcher, then the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from executor.dispatch import Dispatcher
from executor.errors import ExecutorError
from executor.fleet.control import Command, ControlChannel
from executor.fleet.handle import ReplicaHandle
from executor.fleet.health import HealthConfig, HealthMonitor
from executor.fleet.pool import ReplicaPool
from executor.fleet.registry import ReplicaRegistry

log = logging.getLogger(__name__)


class EngineSessions:
    """Closes a task's engine session when the core releases its KV, where the replica
    tags KV by task (``release_in_engine``): the engine evicts that history first."""

    def __init__(self, replicas: ReplicaRegistry) -> None:
        self.replicas = replicas
        self._jobs: set[asyncio.Task[Any]] = set()

    def release(self, replica_id: str, task_id: str) -> None:
        """The dispatcher's ``on_release``."""
        handle = self.replicas.get(replica_id)
        if handle is not None and handle.info.get("release_in_engine"):
            job = asyncio.get_running_loop().create_task(self._close_session(handle, task_id))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _close_session(self, handle: ReplicaHandle, task_id: str) -> None:
        try:
            await handle.arelease(task_id)
        except ExecutorError as exc:  # a replica that died took the session with it
            log.debug("closing the session of %s on %s: %s", task_id, handle.replica_id, exc)

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)


class Fleet:
    def __init__(
        self,
        pool: ReplicaPool,
        dispatcher: Dispatcher,
        *,
        heal: bool,
        health: HealthConfig | None,
        control: ControlChannel | None,
        replicas: ReplicaRegistry | None = None,
        sessions: EngineSessions | None = None,
    ) -> None:
        """``heal`` must agree with the dispatcher's ``replace_dead``. ``replicas``: the
        registry of live handles (only this class changes it; default: a new one);
        ``sessions``: the engine sessions the dispatcher releases through (closed with
        the fleet)."""
        self.pool = pool
        self.replicas = replicas if replicas is not None else ReplicaRegistry()
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.heal = heal
        self.health = health
        self.control = control
        self.events: list[str] = []  # what happened to the replicas, in order
        self._retired: set[str] = set()  # drained (or draining): their end is no death
        self._jobs: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._spawn(self._watch_deaths())
        if self.health is not None:
            monitor = HealthMonitor(self.health, self.replicas, self.dispatcher.replica_died)
            self._spawn(monitor.run())
        if self.control is not None:
            self._spawn(self._serve_commands(self.health.interval_s if self.health else 1.0))

    async def close(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if self.sessions is not None:
            await self.sessions.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    def _note(self, message: str) -> None:
        self.events.append(message)
        log.warning("%s", message)

    # -- joining ------------------------------------------------------------------

    def join(self, replica_id: str, *, replaces: str | None = None) -> None:
        handle = self.pool[replica_id]
        self.replicas.add(handle)
        self.dispatcher.replica_joined(
            replica_id, int(handle.info["max_total_num_tokens"]), replaces=replaces
        )

    # -- death and healing --------------------------------------------------------

    async def _watch_deaths(self) -> None:
        async for replica_id, reason in self.dispatcher.deaths():
            self._died(replica_id, reason)

    def _died(self, replica_id: str, reason: str) -> None:
        """A new death (the core already placed its tasks)."""
        self.replicas.remove(replica_id)
        if replica_id in self._retired:
            return
        self._note(f"replica {replica_id} died ({reason}); its tasks are placed again")
        self._spawn(self._replace(replica_id))

    async def _replace(self, replica_id: str) -> None:
        await asyncio.to_thread(self.pool.discard, replica_id)
        if not self.heal:
            return
        try:
            (new,) = await asyncio.to_thread(self.pool.add, 1)
        except ExecutorError as exc:
            self._note(f"replica {replica_id} could not be replaced: {exc}")
            self.dispatcher.replacement_failed(replica_id, str(exc))
            return
        self.join(new, replaces=replica_id)
        self._note(f"replica {new} replaced {replica_id} and serves")

    # -- drain --------------------------------------------------------------------

    async def drain(self, replica_id: str) -> None:
        """Stop placing tasks on the replica, wait until none is left there (calls
        finish; tasks move at their next tool wait), then stop it."""
        if replica_id not in self.replicas:
            raise ExecutorError(
                f"replica {replica_id} is not one of this executor's "
                f"({', '.join(self.replicas.ids()) or 'none'})"
            )
        if len(self.dispatcher.live_replicas()) < 2:
            raise ExecutorError(f"replica {replica_id} is the last one serving; add one first")
        self._retired.add(replica_id)
        self._note(f"replica {replica_id} draining")
        await self.dispatcher.drain(replica_id)
        self.dispatcher.replica_died(replica_id, "drained", replace=False)  # out of the core
        await asyncio.to_thread(self.pool.remove, replica_id)
        self._note(f"replica {replica_id} drained and stopped")

    async def _serve_commands(self, poll_s: float) -> None:
        assert self.control is not None
        while True:
            commands = await asyncio.to_thread(self.control.claim, set(self.replicas.ids()))
            for command in commands:
                self._spawn(self._run_command(command))
            await asyncio.sleep(poll_s)

    async def _run_command(self, command: Command) -> None:
        assert self.control is not None and command.command == "drain"
        ok, result = True, f"replica {command.replica_id} drained and stopped"
        try:
            await self.drain(command.replica_id)
        except ExecutorError as exc:
            ok, result = False, str(exc)
        with contextlib.suppress(Exception):  # the journal closing under us at shutdown
            await asyncio.to_thread(self.control.complete, command.id, ok, result)
