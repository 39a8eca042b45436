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
that comes back to a full replica is itself a head under the same rule.

Rent or buy depends on time alone: ``wake_at()`` says when the head will have
waited long enough, and the driver sends ``Tick`` then (the core reads no clock), so
a head is not left waiting for an unrelated event (idle gateway sessions send none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.book import Book
from scheduler.decisions import Decision, ReleaseCause
from scheduler.replica import Replica
from scheduler.task import Task

_EPS_S = 1e-9  # a Tick at wake_at() buys despite float rounding of its wait


@dataclass(slots=True)
class _Offer:
    price_s: float  # re-prefill time of the victims
    replica: Replica
    victims: list[Task]
    predicted: bool  # under the predicted wait, every victim back after it


class RoomBook(Book):
    """The book with work-conserving admission (``config.work_conserving``)."""

    def wake_at(self) -> float | None:
        """When the queue's head will have waited as long as the cheapest room it
        could buy now: the driver sends ``Tick`` then. None: nothing to buy (no head,
        work-conserving admission off, or no replica with a slot and enough to
        release: a later event will change that)."""
        head = self._queue.head()
        if head is None or not self.config.work_conserving:
            return None
        offers = self._room_offers(self.admission.reservation(head), None)
        if not offers:
            return None
        return head.queued_since + min(o.price_s for o in offers)

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
            for v in best.victims:
                self._release(v, ReleaseCause.MAKE_ROOM, out)
            q.pop_head()
            self._drained(head)
            self._waits.count("work_conserving_admits")
            self._place(head, best.replica, need, out)
            self._dispatch(best.replica, out)

    def _room_offers(self, need: int, wait: float | None) -> list[_Offer]:
        """Per replica with a free slot, the tool-waiters (expected back last first,
        within their pause limit) whose release frees ``need`` tokens, and their
        price; ``predicted`` when it is under ``wait`` and each is back no sooner.
        Nothing is released. O(tool-waiters on the replicas looked at)."""
        horizon = self._now + wait if wait is not None else math.inf
        offers: list[_Offer] = []
        for r in self._fleet:
            if r.running >= r.max_running or r.budget < need:
                continue
            victims: list[Task] = []
            popped: list[Task] = []
            freed, price, late = r.free, 0.0, True
            while freed < need:
                v = r.pop_latest_waiting()
                if v is None:
                    break
                popped.append(v)
                if self._pausable(v):
                    victims.append(v)
                    freed += v.reserved
                    price += self._prefill.seconds(v.history)
                    late = late and v.expected_return >= horizon
            for v in popped:
                r.repush_waiting(v, self._next_seq())
            if freed >= need:
                predicted = wait is not None and late and price < wait
                offers.append(_Offer(price, r, victims, predicted))
        return offers
