"""Warm before return, the I/O side: the core's ``WarmUp`` applied on the fleet.

The core (:mod:`scheduler.policies.warmup`, ``SchedulerConfig.warm_up``) decides when
a paused task's history should be prefilled again on a replica ahead of its next call;
a :class:`Warmer` does it: a generate of the task's prompt so far (what the task's
driver said with :meth:`Warmer.remember`: its last call's prompt and reply) with one
new token (``max_new_tokens`` is at least 1 here), tagged with the task's session, on
the chosen replica and abandoned if that replica is declared dead. Its end is reported
to the core (``WarmedUp``: ok, or not); a ``ReleaseKV`` of the task while it runs (the
core cancelled it: a waiting task or a growing call needs the room) cancels it.

A task whose prompt the warmer does not know is reported not warmed at once (the core
gives the room back). Without a warmer attached, the dispatcher ignores ``WarmUp``
and the task's next call prefills its history itself.

Attach one to a dispatcher::

    warmer = Warmer(replicas, dispatcher)
    warmer.attach()
    warmer.remember(task_id, lambda: prompt_ids + output_ids)  # after each call
    warmer.forget(task_id)  # when the task ends
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from executor.dispatch import Dispatcher
from executor.fleet.generation import GenerateRequest
from executor.fleet.registry import ReplicaRegistry
from executor.loop.driver import generate_unless_lost
from executor.sampling import SamplingParams
from scheduler import WarmedUp, WarmUp

PromptSoFar = Callable[[], list[int]]
_SAMPLING = SamplingParams(max_new_tokens=1, temperature=0.0)


class Warmer:
    def __init__(self, replicas: ReplicaRegistry, dispatcher: Dispatcher) -> None:
        self.replicas = replicas
        self.dispatcher = dispatcher
        self._prompts: dict[str, PromptSoFar] = {}
        self._running: dict[str, tuple[str, asyncio.Task[None]]] = {}  # task -> (replica, job)
        self.started = 0
        self.warmed = 0
        self.failed = 0

    def attach(self) -> None:
        """Apply the dispatcher's ``WarmUp`` decisions here, and cancel a warm-up when
        the core releases its task (the dispatcher's ``on_release`` still runs)."""
        self.dispatcher.on_warm_up = self.apply
        before = self.dispatcher.on_release

        def on_release(replica_id: str, task_id: str) -> None:
            self.cancel(task_id)
            if before is not None:
                before(replica_id, task_id)

        self.dispatcher.on_release = on_release

    def remember(self, task_id: str, prompt: PromptSoFar) -> None:
        """How to get the task's prompt so far (its last call's prompt and reply)."""
        self._prompts[task_id] = prompt

    def forget(self, task_id: str) -> None:
        self._prompts.pop(task_id, None)
        self.cancel(task_id)

    def apply(self, d: WarmUp) -> None:
        """Start the warm-up (called while the dispatcher applies decisions: the report
        is never sent from inside it)."""
        loop = asyncio.get_running_loop()
        prompt = self._prompts.get(d.task_id)
        ids = prompt() if prompt is not None else []
        if not ids:
            loop.call_soon(self._report, d.task_id, d.replica_id, False)
            return
        self.cancel(d.task_id)
        request = GenerateRequest(
            input_ids=ids,
            sampling=_SAMPLING,
            rid=f"{d.task_id}-warm-{uuid.uuid4().hex[:8]}",
            session_id=d.task_id,
        )
        job = loop.create_task(self._run(d.task_id, d.replica_id, request))
        self._running[d.task_id] = (d.replica_id, job)
        self.started += 1

    def cancel(self, task_id: str) -> None:
        entry = self._running.pop(task_id, None)
        if entry is not None:
            entry[1].cancel()

    async def _run(self, task_id: str, replica_id: str, request: GenerateRequest) -> None:
        ok = False
        try:
            await generate_unless_lost(self.replicas, self.dispatcher, replica_id, request)
            ok = True
        except asyncio.CancelledError:
            return  # the core released it: nothing to report
        except Exception:  # a failed warm-up only costs the next call its prefill
            ok = False
        finally:
            entry = self._running.get(task_id)
            if entry is not None and entry[1] is asyncio.current_task():
                del self._running[task_id]
        self._report(task_id, replica_id, ok)

    def _report(self, task_id: str, replica_id: str, ok: bool) -> None:
        if ok:
            self.warmed += 1
        else:
            self.failed += 1
        if self.dispatcher.core.task(task_id) is not None:
            self.dispatcher.send(WarmedUp(self.dispatcher.now(), task_id, replica_id, ok))
