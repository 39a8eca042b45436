"""Warm before return: re-prefill a paused task's history ahead of its next call.

A task whose KV was released (paused under pressure, moved off a draining or dead
replica) re-prefills its whole history in its next call, on its critical path. When
its tool is expected to end soon (within ``warm_up_lead`` x the time to re-prefill its
history, at the learned prefill speed) and a replica has the KV room and idle compute,
the core holds the task's KV there again and tells the runtime to prefill its history
now (``WarmUp``: a generate of its prompt so far with no output); the call then finds
it cached. Reported back with ``WarmedUp``.

Never at the expense of other work:

* a warm-up starts only while no task waits for admission, on an active replica
  whose free budget covers the task's reservation (the ledger never goes over), with
  idle compute (at most ``warm_up_max_running`` calls running, 0 by default, a free
  slot: running calls + warm-ups in flight < its ``max_running``, warm-ups in flight <
  ``warm_up_slots``) and no call waiting for a slot;
* a call whose history grows past its replica's budget takes the room back (warmed
  tasks there are released before the call's own task would be), and so does a task
  that comes to wait for admission: warmed tasks still in their tool are released
  (``ReleaseKV``, ``WARM_UP_CANCELLED``) on the replica where that lets the queue's
  head fit, and the head is placed;
* one warm-up per tool wait: a cancelled one is not retried (no thrash).

A task that comes back first runs where it was warmed (its call finds whatever the
warm-up has prefilled by then). The policy's state: the released tool-waiting tasks by
the time their warm-up is due (a heap, lazy deletion: O(log n) an event) and the
warmed tasks per replica (small: a replica takes at most ``warm_up_slots`` at a time).
"""

from __future__ import annotations

import heapq

from scheduler.decisions import Decision, ReleaseCause, Replace, WarmUp
from scheduler.events import ReplicaId, TaskId, WarmedUp
from scheduler.policies.room import RoomBook
from scheduler.replica import Replica
from scheduler.states import ReplicaState, TaskState
from scheduler.task import Task

_TRIES = 4  # due tasks tried per event (more wait for the next event)
_CANDIDATES = 8  # replicas with the most free KV looked at, besides the task's last one
_RETRY_S = 0.01  # least wait before a due task that found no replica is tried again


