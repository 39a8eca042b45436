"""File access confined to a workspace directory, symlinks included.

Paths are resolved by the kernel with ``openat2(RESOLVE_BENEATH |
RESOLVE_NO_MAGICLINKS)`` relative to the workspace: ``..`` above it, an
absolute path, or a symlink whose target lies outside it fails (EXDEV) in
the same system call that opens the file, so no check-then-use race exists.
Symlinks that stay inside are followed. Where openat2 is missing (Linux <
5.6) the fallback resolves with ``realpath`` and opens with ``O_NOFOLLOW``.

:func:`open_file` is how the file tools open what the model names: with
``O_NONBLOCK`` (a FIFO the sandbox made never blocks the open) and then
refused unless ``fstat`` says it is a regular file or a directory (a FIFO, a
socket or a device node is not read or written, whatever a symlink says).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

from tools.result import ToolError

SYS_OPENAT2 = 437  # same number on x86-64 and arm64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
_libc = ctypes.CDLL(None, use_errno=True)
_have_openat2: bool | None = None


def relative(path: str, workdir: str) -> str:
    """``path`` as the model wrote it (relative, or absolute under ``workdir``) -> relative."""
    if "\0" in path:
        raise ToolError("path contains a NUL character")
    if posixpath.isabs(path):
        norm = posixpath.normpath(path)
        wd = posixpath.normpath(workdir)
        if norm != wd and not norm.startswith(wd.rstrip("/") + "/"):
            raise ToolError(f"path {path!r} is outside the workspace ({workdir})")
        path = posixpath.relpath(norm, wd)
    return path or "."


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    if not (flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE):
        mode = 0  # openat2 insists
    how = struct.pack("QQQ", flags | os.O_CLOEXEC, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    buf = ctypes.create_string_buffer(how)
    fd = _libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(path), buf, len(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _fallback(root: Path, path: str, flags: int, mode: int) -> int:
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, path))
    if real != real_root and not real.startswith(real_root + os.sep):
        raise OSError(errno.EXDEV, "escapes the workspace", path)
    return os.open(real, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def open_beneath(root: Path, path: str, flags: int, mode: int = 0o644) -> int:
    """An fd for ``root/path`` that cannot be outside ``root``; OSError otherwise."""
    global _have_openat2
    if _have_openat2 is not False:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = _openat2(root_fd, path, flags, mode)
            _have_openat2 = True
            return fd
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _have_openat2 = False
        finally:
            os.close(root_fd)
    return _fallback(root, path, flags, mode)


def explain(exc: OSError, path: str) -> ToolError:
    """An OSError from the functions here, as a message for the model."""
    reasons = {
        errno.EXDEV: "it leads outside the workspace (via '..', an absolute path or a symlink)",
        errno.ELOOP: "it goes through a symlink that cannot be followed",
        errno.ENOENT: "no such file or directory",
        errno.ENOTDIR: "a part of it is not a directory",
        errno.EISDIR: "it is a directory",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOSPC: "no space left (the workspace is full: its disk quota is reached)",
        errno.EDQUOT: "the workspace is full: its disk quota is reached",
        errno.ENXIO: "it is a FIFO or a socket, not a regular file",
    }
    reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return ToolError(f"cannot access {path!r}: {reason}")


def makedirs_beneath(root: Path, path: str, owner: tuple[int, int] | None) -> None:
    """``mkdir -p root/path`` where every existing part must resolve beneath ``root``."""
    parts = [p for p in Path(path).parts if p not in ("", ".")]
    done = ""
    for part in parts:
        parent_fd = open_beneath(root, done or ".", os.O_PATH | os.O_DIRECTORY)
        try:
            try:
                os.mkdir(part, 0o755, dir_fd=parent_fd)
                if owner is not None and owner != (os.getuid(), os.getgid()):
                    os.chown(part, *owner, dir_fd=parent_fd, follow_symlinks=False)
            except FileExistsError:
                pass
        finally:
            os.close(parent_fd)
        done = posixpath.join(done, part) if done else part
        # what exists (a directory, or a symlink to one) must still be beneath root
        os.close(open_beneath(root, done, os.O_PATH | os.O_DIRECTORY))


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"  # pragma: no cover - every other kind is listed


@contextlib.contextmanager
def open_file(root: Path, path: str, flags: int, mode: int = 0o644) -> Iterator[int]:
    """``root/path`` opened for the file tools (beneath ``root``, as :func:`open_beneath`).
    The open cannot block (``O_NONBLOCK``, no controlling tty), and anything but a
    regular file or a directory is refused before a byte is read or written."""
    try:
        fd = open_beneath(root, path, flags | os.O_NONBLOCK | os.O_NOCTTY, mode)
    except PermissionError:
        _refuse_special(root, path)  # (a device on a nodev file system: EACCES)
        raise
    try:
        _refuse_special(root, path, fd)
        os.set_blocking(fd, True)
        yield fd
    finally:
        os.close(fd)


def _refuse_special(root: Path, path: str, fd: int | None = None) -> None:
    """Raise ToolError if ``fd`` (or ``root/path``, looked at through an O_PATH
    descriptor, which opens nothing) is neither a regular file nor a directory."""
    if fd is None:
        try:
            probe = open_beneath(root, path, os.O_PATH | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            st_mode = os.fstat(probe).st_mode
        finally:
            os.close(probe)
    else:
        st_mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(st_mode) or stat.S_ISDIR(st_mode) or stat.S_ISLNK(st_mode)):
        raise ToolError(
            f"{path!r} is {_kind(st_mode)}: only regular files and directories can be "
            "read or written"
        )
