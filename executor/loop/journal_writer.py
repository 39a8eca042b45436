"""The journal's writer thread: commits off the event loop, several at once.

A commit (``synchronous=FULL``: an fsync) takes milliseconds; on the event loop
that serves every task (and, in the service, every HTTP request) hundreds of them
a second stall everything else. The writer thread takes every write waiting when
it is free, runs them in one transaction and commits once (a group commit), then
resolves each caller's future on its own loop. A caller still awaits its own write:
a step is on disk before the task's next one starts.

If the group's transaction fails, each write is retried alone, so an error (a
task id already taken) reaches only the caller that caused it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: The most writes committed together.
MAX_GROUP = 256

Write = Callable[[sqlite3.Connection], Any]
_Item = tuple[Write, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class CommitThread:
    """One thread writing through ``db`` (serialized with other users by ``lock``)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock, name: str) -> None:
        self._db = db
        self._lock = lock
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False
        self._start_lock = threading.Lock()
        self.groups = 0  # transactions committed (for tests and telemetry)

    def submit(self, write: Write) -> asyncio.Future[Any]:
        """Queue ``write(db)``; the future resolves (on the caller's loop) once committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._start_lock:
            if not self._started:
                self._thread.start()
                self._started = True
        self._queue.put((write, fut, loop))
        return fut

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._start_lock:
            if not self._started:
                return
            self._started = False
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group, stop = [item], False
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Item]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                results = [write(self._db) for write, _, _ in group]
                self._db.execute("COMMIT")
                self.groups += 1
                outcomes: list[tuple[Any, BaseException | None]] = [(r, None) for r in results]
            except Exception:
                self._rollback()
                outcomes = [self._alone(write) for write, _, _ in group]
        for (_, fut, loop), (result, exc) in zip(group, outcomes, strict=True):
            try:
                loop.call_soon_threadsafe(_settle, fut, result, exc)
            except RuntimeError:  # the caller's loop is closed: nobody waits any more
                log.debug("a journal write finished after its event loop closed")

    def _alone(self, write: Write) -> tuple[Any, BaseException | None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            result = write(self._db)
            self._db.execute("COMMIT")
            self.groups += 1
            return result, None
        except Exception as exc:
            self._rollback()
            return None, exc

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                log.error("rolling back a journal transaction failed", exc_info=True)
