"""A disk quota per workspace: its own size-capped file system.

Without one, a workspace is a directory on the host's root file system, and
one command can fill the whole disk in about a second (the host, the Docker
daemon and every other task with it). With one, the workspace is a sparse ext4
image of ``Limits.disk_bytes`` in the workspace's root-only base directory,
loop-mounted at the workspace (``nosuid,nodev``): a command that fills it gets
ENOSPC, and the host's free space moves by at most the image's size. It costs
~35 ms per sandbox (mkfs and mount of a sparse image; no journal, no inode
table zeroing) and no memory (a tmpfs of the same size would hold its data in
RAM, charged to whichever memory group wrote it).

Loop mounts need root. Without root (or without ``mkfs.ext4``), workspaces are
not capped: :func:`unavailable` says why, once, in the log.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE = "disk.img"
MIN_BYTES = 4 * 1024 * 1024  # ext4 needs a few MiB of its own
MKFS_TIMEOUT_S = 30.0


class QuotaError(OSError):
    """The capped file system could not be made or mounted."""


@functools.cache
def unavailable() -> str | None:
    """Why workspaces cannot be capped here, or None when they can (logged once)."""
    reason = None
    if os.geteuid() != 0:
        reason = "loop mounts need root"
    elif shutil.which("mkfs.ext4") is None or shutil.which("mount") is None:
        reason = "mkfs.ext4 (e2fsprogs) or mount (util-linux) is missing"
    elif not Path("/dev/loop-control").exists():
        reason = "no loop devices (/dev/loop-control)"
    if reason:
        log.warning("workspace disk quotas are off: %s; a command can fill the host's disk", reason)
    return reason


def cap(base: Path, target: Path, size: int, owner: tuple[int, int]) -> None:
    """Mount a fresh ext4 file system of ``size`` bytes at ``target``, owned by ``owner``
    (mode 0700, empty). The image lives in ``base``. Raises QuotaError."""
    if size < MIN_BYTES:
        raise QuotaError(
            f"a workspace disk quota below {MIN_BYTES} bytes cannot hold a file system"
        )
    image = base / IMAGE
    with open(image, "xb") as fh:
        fh.truncate(size)  # sparse: the host's disk is used only as the workspace fills
    uid, gid = owner
    _run(
        "mkfs.ext4",
        "-q",
        "-F",
        "-m",
        "0",
        "-O",
        "^has_journal",
        "-E",
        f"lazy_itable_init=1,nodiscard,root_owner={uid}:{gid}",
        str(image),
    )
    _run("mount", "-o", "loop,nosuid,nodev,noatime,noinit_itable", str(image), str(target))
    try:
        os.rmdir(target / "lost+found")
        os.chmod(target, 0o700)
    except OSError as exc:
        release(base)
        raise QuotaError(f"cannot prepare the workspace file system: {exc}") from exc


def release(base: Path) -> None:
    """Unmount every file system mounted at or under ``base`` (deepest first; lazily if
    still busy). Never raises: what stays mounted is logged and left to the next sweep."""
    for point in sorted(mounts_under(base), key=lambda p: len(p.parts), reverse=True):
        try:
            _run("umount", str(point))
        except QuotaError:
            try:
                _run("umount", "-l", str(point))
            except QuotaError as exc:
                log.warning("cannot unmount %s: %s", point, exc)


def mounts_under(base: Path) -> list[Path]:
    """Mount points at or under ``base``, from this process's mount table."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    top = os.path.realpath(base)
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == top or point.startswith(top + "/"):
            points.append(Path(point))
    return points


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _run(*argv: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=MKFS_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QuotaError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        raise QuotaError(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()[:300]}")
