"""Journal commits and chat-template tokenisation off the event loop, no engine.

A slow commit (an fsync under load) or a slow template render must not stall the
event loop that serves every task: the loop's lag is measured while one runs. The
writer thread commits waiting writes together, an error reaches only its writer,
and reads never wait for a commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.loop.chat_format import ChatFormat
from executor.loop.journal import Journal, JournalError
from executor.loop.steps import ObservationPayload

SLOW_S = 0.4


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def slow_appends(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step's write takes SLOW_S (as a commit on a busy disk would)."""
    original = Journal._append_write

    def slow(task_id: str, payload: Any) -> Callable[[sqlite3.Connection], int]:
        write = original(task_id, payload)

        def run(db: sqlite3.Connection) -> int:
            time.sleep(SLOW_S)
            return write(db)

        return run

    monkeypatch.setattr(Journal, "_append_write", staticmethod(slow))


async def max_lag(work: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(the loop's worst lag, seconds ``work`` took) while ``work`` runs."""
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t0 - 0.01)

    tick = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.02)
    t0 = time.perf_counter()
    await work()
    took = time.perf_counter() - t0
    stop.set()
    await tick
    return max(lags), took


def step(text: str) -> ObservationPayload:
    return ObservationPayload(ids=[1, 2, 3], text=text)


def test_a_slow_commit_does_not_block_the_loop(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal.create_task("t", {"name": "a"}, "goal", [1])
    slow_appends(journal, monkeypatch)

    async def off_loop() -> None:
        assert await journal.aappend("t", step("one")) == 0

    async def on_loop() -> None:  # the old way, for contrast: the loop stalls
        journal.append("t", step("two"))

    lag, took = asyncio.run(max_lag(off_loop))
    assert took >= SLOW_S and lag < SLOW_S / 4
    lag, took = asyncio.run(max_lag(on_loop))
    assert lag >= SLOW_S * 0.8
    assert [s.seq for s in journal.get("t").steps] == [0, 1]


def test_waiting_writes_are_committed_together_each_in_order(journal: Journal) -> None:
    tasks = [f"t{i}" for i in range(40)]

    async def go() -> None:
        await asyncio.gather(*(journal.acreate_task(t, {"name": "a"}, "g", [1]) for t in tasks))
        for n in range(3):  # each task's steps one after another, tasks at once
            seqs = await asyncio.gather(*(journal.aappend(t, step(f"{t}-{n}")) for t in tasks))
            assert seqs == [n] * len(tasks)
        await asyncio.gather(*(journal.afinish(t, "succeeded", output="ok") for t in tasks))

    asyncio.run(go())
    assert journal.writer.groups < 4 * len(tasks)  # grouped: far fewer commits than writes
    for t in tasks:
        record = journal.get(t)
        assert record.status == "succeeded"
        assert [s.payload.text for s in record.steps] == [f"{t}-{n}" for n in range(3)]


def test_a_failing_write_fails_only_its_caller(journal: Journal) -> None:
    journal.create_task("taken", {"name": "a"}, "g", [1])

    async def go() -> list[Any]:
        return await asyncio.gather(
            journal.acreate_task("new", {"name": "a"}, "g", [1]),
            journal.acreate_task("taken", {"name": "a"}, "g", [1]),
            journal.aappend("taken", step("x")),
            return_exceptions=True,
        )

    ok, dup, seq = asyncio.run(go())
    assert ok is None and seq == 0
    assert isinstance(dup, JournalError) and "already exists" in str(dup)
    assert journal.get("new").status == "running"


def test_reads_do_not_wait_for_a_commit(journal: Journal) -> None:
    journal.create_task("t", {"name": "a"}, "g", [1])
    holding, release = threading.Event(), threading.Event()

    def long_commit() -> None:  # the writer's lock held, as during a slow fsync
        with journal._lock:
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=long_commit)
    holder.start()
    try:
        assert holding.wait(5)
        t0 = time.perf_counter()
        assert journal.get("t").status == "running"
        assert [r["task_id"] for r in journal.list()] == ["t"]
        assert time.perf_counter() - t0 < 1.0
    finally:
        release.set()
        holder.join()


def test_a_slow_template_render_does_not_block_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from executor.models import resolve

    chat = ChatFormat.load(resolve("tiny"))
    render = chat._render

    def slow(*args: Any) -> str:
        time.sleep(SLOW_S)
        return render(*args)

    monkeypatch.setattr(chat, "_render", slow)
    ids: list[int] = []

    async def work() -> None:
        ids.extend((await chat.aprompt("be brief", "2+2?", []))[1])

    lag, took = asyncio.run(max_lag(work))
    assert took >= SLOW_S and lag < SLOW_S / 4
    assert ids == chat.prompt("be brief", "2+2?", [])[1]
