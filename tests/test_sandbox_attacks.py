"""Attacks a hostile model can make through a tool call, and what holds against them
(each found by trying it through the project's own API):

- special files in the workspace (a FIFO, a symlink to one, a socket, a device
  node) handed to the host-side file tools: refused at once, nothing blocks;
- a directory tree too deep for a recursive walk, unreadable directories and
  read-only files: the sandbox's close removes them, and so does the start-up
  sweep of a dead process's workspace;
- io_uring and modify_ldt (bwrap's seccomp filter);
- host paths leaking into the sandbox through bwrap's own environment and
  command line (``/proc/1``).

Docker's side of io_uring and of the keeper process, and the disk quota, are not
here yet (README, "Sandboxes: what is not guaranteed").
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sandbox_helpers import run

from tools import ToolContext, list_files, read_file, write_file
from tools.builtin import files
from tools.result import ToolError
from tools.sandbox import Sandbox, SandboxBackend
from tools.sandbox.workspace import owner_tag, remove_tree, sandbox_root, sweep_workspaces

pytest_plugins = ["sandbox_fixtures"]

DEEP = 5000


async def _tool(sb: Sandbox, tool: Any, **arguments: Any) -> Any:
    return await tool.invoke(arguments, ToolContext(sandbox=sb, task_id="attack"))


def test_special_files_are_refused_without_blocking(backend: SandboxBackend) -> None:
    """A FIFO would block an open() on the host forever (and with it every task of the
    executor); a socket, a device, a symlink to any of them: refused at once."""

    async def go() -> dict[str, list[Any]]:
        async with await backend.open("fifo") as sb:
            made = await sb.exec(["python3", "-c", (
                "import os, socket\n"
                "os.mkfifo('notes.txt')\n"
                "os.symlink('notes.txt', 'link.txt')\n"
                "socket.socket(socket.AF_UNIX).bind('sock')\n"
            )])  # fmt: skip
            assert made.exit_code == 0, made
            names = ["notes.txt", "link.txt", "sock"]
            if os.geteuid() == 0:  # (a device node: only root can make one, on the host)
                os.mknod(sb.workspace / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
                names.append("null")
            out: dict[str, list[Any]] = {}

            async def attack() -> None:
                for name in names:
                    t0 = time.monotonic()
                    out[name] = [
                        await _tool(sb, read_file, path=name),
                        await _tool(sb, write_file, path=name, content="x"),
                        await _tool(sb, write_file, path=name, content="x", append=True),
                        time.monotonic() - t0,
                    ]

            # another call runs beside the attack (a blocked open would stop both: the
            # event loop itself would be stuck, until the suite's timeout)
            _, other = await asyncio.gather(
                attack(), sb.exec(["/bin/sh", "-c", "sleep 0.2; echo still-working"])
            )
            assert other.stdout.strip() == b"still-working", other
            listing = await _tool(sb, list_files, path=".")
            assert "notes.txt" in listing.text  # listing shows them, opens nothing
            return out

    for name, (*results, seconds) in run(go()).items():
        for result in results:
            assert not result.ok, (name, result)
            assert "FIFO" in result.text or "socket" in result.text or "device" in result.text, (
                name, result.text,
            )  # fmt: skip
        assert seconds < 5, (name, seconds)  # (a blocked open would never return)


def test_write_file_does_not_empty_a_special_file_or_follow_out(backend: SandboxBackend) -> None:
    async def go() -> tuple[Any, Any]:
        async with await backend.open("trunc") as sb:
            (sb.workspace / "keep.txt").write_text("precious")
            ok = await _tool(sb, write_file, path="keep.txt", content="new")
            again = await _tool(sb, read_file, path="keep.txt")
            return ok, again

    ok, again = run(go())
    assert ok.ok and again.text == "new"  # a regular file is still replaced


def test_the_host_side_of_a_file_tool_has_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever hangs in the host's file system hangs a worker thread, not the loop."""
    monkeypatch.setattr(files, "HOST_DEADLINE_S", 0.2)
    hung, finished = threading.Event(), threading.Event()

    def stuck() -> None:  # a system call that does not return (until the test lets it)
        hung.wait(60)
        finished.set()

    async def go() -> None:
        with pytest.raises(ToolError, match="did not answer in 0.2 s"):
            await files._off_loop(stuck, "slow.txt")
        assert not finished.is_set()  # the call gave up; the work is still stuck
        hung.set()

    run(go())