class WarmUpBook(RoomBook):
    """The book with warm-ups (see the module docstring); off unless ``config.warm_up``."""

    # its state (``_due``, ``_warm_on``) is made in ``Book.__init__``

    # -------------------------------------------------------------- hooks

    def _release(self, task: Task, cause: ReleaseCause, out: list[Decision]) -> None:
        super()._release(task, cause, out)
        self._warm_note(task)

    def _relieve(self, r: Replica, out: list[Decision]) -> None:
        """A call's growth pushed ``r`` over its budget: tool-waiting tasks are paused as
        the book's order says (warmed ones are expected back soon: last); if that is not
        enough, warm-ups there are cancelled (the largest first) before the call's own
        task would have to give its KV up."""
        super()._relieve(r, out)
        if r.reserved > r.budget and r.id in self._warm_on:
            for t in sorted(self._warm_tasks(r).values(), key=lambda t: (-t.reserved, t.id)):
                if r.reserved <= r.budget:
                    break
                self._waits.count("warm_up_cancelled")
                self._release(t, ReleaseCause.WARM_UP_CANCELLED, out)

    def _warm_note(self, task: Task) -> None:
        """A tool-waiting task holds no KV: its warm-up is due ``warm_up_lead`` x its
        re-prefill's time before its tool's expected end."""
        c = self.config
        if (
            c.warm_up
            and task.state is TaskState.TOOL
            and not task.kv_held
            and task.history > 0
            and task.warm_tool != task.tool_started
        ):
            at = task.expected_return - c.warm_up_lead * self._prefill.seconds(task.history)
            heapq.heappush(self._due, (at, self._next_seq(), task, task.tool_started))
            if len(self._due) > 2 * len(self._tasks) + 64:  # stale entries: drop them
                self._due = [e for e in self._due if self._warm_wanted(e)]
                heapq.heapify(self._due)

    def _warm_wanted(self, entry: tuple[float, int, Task, float]) -> bool:
        """A due-heap entry still stands for a released task in the same tool wait."""
        task = entry[2]
        return (
            self._tasks.get(task.id) is task
            and task.state is TaskState.TOOL
            and not task.kv_held
            and task.tool_started == entry[3]
            and task.warm_tool != task.tool_started
        )

    def _warm_up(self, out: list[Decision]) -> None:
        """After every event: give the room back to waiting tasks, else start the warm-ups
        that are due."""
        if len(self._queue):
            self._warm_reclaim(out)
        elif self._due and self._due[0][0] <= self._now:
            self._warm_due(out)

    def _on_warmed_up(self, e: WarmedUp, out: list[Decision]) -> None:
        task = self._tasks.get(e.task_id)
        if task is None or not self._warmed(task, e.replica_id) or not task.cold:
            return  # stale: it came back, moved or ended (or a second report)
        if e.ok:
            task.cold = False
            self._waits.count("warm_up_done")
        else:
            self._waits.count("warm_up_failed")
            self._release(task, ReleaseCause.WARM_UP_CANCELLED, out)

    # -------------------------------------------------------------- moves

    def _warmed(self, task: Task, rid: ReplicaId) -> bool:
        """The task still waits on the tool it was warmed for, holding KV on ``rid``."""
        return (
            task.state is TaskState.TOOL
            and task.kv_held
            and task.replica == rid
            and task.warm_tool == task.tool_started
            and self._tasks.get(task.id) is task
        )

    def _warm_tasks(self, r: Replica) -> dict[TaskId, Task]:
        """The warmed tasks on ``r`` (stale entries dropped)."""
        on = self._warm_on.get(r.id)
        if not on:
            return {}
        for tid in [tid for tid, t in on.items() if not self._warmed(t, r.id)]:
            del on[tid]
        if not on:
            del self._warm_on[r.id]
        return on

    def _warm_idle(self, r: Replica) -> bool:
        """Idle compute: no call waits for a slot, at most ``warm_up_max_running`` run,
        and a slot is free for a warm-up."""
        if r.run_queue.live or r.running > self.config.warm_up_max_running:
            return False
        flying = sum(1 for t in self._warm_tasks(r).values() if t.cold)
        return flying < self.config.warm_up_slots and r.running + flying < r.max_running

    def _warm_replica(self, task: Task, need: int) -> Replica | None:
        last = self._replicas.get(task.last_replica) if task.last_replica else None
        pool = ([last] if last is not None else []) + self._fleet.most_free(_CANDIDATES)
        for r in pool:
            if r.state is ReplicaState.ACTIVE and r.free >= need and self._warm_idle(r):
                return r
        return None

    def _warm_due(self, out: list[Decision]) -> None:
        heap, now = self._due, self._now
        back: list[tuple[float, int, Task, float]] = []
        tried = 0
        while heap and heap[0][0] <= now and tried < _TRIES:
            entry = heapq.heappop(heap)
            if not self._warm_wanted(entry):
                continue  # stale
            task = entry[2]
            tried += 1
            need = self.admission.reservation(task)
            r = self._warm_replica(task, need)
            if r is None:  # tried again 2% of its lead later (not every event)
                lead = self.config.warm_up_lead * self._prefill.seconds(task.history)
                back.append((now + max(_RETRY_S, 0.02 * lead), entry[1], task, entry[3]))
                continue
            self._warm(task, r, need, out)
        for entry in back:
            heapq.heappush(self._due, entry)

    def _warm(self, task: Task, r: Replica, need: int, out: list[Decision]) -> None:
        last = task.last_replica
        if last is not None and last != r.id:
            out.append(Replace(task.id, last, r.id, task.lost_kv))
        task.last_replica = r.id
        self._reserve(task, r, need)
        r.push_waiting(task, self._next_seq())
        task.warm_tool = task.tool_started
        self._warm_on.setdefault(r.id, {})[task.id] = task
        self._waits.count("warm_up")
        out.append(WarmUp(task.id, r.id, task.history))

    def _warm_reclaim(self, out: list[Decision]) -> None:
        """Tasks wait for admission: release warmed tasks on the replica where that lets
        the queue's head fit (the fewest tokens released), and admit; repeat."""
        q = self._queue
        while (head := q.head()) is not None and self._warm_on:
            need = self.admission.reservation(head)
            best: tuple[int, Replica, list[Task]] | None = None
            for rid in list(self._warm_on):
                r = self._replicas[rid]
                warm = sorted(self._warm_tasks(r).values(), key=lambda t: (-t.reserved, t.id))
                if r.state is not ReplicaState.ACTIVE or r.budget < need:
                    continue
                victims: list[Task] = []
                freed = r.free
                for t in warm:
                    if freed >= need:
                        break
                    victims.append(t)
                    freed += t.reserved
                cost = sum(t.reserved for t in victims)
                if freed >= need and victims and (best is None or cost < best[0]):
                    best = (cost, r, victims)
            if best is None:
                return
            for t in best[2]:
                self._waits.count("warm_up_cancelled")
                self._release(t, ReleaseCause.WARM_UP_CANCELLED, out)
            self._admit(out)
            if q.head() is head:  # pragma: no cover - it fits there now
                return
