"""Operator commands to a running executor, through its journal file.

``python -m executor drain r1`` runs in another process than the executor that
serves r1. The two already share the journal (SQLite, WAL, safe across
processes), so a command is a row in its ``commands`` table: the CLI inserts
it; the executor that serves the replica claims it at its next poll, carries it
out and writes the result; the CLI waits for both. A command no executor claims
(none is running on that journal, or none serves that replica) times out with a
message saying so.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from executor.errors import ExecutorError
from executor.paths import default_journal_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    command     TEXT NOT NULL,      -- drain
    replica_id  TEXT NOT NULL,
    created_at  REAL NOT NULL,
    claimed_at  REAL,               -- an executor serving the replica took it
    done_at     REAL,
    ok          INTEGER,
    result      TEXT
);
"""
COMMANDS = frozenset({"drain"})


@dataclass(frozen=True)
class Command:
    id: int
    command: str
    replica_id: str


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    result: str


class ControlChannel:
    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_journal_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, timeout=30, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ControlChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the operator's side -------------------------------------------------------

    def request(self, command: str, replica_id: str) -> int:
        if command not in COMMANDS:
            raise ExecutorError(f"unknown command {command!r}; known: {sorted(COMMANDS)}")
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO commands (command, replica_id, created_at) VALUES (?, ?, ?)",
                (command, replica_id, time.time()),
            )
        return int(cur.lastrowid or 0)

    def wait(
        self, command_id: int, *, claim_timeout_s: float, timeout_s: float, poll_s: float = 0.2
    ) -> CommandResult:
        """Wait until an executor claimed the command, then until it is done."""
        start = time.monotonic()
        while True:
            with self._lock:
                row = self._db.execute(
                    "SELECT command, replica_id, claimed_at, done_at, ok, result FROM commands "
                    "WHERE id = ?",
                    (command_id,),
                ).fetchone()
            if row is None:
                raise ExecutorError(f"no command {command_id} in {self.path}")
            command, replica_id, claimed, done, ok, result = row
            if done is not None:
                return CommandResult(bool(ok), str(result))
            waited = time.monotonic() - start
            if claimed is None and waited > claim_timeout_s:
                self._cancel(command_id)
                raise ExecutorError(
                    f"no running executor with journal {self.path} serves replica "
                    f"{replica_id} (nobody took the {command} in {claim_timeout_s:g} s)"
                )
            if waited > timeout_s:
                raise ExecutorError(
                    f"the {command} of {replica_id} is not done after {timeout_s:g} s; "
                    "it goes on in the executor"
                )
            time.sleep(poll_s)

    def _cancel(self, command_id: int) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE commands SET done_at = ?, ok = 0, result = 'not claimed' "
                "WHERE id = ? AND claimed_at IS NULL",
                (time.time(), command_id),
            )

    # -- the executor's side -------------------------------------------------------

    def claim(self, replica_ids: set[str]) -> list[Command]:
        """Take the open commands for these replicas (each is taken once)."""
        if not replica_ids:
            return []
        marks = ",".join("?" * len(replica_ids))
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = self._db.execute(
                f"SELECT id, command, replica_id FROM commands WHERE claimed_at IS NULL "
                f"AND done_at IS NULL AND replica_id IN ({marks}) ORDER BY id",
                tuple(replica_ids),
            ).fetchall()
            now = time.time()
            for row in rows:
                self._db.execute("UPDATE commands SET claimed_at = ? WHERE id = ?", (now, row[0]))
        return [Command(*row) for row in rows]

    def complete(self, command_id: int, ok: bool, result: str) -> None:
        with self._lock, self._db:
            self._db.execute(
                "UPDATE commands SET done_at = ?, ok = ?, result = ? WHERE id = ?",
                (time.time(), int(ok), result, command_id),
            )