def _deep_tree_script(depth: int) -> str:
    return (
        "import os\n"
        f"for i in range({depth}):\n"
        "    os.mkdir('d'); os.chdir('d')\n"
        "open('bottom.txt', 'w').write('x')\n"
        "os.chdir('/workspace')\n"
        "os.makedirs('locked/inner'); open('locked/inner/f', 'w').write('x')\n"
        "os.chmod('locked/inner/f', 0o444); os.chmod('locked/inner', 0o500)\n"
        "os.chmod('locked', 0o000)\n"
    )


def test_close_removes_a_tree_too_deep_for_a_recursive_walk(backend: SandboxBackend) -> None:
    async def go() -> Path:
        sb = await backend.open("deep")
        made = await sb.exec(["python3", "-c", _deep_tree_script(DEEP)], timeout=60)
        assert made.exit_code == 0, made
        await sb.close()  # (raised RecursionError before, and left the tree behind)
        return sb.workspace

    workspace = run(go())
    assert not workspace.exists()


def test_the_startup_sweep_removes_a_dead_process_s_deep_tree(tmp_path: Path) -> None:
    """The next executor's start must not fail on what a crashed one left behind."""
    base = sandbox_root() / "crashed-task-0000"
    (base / "workspace").mkdir(parents=True)
    (base / "owner").write_text(owner_tag().rsplit(":", 1)[0] + ":999999999")  # no such pid
    fd = os.open(base / "workspace", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEEP):  # deeper than PATH_MAX: only fd-relative calls reach it
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.chmod(fd, 0o000)
    finally:
        os.close(fd)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "marker").write_text("host file")
    os.symlink(outside, base / "workspace" / "escape")
    assert "crashed-task-0000" in sweep_workspaces()
    assert not base.exists()
    assert (outside / "marker").read_text() == "host file"  # a symlink is not followed


def test_remove_tree_never_raises(tmp_path: Path) -> None:
    assert remove_tree(tmp_path / "absent") is True
    f = tmp_path / "file"
    f.write_text("x")
    assert remove_tree(f) is True and not f.exists()


# -- bwrap only: its seccomp filter and what pid 1 shows ------------------------------

IO_URING_SETUP, MODIFY_LDT = 425, 154  # x86-64


def test_io_uring_and_modify_ldt_are_denied(bwrap_backend: SandboxBackend) -> None:
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "params = ctypes.create_string_buffer(120)\n"
        f"r = libc.syscall({IO_URING_SETUP}, 8, params)\n"
        "print('io_uring', r, os.strerror(ctypes.get_errno()))\n"
        "buf = ctypes.create_string_buffer(16)\n"
        f"r = libc.syscall({MODIFY_LDT}, 0, buf, 16)\n"
        "print('modify_ldt', r, os.strerror(ctypes.get_errno()))\n"
    )

    async def go() -> Any:
        async with await bwrap_backend.open("uring") as sb:
            return await sb.exec(["python3", "-c", code])

    res = run(go())
    lines = res.stdout.decode().splitlines()
    assert lines == ["io_uring -1 Operation not permitted", "modify_ldt -1 Operation not permitted"]


def test_pid_1_shows_no_host_path(bwrap_backend: SandboxBackend) -> None:
    async def go() -> Any:
        async with await bwrap_backend.open("leak") as sb:
            return await sb.exec(["/bin/sh", "-c", (
                "tr '\\0' '\\n' < /proc/1/cmdline; echo ---; tr '\\0' '\\n' < /proc/1/environ; "
                "echo ---; env"
            )])  # fmt: skip

    res = run(go())
    shown = res.stdout.decode()
    assert res.exit_code == 0 and "bwrap" in shown, res
    host_paths = [str(sandbox_root())] + ([os.getcwd()] if os.getcwd() != "/" else [])
    for host_path in host_paths:
        assert host_path not in shown, (host_path, shown)
