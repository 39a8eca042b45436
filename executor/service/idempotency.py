"""Idempotency keys: a retried submit returns the task the first one started.

Kept in the journal's SQLite file (a table of its own), so a key outlives a crash of
the service just as its task does.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS service_idempotency (
    key         TEXT PRIMARY KEY,
    body_hash   TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    created_at  REAL NOT NULL
);
"""
MAX_KEY_CHARS = 200


class KeyReused(Exception):
    """The key was first used with another body."""


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class IdempotencyStore:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, key: str, digest: str, task_id: str) -> str:
        """The task of ``key``: ``task_id`` if the key is new (now taken), the first
        task's if it was used with the same body; ``KeyReused`` if with another."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT body_hash, task_id FROM service_idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO service_idempotency VALUES (?, ?, ?, ?)",
                    (key, digest, task_id, time.time()),
                )
                return task_id
        if row[0] != digest:
            raise KeyReused(key)
        return str(row[1])

    def release(self, key: str, task_id: str) -> None:
        """Forget a key whose task was never started (its submit was refused)."""
        with self._lock, self._db:
            self._db.execute(
                "DELETE FROM service_idempotency WHERE key = ? AND task_id = ?", (key, task_id)
            )
