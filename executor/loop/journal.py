"""The journal: the source of truth of every task (SQLite, WAL, synchronous commits).

A replica's KV is only a cache of what is written here. Every step of a task is
committed before the next step starts:

- ``call``: a model call's reply (its token ids and text) with SGLang's token
  counts, the replica that served it and its queue wait;
- ``tool_start``: the intent to run a tool call, written *before* it runs;
- ``tool_result``: its result, written after;
- ``observation``: the token ids appended to the transcript after a reply
  (a tool result, or an error the model must see).

The token transcript of a task is its prompt ids plus, in order, every call's
output ids and every observation's ids: replaying it on any replica rebuilds the
exact prompt of the next call. A ``tool_start`` without its ``tool_result`` is a
tool whose effects are unknown (the driver died while it ran): it is never run
again silently; the resume reports it.

Off the event loop: the ``a``-prefixed writes (``acreate_task``, ``aappend``,
``afinish``) are committed by a writer thread (:mod:`executor.loop.journal_writer`,
group commits), and reads go through a connection of their own, so a reader never
waits for a commit's fsync (WAL: readers see every committed step). The plain
writes commit in the caller's thread (scripts, the CLI, shutdown paths).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from executor.errors import ExecutorError
from executor.loop.journal_writer import CommitThread
from executor.loop.steps import (
    PAYLOADS,
    CallPayload,
    ObservationPayload,
    Payload,
    StepKind,
    ToolResultPayload,
    ToolStartPayload,
)
from executor.paths import default_journal_path

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id     TEXT PRIMARY KEY,
    agent       TEXT NOT NULL,      -- the agent's definition (JSON)
    goal        TEXT NOT NULL,
    prompt_ids  TEXT NOT NULL,      -- the first call's prompt token ids (JSON)
    status      TEXT NOT NULL,      -- running | succeeded | failed | step_limit
    output      TEXT,
    error       TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    task_id     TEXT NOT NULL REFERENCES tasks(task_id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,      -- call | tool_start | tool_result | observation
    payload     TEXT NOT NULL,      -- JSON
    created_at  REAL NOT NULL,
    PRIMARY KEY (task_id, seq)
);
"""

FINISHED_STATUSES = frozenset({"succeeded", "failed", "step_limit"})


class JournalError(ExecutorError):
    """A task the journal does not have, or a step it cannot take."""


@dataclass(frozen=True)
class JournalStep:
    seq: int
    payload: Payload
    created_at: float

    @property
    def kind(self) -> StepKind:
        return self.payload.kind


@dataclass
class TaskRecord:
    task_id: str
    agent: dict[str, Any]
    goal: str
    prompt_ids: list[int]
    status: str
    output: str | None
    error: str | None
    created_at: float
    updated_at: float
    steps: list[JournalStep] = field(default_factory=list)

    @property
    def payloads(self) -> list[Payload]:
        return [s.payload for s in self.steps]

    def transcript_ids(self) -> list[int]:
        """The prompt of the task's next call: prompt + every reply and observation, in order."""
        ids = list(self.prompt_ids)
        for p in self.payloads:
            if isinstance(p, CallPayload | ObservationPayload):
                ids.extend(p.ids)
        return ids

    def tool_results(self) -> dict[str, ToolResultPayload]:
        """Journaled tool results by call id: these are never executed again."""
        return {p.call_id: p for p in self.payloads if isinstance(p, ToolResultPayload)}

    def unfinished_tools(self) -> list[ToolStartPayload]:
        """Tool calls that started but have no result (effects unknown)."""
        done = self.tool_results()
        return [
            p for p in self.payloads if isinstance(p, ToolStartPayload) and p.call_id not in done
        ]


