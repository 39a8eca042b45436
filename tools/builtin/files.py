"""``read_file``, ``write_file``, ``list_files``: the task's workspace, and nothing else.

They run on the host against the workspace directory, through
:mod:`tools.confine`: no path (``..``, absolute, or via a symlink) reaches
outside it, and nothing but a regular file or a directory is opened for
reading or writing (a FIFO, socket or device the sandbox made is refused
without blocking). Files they create belong to the sandbox's user. The host
side runs on a worker thread with a deadline, so even a file system that hangs
cannot stop the executor's event loop (and every other task with it).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from typing import Annotated, TypeVar

from pydantic import Field

from tools.confine import explain, makedirs_beneath, open_beneath, open_file, relative
from tools.context import ToolContext
from tools.declare import tool
from tools.result import ToolError, ToolResult

MAX_READ_BYTES = 4 * 1024 * 1024
MAX_WRITE_CHARS = 10 * 1024 * 1024
MAX_LIST_ENTRIES = 2000
#: The host-side work of one file tool call; past it the call fails (its thread is left
#: to finish on its own: a blocked system call cannot be interrupted).
HOST_DEADLINE_S = 30.0

T = TypeVar("T")


async def _off_loop(work: Callable[[], T], path: str) -> T:
    try:
        return await asyncio.wait_for(asyncio.to_thread(work), HOST_DEADLINE_S)
    except TimeoutError:
        raise ToolError(
            f"{path!r}: the file system did not answer in {HOST_DEADLINE_S:g} s"
        ) from None


@tool
async def read_file(
    ctx: ToolContext,
    path: str,
    start_line: Annotated[int, Field(ge=1)] = 1,
    max_lines: Annotated[int | None, Field(ge=1)] = None,
) -> ToolResult:
    """Read a text file from the task's workspace.

    Args:
        path: relative to the workspace (or absolute under it)
        start_line: first line to show (1-based)
        max_lines: how many lines to show (default: all, up to the output limit)
    """
    sandbox = ctx.require_sandbox()
    rel = relative(path, sandbox.workdir)

    def read() -> tuple[int, bytes]:
        try:
            with open_file(sandbox.workspace, rel, os.O_RDONLY) as fd:
                if stat.S_ISDIR(os.fstat(fd).st_mode):
                    raise ToolError(f"{path!r} is a directory (use list_files)")
                return os.fstat(fd).st_size, os.read(fd, MAX_READ_BYTES + 1)
        except OSError as exc:
            raise explain(exc, path) from None

    size, data = await _off_loop(read, path)
    if b"\0" in data[:8192]:
        return ToolResult(
            text=f"[{path}: binary file, {size} bytes, not shown]",
            data={"bytes": size, "binary": True},
        )
    partial = len(data) > MAX_READ_BYTES
    lines = data[:MAX_READ_BYTES].decode("utf-8", errors="replace").splitlines(keepends=True)
    end = len(lines) if max_lines is None else start_line - 1 + max_lines
    shown = "".join(lines[start_line - 1 : end])
    notes = []
    if start_line > 1 or end < len(lines):
        notes.append(f"[lines {start_line}-{min(end, len(lines))} of {len(lines)}]")
    if partial:
        notes.append(f"[only the first {MAX_READ_BYTES} of {size} bytes were read]")
    text = shown + ("\n" + "\n".join(notes) if notes else "")
    return ToolResult(text=text or "(empty file)", data={"bytes": size, "lines": len(lines)})


@tool
async def write_file(
    ctx: ToolContext,
    path: str,
    content: Annotated[str, Field(max_length=MAX_WRITE_CHARS)],
    append: bool = False,
) -> ToolResult:
    """Write a text file in the task's workspace, creating its directories.

    Args:
        path: relative to the workspace (or absolute under it)
        content: the text to write
        append: add to the end of the file instead of replacing it
    """
    sandbox = ctx.require_sandbox()
    rel = relative(path, sandbox.workdir)
    if rel in (".", ""):
        raise ToolError("write_file needs a file name")
    # no O_TRUNC at open: a file is emptied only once it is known to be a regular one
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
    data = content.encode("utf-8")

    def write() -> None:
        try:
            parent = os.path.dirname(rel)
            if parent:
                makedirs_beneath(sandbox.workspace, parent, sandbox.owner)
            with open_file(sandbox.workspace, rel, flags, 0o644) as fd:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ToolError(f"{path!r} is not a regular file")
                if not append:
                    os.ftruncate(fd, 0)
                if sandbox.owner is not None and os.fstat(fd).st_uid != sandbox.owner[0]:
                    os.fchown(fd, *sandbox.owner)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError as exc:
            raise explain(exc, path) from None

    await _off_loop(write, path)
    verb = "appended" if append else "wrote"
    return ToolResult(
        text=f"{verb} {len(data)} bytes to {rel}", data={"bytes": len(data), "path": rel}
    )


@tool
async def list_files(ctx: ToolContext, path: str = ".", recursive: bool = False) -> ToolResult:
    """List a directory of the task's workspace (symlinks are shown, not followed).

    Args:
        path: relative to the workspace (or absolute under it)
        recursive: include subdirectories
    """
    sandbox = ctx.require_sandbox()
    rel = relative(path, sandbox.workdir)
    lines: list[str] = []

    def walk() -> bool:
        try:
            fd = open_beneath(sandbox.workspace, rel, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise explain(exc, path) from None
        return _walk(fd, "", recursive, lines)

    complete = await _off_loop(walk, path)
    if not complete:
        lines.append(f"[listing stopped at {MAX_LIST_ENTRIES} entries]")
    return ToolResult(text="\n".join(lines) or "(empty directory)", data={"entries": len(lines)})


def _walk(fd: int, prefix: str, recursive: bool, lines: list[str]) -> bool:
    """List the directory open at ``fd`` (closes it). False when the entry cap was hit."""
    try:
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if len(lines) >= MAX_LIST_ENTRIES:
                return False
            name = prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.name, dir_fd=fd)
                lines.append(f"{name} -> {target}")
            elif stat.S_ISDIR(st.st_mode):
                lines.append(f"{name}/")
                if recursive:
                    try:
                        sub = os.open(
                            entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd
                        )
                    except OSError:
                        continue
                    if not _walk(sub, name + "/", recursive, lines):
                        return False
            else:
                lines.append(f"{name}  ({st.st_size} bytes)")
    finally:
        os.close(fd)
    return True
