"""Work-conserving admission: room for a waiting task, bought from tool-waiters.

The queue's head fits on no replica (else ``Book._admit`` placed it). On a replica
with a free compute slot, releasing KV of tool-waiting tasks there (expected back
last first, within their pause limit) would make its room at a price: their
re-prefill, at the learned prefill speed. The head buys the cheapest such room

- at once, when the **predicted wait** (one over the learned rate at which tasks
  leave the queue) is above the price and each of them is expected back no sooner:
  the room they hold would sit unused until the head got in anyway;
- or once its wait so far has reached the price (**rent or buy**, the ski-rental
  rule: no task waits more than about twice what the cheaper of waiting and
  re-prefilling costs). It needs no learned rate, so it also holds at a run's start,
  and it keeps an idle replica from sitting beside a waiting task.

A victim is paused at most ``max_pauses`` times (anti-thrash), and a paused task
that comes back to a full replica is itself a head under the same rule. A **stale**
tool-waiter (its wait already over twice what was expected, plus a second: a gateway
session whose client has gone, a tool far in its tail) is a victim first, whatever
its pauses (``ReleaseCause.STALE``, not a pause), and free in the rent-or-buy rule
(the price counts only the fresh victims): it is not expected back, a release costs
it one re-prefill if it ever comes back, and at most one per wait, since it then
holds nothing. So sessions nobody ends cannot hold a fleet's KV until their idle
TTL (found in the gateway benchmark: keyless sessions at their pause limit locked
new ones out until 429).

Rent or buy depends on time alone: ``wake_at()`` says when the head will have
waited long enough, or when enough waits will have turned stale, and the driver
sends ``Tick`` then (the core reads no clock), so a head is not left waiting for an
unrelated event (idle gateway sessions send none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.book import Book
from scheduler.decisions import Decision, ReleaseCause
from scheduler.replica import Replica
from scheduler.task import Task

_EPS_S = 1e-9  # a Tick at wake_at() buys despite float rounding of its wait
STALE_FACTOR = 2.0  # a tool wait past this many times its expected length ...
STALE_GRACE_S = 1.0  # ... plus this is stale
STALE_LOOKAHEAD = 8  # wake_at() looks at most this many stale times ahead


@dataclass(slots=True)
class _Offer:
    price_s: float  # re-prefill time of the victims (the fresh ones: stale cost nothing)
    replica: Replica
    victims: list[tuple[Task, ReleaseCause]]
    predicted: bool  # under the predicted wait, every victim back after it


class RoomBook(Book):
    """The book with work-conserving admission (``config.work_conserving``)."""

    def wake_at(self) -> float | None:
        """When the queue's head will have waited as long as the cheapest room it
        could buy now, or, with none to buy, when the next tool-waiter turns stale:
        the driver sends ``Tick`` then. None: nothing to buy (no head, work-conserving
        admission off, or no replica with a slot and enough to release, now or when a
        wait turns stale: a later event will change that)."""
        head = self._queue.head()
        if head is None or not self.config.work_conserving:
            return None
        need = self.admission.reservation(head)
        offers = self._room_offers(need, None)
        best = head.queued_since + min((o.price_s for o in offers), default=math.inf)
        # a price only falls as waits turn stale, so the head buys at the earliest
        # max(T, queued + price at T) over now and the coming stale times T
        coming = {
            at
            for r in self._fleet
            if r.running < r.max_running
            for t in r.waiting_tasks()
            if (at := _stale_at(t)) > self._now
        }
        for at in sorted(coming)[:STALE_LOOKAHEAD]:
            if at >= best:
                break
            later = self._room_offers(need, None, at)
            if later:
                best = min(best, max(at, head.queued_since + min(o.price_s for o in later)))
        return best if best < math.inf else None

    def _work_conserve(self, out: list[Decision]) -> None:
        """Place queued tasks, head first, while one can buy its room (see the
        module docstring)."""
        q = self._queue
        while (head := q.head()) is not None:
            need = self.admission.reservation(head)
            waited = self._now - head.queued_since + _EPS_S
            offers = [
                o
                for o in self._room_offers(need, self._drain_all.expected_wait(1))
                if o.predicted or o.price_s <= waited
            ]
            if not offers:
                return
            best = min(offers, key=lambda o: o.price_s)
            for v, cause in best.victims:
                self._release(v, cause, out)
            q.pop_head()
            self._drained(head)
            self._waits.count("work_conserving_admits")
            self._place(head, best.replica, need, out)
            self._dispatch(best.replica, out)

    def _room_offers(self, need: int, wait: float | None, at: float | None = None) -> list[_Offer]:
        """Per replica with a free slot, the tool-waiters whose release frees ``need``
        tokens (stale ones first, the longest overdue first; then the others expected
        back last first, within their pause limit) and their price; ``predicted`` when
        it is under ``wait`` and each fresh one is back no sooner. ``at``: as of that
        time (default now). Nothing is released. O(tool-waiters on the replicas
        looked at)."""
        now = self._now if at is None else at
        horizon = now + wait if wait is not None else math.inf
        offers: list[_Offer] = []
        for r in self._fleet:
            if r.running >= r.max_running or r.budget < need:
                continue
            waiting = r.waiting_tasks()  # expected back last first
            stale = sorted((t for t in waiting if _stale_at(t) <= now), key=_started)
            fresh = [t for t in waiting if _stale_at(t) > now and self._pausable(t)]
            candidates = [(t, ReleaseCause.STALE) for t in stale]
            candidates += [(t, ReleaseCause.MAKE_ROOM) for t in fresh]
            victims: list[tuple[Task, ReleaseCause]] = []
            freed, price, late = r.free, 0.0, True
            for v, cause in candidates:
                if freed >= need:
                    break
                victims.append((v, cause))
                freed += v.reserved
                if cause is ReleaseCause.MAKE_ROOM:
                    price += self._prefill.seconds(v.history)
                    late = late and v.expected_return >= horizon
            if freed >= need:
                predicted = wait is not None and late and price < wait
                offers.append(_Offer(price, r, victims, predicted))
        return offers


def _started(task: Task) -> float:
    return task.tool_started


def _stale_at(task: Task) -> float:
    """When the task's tool wait turns stale (see the module docstring)."""
    expected = max(task.expected_return - task.tool_started, 0.0)
    return task.tool_started + STALE_FACTOR * expected + STALE_GRACE_S