class Journal:
    """One SQLite file; safe to open from several processes (WAL)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_journal_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write connection shared by the writer thread, the executor's loop thread and
        # its callers' threads, serialized by a lock (sqlite3 objects are thread-bound
        # unless told otherwise); reads have their own connection and lock.
        self._db = sqlite3.connect(
            self.path, isolation_level=None, timeout=30, check_same_thread=False
        )
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a step is on disk before the next starts
        self._db.executescript(SCHEMA)
        self._reader = sqlite3.connect(
            self.path, isolation_level=None, timeout=30, check_same_thread=False
        )
        self._read_lock = threading.RLock()
        self.writer = CommitThread(self._db, self._lock, name=f"journal-{self.path.name}")

    def close(self) -> None:
        self.writer.close()
        with self._lock:
            self._db.close()
        with self._read_lock:
            self._reader.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self, write: Any) -> Any:
        """Commit ``write(db)`` in the caller's thread (one transaction)."""
        with self._lock, self._db:  # committed on exit
            self._db.execute("BEGIN IMMEDIATE")
            return write(self._db)

    # -- writes: each as a function of the connection, run now or by the writer ------

    def _create_write(
        self, task_id: str, agent: dict[str, Any], goal: str, prompt_ids: list[int]
    ) -> Any:
        now = time.time()
        row = (task_id, json.dumps(agent), goal, json.dumps(prompt_ids), now, now)
        path = self.path

        def write(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO tasks VALUES (?, ?, ?, ?, 'running', NULL, NULL, ?, ?)", row
                )
            except sqlite3.IntegrityError:
                raise JournalError(f"task {task_id} already exists in {path}") from None

        return write

    @staticmethod
    def _append_write(task_id: str, payload: Payload) -> Any:
        now, kind, text = time.time(), payload.kind.value, payload.model_dump_json()

        def write(db: sqlite3.Connection) -> int:
            (seq,) = db.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM steps WHERE task_id = ?", (task_id,)
            ).fetchone()
            db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?)", (task_id, seq, kind, text, now))
            db.execute("UPDATE tasks SET updated_at = ? WHERE task_id = ?", (now, task_id))
            return int(seq)

        return write

    @staticmethod
    def _finish_write(task_id: str, status: str, output: str | None, error: str | None) -> Any:
        if status not in FINISHED_STATUSES:
            raise JournalError(f"not a terminal status: {status}")
        args = (status, output, error, time.time(), task_id)

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tasks SET status = ?, output = ?, error = ?, updated_at = ? "
                "WHERE task_id = ?",
                args,
            )

        return write

    def create_task(
        self, task_id: str, agent: dict[str, Any], goal: str, prompt_ids: list[int]
    ) -> None:
        self._now(self._create_write(task_id, agent, goal, prompt_ids))

    def append(self, task_id: str, payload: Payload) -> int:
        """Commit one step; returns its sequence number."""
        return int(self._now(self._append_write(task_id, payload)))

    def finish(
        self, task_id: str, status: str, output: str | None = None, error: str | None = None
    ) -> None:
        self._now(self._finish_write(task_id, status, output, error))

    async def acreate_task(
        self, task_id: str, agent: dict[str, Any], goal: str, prompt_ids: list[int]
    ) -> None:
        """``create_task``, committed by the writer thread (the loop is not blocked)."""
        await self.writer.submit(self._create_write(task_id, agent, goal, prompt_ids))

    async def aappend(self, task_id: str, payload: Payload) -> int:
        """``append``, committed by the writer thread: returns once the step is on disk."""
        return int(await self.writer.submit(self._append_write(task_id, payload)))

    async def afinish(
        self, task_id: str, status: str, output: str | None = None, error: str | None = None
    ) -> None:
        """``finish``, committed by the writer thread."""
        await self.writer.submit(self._finish_write(task_id, status, output, error))

    # -- reads (their own connection: never behind a commit) -------------------------

    def get(self, task_id: str) -> TaskRecord:
        with self._read_lock:
            return self._get(task_id)

    def _get(self, task_id: str) -> TaskRecord:
        row = self._reader.execute(
            "SELECT task_id, agent, goal, prompt_ids, status, output, error, created_at, "
            "updated_at FROM tasks WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            raise JournalError(f"no task {task_id!r} in {self.path}")
        record = TaskRecord(row[0], json.loads(row[1]), row[2], json.loads(row[3]), *row[4:])
        record.steps = [
            JournalStep(seq, self._payload(task_id, seq, kind, payload), created)
            for seq, kind, payload, created in self._reader.execute(
                "SELECT seq, kind, payload, created_at FROM steps WHERE task_id = ? ORDER BY seq",
                (task_id,),
            )
        ]
        return record

    def _payload(self, task_id: str, seq: int, kind: str, text: str) -> Payload:
        try:
            return PAYLOADS[StepKind(kind)].model_validate_json(text)
        except (ValueError, ValidationError) as exc:  # an unknown kind, or a damaged row
            raise JournalError(
                f"step {seq} of task {task_id} in {self.path} is not a valid {kind!r} step: {exc}"
            ) from None

    def list(
        self, limit: int = 50, *, status: str | None = None, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """Tasks newest first (``status``: only those in it; ``offset``: skip as many)."""
        with self._read_lock:
            return self._list(limit, status, offset)

    def _list(self, limit: int, status: str | None, offset: int) -> builtins.list[dict[str, Any]]:
        rows = self._reader.execute(
            "SELECT t.task_id, json_extract(t.agent, '$.name'), t.goal, t.status, t.created_at, "
            "t.updated_at, (SELECT COUNT(*) FROM steps s "
            "WHERE s.task_id = t.task_id AND s.kind = 'call') "
            "FROM tasks t WHERE (? IS NULL OR t.status = ?) "
            "ORDER BY t.created_at DESC, t.task_id LIMIT ? OFFSET ?",
            (status, status, limit, offset),
        ).fetchall()
        keys = ("task_id", "agent", "goal", "status", "created_at", "updated_at", "calls")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def unfinished(self) -> builtins.list[str]:
        """The ids of the tasks still ``running`` (a driver that died left them so), oldest
        first: what a restarted service resumes."""
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT task_id FROM tasks WHERE status = 'running' ORDER BY created_at"
            ).fetchall()
        return [r[0] for r in rows]
