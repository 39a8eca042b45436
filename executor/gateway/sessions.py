"""The gateway's live sessions: bounded in number, ended by the client or by idleness.

A request that names no session is matched to a live keyless session by its
conversation's prefix (``matcher``), else it starts one; keyless sessions live
like keyed ones (idle TTL, eviction), under a generated key (``anon-...``).

A session is one task of the scheduler core (``Session.task_id``): it arrives with
its first request, each request is one call, and the time between a response and
the session's next request is its tool wait. When a session ends (``X-Session-Final``,
``DELETE /v1/sessions/{id}``, the idle TTL, or eviction to make room) ``on_end``
tells the core, which releases its KV.

Memory stays bounded: at most ``max_sessions`` live at once, each holding its last
prompt and reply as a packed array of token ids (4 bytes a token); when full, the
least recently used idle session is ended to make room (a session in a request is
never evicted; when every one is busy, a new one is refused).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from executor.gateway.errors import GatewayError
from executor.gateway.matcher import PrefixIndex, anchor
from executor.gateway.transcript import Turn


@dataclass
class Session:
    key: str
    keyed: bool  # False: found by its prefix (``matcher``), not named by the client
    task_id: str
    last_used: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last: Turn | None = None
    calls: int = 0
    busy: int = 0  # requests in flight (waiting for the lock or running)
    ending: str | None = None  # set while busy: end when the request is done
    replica_id: str | None = None
    cached: list[int] = field(default_factory=list)  # cached tokens of the latest calls
    prompts: list[int] = field(default_factory=list)  # prompt tokens of the latest calls
    queue_wait_s: float = 0.0  # all its calls together

    def new_task(self) -> None:
        """A fresh core task for this session (its last one was ended or refused)."""
        self.task_id = _task_id()

    def note_call(
        self, replica_id: str, cached_tokens: int, prompt_tokens: int = 0, waited_s: float = 0.0
    ) -> None:
        self.calls += 1
        self.replica_id = replica_id
        self.cached = [*self.cached[-7:], cached_tokens]
        self.prompts = [*self.prompts[-7:], prompt_tokens]
        self.queue_wait_s += waited_s

    def row(self) -> dict[str, Any]:
        """What ``/v1/sessions``, the dashboard and ``/metrics`` show of it."""
        return {
            "id": self.key,
            "task_id": self.task_id,
            "keyed": self.keyed,
            "calls": self.calls,
            "replica_id": self.replica_id,
            "cached_tokens": self.cached,
            "prompt_tokens": self.prompts,
            "queue_wait_s": round(self.queue_wait_s, 3),
            "busy": bool(self.busy),
        }


def _task_id() -> str:
    return f"gw-{uuid.uuid4().hex[:16]}"


class SessionStore:
    def __init__(
        self,
        *,
        max_sessions: int,
        idle_ttl_s: float,
        on_end: Callable[[Session, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self.on_end = on_end
        self.clock = clock
        self._live: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self.ended = 0
        self.index = PrefixIndex()
        self.matched = 0  # keyless requests matched to a live session

    def __len__(self) -> int:
        return len(self._live)

    def get(self, key: str) -> Session | None:
        return self._live.get(key)

    def sessions(self) -> list[Session]:
        return list(self._live.values())

    def acquire(self, key: str | None, anchor_hash: str | None = None) -> Session:
        """The live session for ``key`` (a new one if none is), marked busy: the caller
        must ``release`` it. ``key`` None: a new keyless session, indexed under
        ``anchor_hash`` for the requests that continue it."""
        now = self.clock()
        session = self._live.get(key) if key is not None else None
        if session is None:
            self._make_room()
            name = key if key is not None else f"anon-{uuid.uuid4().hex[:16]}"
            session = Session(name, key is not None, _task_id(), now)
            self._live[name] = session
            if key is None and anchor_hash is not None:
                self.index.add(name, anchor_hash)
        self._live.move_to_end(session.key)
        session.last_used = now
        session.busy += 1
        return session

    def acquire_keyless(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        prompt_ids: Callable[[], list[int]] | None = None,
        anchor_tokens: Callable[[], int] | None = None,
    ) -> Session:
        """The live keyless session this request continues (``PrefixIndex.match``),
        else a new one; marked busy like ``acquire``'s."""
        found = self.index.match(messages, tools, self._live.get, prompt_ids, anchor_tokens)
        if isinstance(found, Session) and found.ending is None:
            self.matched += 1
            return self.acquire(found.key)
        return self.acquire(None, anchor(messages, tools))

    def release(self, session: Session, *, final: bool = False) -> None:
        session.busy -= 1
        session.last_used = self.clock()
        if final:
            session.ending = session.ending or "final"
        if session.ending is not None and session.busy == 0:
            self._end(session, session.ending)

    def end(self, key: str, reason: str) -> bool:
        """End a session now, or, while it has a request in flight, when that ends."""
        session = self._live.get(key)
        if session is None:
            return False
        if session.busy:
            session.ending = reason
        else:
            self._end(session, reason)
        return True

    def _end(self, session: Session, reason: str) -> None:
        if self._live.get(session.key) is session:
            del self._live[session.key]
            self.index.remove(session.key)
            self.ended += 1
            self.on_end(session, reason)

    def _make_room(self) -> None:
        if len(self._live) < self.max_sessions:
            return
        idle = next((s for s in self._live.values() if not s.busy), None)
        if idle is None:
            raise GatewayError(
                429,
                f"{self.max_sessions} sessions are in requests (the gateway's limit)",
                code="too_many_sessions",
                headers={"Retry-After": "1"},
            )
        self._end(idle, "evicted (the session limit)")

    def sweep(self) -> int:
        """End the sessions idle longer than the TTL; how many."""
        cutoff = self.clock() - self.idle_ttl_s
        stale = [s for s in self._live.values() if not s.busy and s.last_used <= cutoff]
        for s in stale:
            self._end(s, "idle")
        return len(stale)

    async def sweep_forever(self) -> None:
        period = max(0.05, min(30.0, self.idle_ttl_s / 4))
        while True:
            await asyncio.sleep(period)
            self.sweep()
