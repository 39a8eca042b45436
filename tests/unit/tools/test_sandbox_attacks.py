"""Attacks a hostile model can make through a tool call, and what holds against them
(each found by trying it through the project's own API):

- special files in the workspace (a FIFO, a symlink to one, a socket, a device
  node) handed to the host-side file tools: refused at once, nothing blocks;
- a directory tree too deep for a recursive walk, unreadable directories and
  read-only files: the sandbox's close removes them, and so does the start-up
  sweep of a dead process's workspace;
- io_uring and modify_ldt (both backends' seccomp filters);
- host paths leaking into the sandbox through bwrap's own environment and
  command line (``/proc/1``) and the mount table (``/proc/self/mountinfo``);
- filling the disk (bytes, preallocation, inodes) past the workspace's quota,
  and the memory behind /dev and /dev/shm;
- the host's file table (every process raising its open-file limit);
- a command swapping a file for a symlink to a host file while the host-side
  file tools use it (a race for the moment between check and use);
- a hard link from the workspace to a host file (which the host-side file tools
  would then write through);
- Docker: tracing, writing into or killing the container's keeper, and a
  container that stops all the same.
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
from tools.sandbox import Sandbox, SandboxBackend, SandboxError
from tools.sandbox.disk import IMAGE, mounts_under
from tools.sandbox.workspace import (
    Workspace,
    owner_tag,
    remove_tree,
    sandbox_root,
    sweep_workspaces,
)

pytest_plugins = ["sandbox_fixtures"]

DEEP = 5000


async def _tool(sb: Sandbox, tool: Any, **arguments: Any) -> Any:
    return await tool.invoke(arguments, ToolContext(sandbox=sb, task_id="attack"))


def test_special_files_are_refused_without_blocking(backend: SandboxBackend) -> None:
    """A FIFO would block an open() on the host forever (and with it every task of the
    executor); a socket, a device, a symlink to any of them: refused at once."""

    async def go() -> dict[str, list[Any]]:
        async with await backend.open("fifo") as sb:
            made = await sb.exec(
                [
                    "python3",
                    "-c",
                    (
                        "import os, socket\n"
                        "os.mkfifo('notes.txt')\n"
                        "os.symlink('notes.txt', 'link.txt')\n"
                        "socket.socket(socket.AF_UNIX).bind('sock')\n"
                    ),
                ]
            )
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
                name,
                result.text,
            )
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


def test_a_symlink_swapped_in_during_file_tool_calls_never_reaches_the_host(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    os.chmod(tmp_path, 0o755)
    # flips until the tool calls are done (with a fixed 5 s, a loaded machine could
    # start the flipping after the calls, and no call met the symlink)
    flip = f"while [ ! -e stop ]; do ln -sfn {secret} f; echo mine > g; mv -f g f; done"

    async def go() -> tuple[list[Any], list[Any]]:
        async with await backend.open("race") as sb:
            seen: list[Any] = []

            async def use() -> None:
                while not os.path.lexists(sb.workspace / "f"):  # the flipping has begun
                    await asyncio.sleep(0.01)
                # the file tools are fast (host side) and a flip is three processes: go
                # on until the race has been met (a refusal), 100 rounds at least
                deadline, i = time.monotonic() + 60, 0
                try:
                    while i < 100 or (all(r.ok for r in seen) and time.monotonic() < deadline):
                        seen.append(await _tool(sb, read_file, path="f"))
                        seen.append(await _tool(sb, write_file, path="f", content=f"host {i}"))
                        i += 1
                finally:
                    (sb.workspace / "stop").touch()

            await asyncio.gather(sb.exec(["/bin/sh", "-c", flip], timeout=120), use())
            # the flipping has stopped: the tools work again on the file it left
            after = [
                await _tool(sb, write_file, path="f", content="calm"),
                await _tool(sb, read_file, path="f"),
            ]
            return seen, after

    seen, after = run(go())
    assert secret.read_text() == "host secret"
    assert not [r for r in seen + after if "host secret" in r.text]
    assert any(not r.ok for r in seen)  # the race was met: calls were refused
    assert all(r.ok for r in after) and "calm" in after[1].text


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


@pytest.mark.slow  # builds and sweeps a tree deeper than PATH_MAX (~10 s)
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


# -- the disk quota ------------------------------------------------------------------

QUOTA = 64 * 1024 * 1024
FILL = (
    'python3 -c "import os\n'
    "os.mkdir('many'); n = 0\n"
    "try:\n"
    "    while n < 100000: open(f'many/{n}', 'w').close(); n += 1\n"
    "except OSError as e: print('inodes', n, e.strerror)\"; "
    "rm -rf many; "
    "dd if=/dev/zero of=big bs=1M count=200 2>&1; "
    "fallocate -l 500M pre 2>&1"
)


def _no_root_for_quotas() -> bool:
    return os.geteuid() != 0


@pytest.mark.skipif(_no_root_for_quotas(), reason="workspace quotas need loop mounts (root)")
def test_a_full_disk_stays_inside_the_quota(backend: SandboxBackend) -> None:
    """Bytes, preallocation and inodes each hit the quota inside the sandbox; the host's
    free space moves by less than the quota, the file tools say the workspace is full,
    and another task's workspace keeps working."""

    async def go() -> tuple[Any, ...]:
        limits = backend.limits.with_(disk_bytes=QUOTA)
        async with await backend.open("fill", limits) as sb, await backend.open("other") as other:
            assert sb.quota_bytes == QUOTA
            free = _host_free()
            filled = await sb.exec(["/bin/sh", "-c", FILL], timeout=60)
            moved = free - _host_free()
            wrote = await _tool(sb, write_file, path="more.txt", content="x" * 1_000_000)
            neighbour = await other.exec(["/bin/sh", "-c", "head -c 8M /dev/zero > f && wc -c f"])
            base = sb.workspace.parent
            assert mounts_under(base) and (base / IMAGE).exists()
        return filled, moved, wrote, neighbour, base

    filled, moved, wrote, neighbour, base = run(go())
    out = filled.text() + filled.text("stderr")
    assert out.count("No space left on device") >= 3, out  # the inodes, dd, fallocate
    assert int(out.split("inodes ")[1].split()[0]) > 1000, out  # (a full table, not full blocks)
    assert moved < QUOTA, moved
    assert not wrote.ok and "disk quota" in wrote.text, wrote
    assert neighbour.stdout.strip() == b"8388608 f", neighbour
    assert not mounts_under(base) and not base.exists()  # unmounted and removed at close


def _host_free() -> int:
    os.sync()
    st = os.statvfs(sandbox_root())
    return st.f_bavail * st.f_frsize


@pytest.mark.skipif(_no_root_for_quotas(), reason="workspace quotas need loop mounts (root)")
def test_the_sweep_unmounts_a_dead_process_s_capped_workspace() -> None:
    ws = Workspace.create("crashed-capped", disk_bytes=QUOTA)
    (ws.path / "data").write_bytes(b"x" * 4096)
    (ws.base / "owner").write_text(owner_tag().rsplit(":", 1)[0] + ":999999999")  # no such pid
    assert mounts_under(ws.base)
    assert ws.sandbox_id in sweep_workspaces()
    assert not mounts_under(ws.base) and not ws.base.exists()


@pytest.mark.skipif(_no_root_for_quotas(), reason="workspace quotas need loop mounts (root)")
def test_a_quota_too_small_for_a_file_system_is_refused_clearly() -> None:
    with pytest.raises(SandboxError, match="disk quota below"):
        Workspace.create("tiny-quota", disk_bytes=1024)
    assert not [p for p in sandbox_root().iterdir() if p.name.startswith("tiny-quota")]


def test_dev_is_read_only_and_dev_shm_is_capped(backend: SandboxBackend) -> None:
    """/dev and /dev/shm are tmpfs: RAM, outside the disk quota. /dev cannot be written,
    /dev/shm holds ``tmp_bytes`` at most."""
    script = (
        "dd if=/dev/zero of=/dev/shm/x bs=1M count=200 2>&1; "
        "echo x > /dev/new 2>&1; echo dev=$?; du -m /dev/shm/x"
    )

    async def go() -> Any:
        async with await backend.open("shm") as sb:
            return await sb.exec(["/bin/sh", "-c", script])

    res = run(go())
    out = res.text()
    assert "No space left on device" in out and "dev=0" not in out, out
    assert int(out.split()[-2]) <= backend.limits.tmp_bytes // 2**20, out


def test_open_files_are_capped_per_process(backend: SandboxBackend) -> None:
    """Every process of a call raising its soft limit to the hard one and opening files
    would otherwise reach the host's file table (fs.file-max) with ~128 processes."""
    script = (
        "import os, resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
        "fds = []\n"
        "try:\n"
        "    while len(fds) < 1_000_000: fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as e: print(hard, len(fds), e.strerror)\n"
    )

    async def go() -> Any:
        async with await backend.open("nofile") as sb:
            return await sb.exec(["python3", "-c", script])

    res = run(go())
    hard, opened, *why = res.text().split()
    assert int(hard) == backend.limits.open_files and int(opened) < int(hard), res
    assert " ".join(why) == "Too many open files", res


@pytest.mark.skipif(_no_root_for_quotas(), reason="workspace quotas need loop mounts (root)")
def test_no_hard_link_reaches_a_host_file(backend: SandboxBackend) -> None:
    """A hard link from the workspace to a host file would let the host-side file tools
    (running as root) write through it: the workspace is its own file system."""

    async def go() -> tuple[Any, Any]:
        async with await backend.open("hardlink") as sb:
            made = await sb.exec(["/bin/sh", "-c", "ln /usr/bin/env env-link"])
            wrote = await _tool(sb, write_file, path="env-link", content="#!/bin/false")
            return made, wrote

    made, wrote = run(go())
    assert made.exit_code != 0 and b"cross-device" in made.stderr, made
    assert wrote.ok  # a new file in the workspace, not the host's /usr/bin/env
    assert Path("/usr/bin/env").read_bytes()[:4] == b"\x7fELF"


# -- both backends: seccomp and host paths -------------------------------------------

IO_URING_SETUP, MODIFY_LDT = 425, 154  # x86-64


def test_io_uring_and_modify_ldt_are_denied(backend: SandboxBackend) -> None:
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
        async with await backend.open("uring") as sb:
            return await sb.exec(["python3", "-c", code])

    res = run(go())
    lines = res.stdout.decode().splitlines()
    assert lines == ["io_uring -1 Operation not permitted", "modify_ldt -1 Operation not permitted"]


def test_the_mount_table_shows_no_sandbox_path(backend: SandboxBackend) -> None:
    """With its own file system the workspace is the root of a mount, and bwrap's /etc
    files are data: no path under the host's sandbox root shows in mountinfo."""

    async def go() -> Any:
        async with await backend.open("mounts") as sb:
            return await sb.exec(["cat", "/proc/self/mountinfo"])

    res = run(go())
    assert res.exit_code == 0 and "/workspace" in res.text(), res
    if os.geteuid() == 0:  # (without a quota the workspace is a bind of a host directory)
        assert str(sandbox_root()) not in res.text(), res.text()


def test_pid_1_shows_no_host_path(bwrap_backend: SandboxBackend) -> None:
    async def go() -> Any:
        async with await bwrap_backend.open("leak") as sb:
            return await sb.exec(
                [
                    "/bin/sh",
                    "-c",
                    (
                        "tr '\\0' '\\n' < /proc/1/cmdline; echo ---; "
                        "tr '\\0' '\\n' < /proc/1/environ; "
                        "echo ---; env"
                    ),
                ]
            )

    res = run(go())
    shown = res.stdout.decode()
    assert res.exit_code == 0 and "bwrap" in shown, res
    host_paths = [str(sandbox_root())] + ([os.getcwd()] if os.getcwd() != "/" else [])
    for host_path in host_paths:
        assert host_path not in shown, (host_path, shown)


# -- docker only: the keeper -----------------------------------------------------------

KEEPER_ATTACK = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
me = os.getpid()
others = [int(p) for p in os.listdir('/proc') if p.isdigit() and int(p) != me]
uids = {open(f'/proc/{p}/status').read().split('Uid:')[1].split()[0] for p in others}
print('keepers', len(others), 'uids', *sorted(uids))
for pid in others:
    r = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
    print('ptrace', r, os.strerror(ctypes.get_errno()))
    buf = ctypes.create_string_buffer(8)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
    remote = (ctypes.c_void_p * 2)(0x400000, 8)
    r = libc.process_vm_writev(pid, local, 1, remote, 1, 0)
    print('vm_write', r, os.strerror(ctypes.get_errno()))
    try:
        os.kill(pid, signal.SIGKILL)
    except PermissionError as e:
        print('kill', e.strerror)
"""


def test_the_keeper_cannot_be_traced_written_or_killed(docker_backend: SandboxBackend) -> None:
    async def go() -> tuple[Any, Any, Any]:
        async with await docker_backend.open("keeper") as sb:
            attack = await sb.exec(["python3", "-c", KEEPER_ATTACK])
            everything = await sb.exec(["/bin/sh", "-c", "kill -9 -1; echo unreachable"])
            after = await sb.exec(["/bin/sh", "-c", "echo still-here"])
            return attack, everything, after

    attack, _everything, after = run(go())
    lines = attack.text().splitlines()
    assert lines[0] == "keepers 2 uids 0", attack  # docker-init and sleep, as the container's root
    assert lines.count("ptrace -1 Operation not permitted") == 2, attack
    assert lines.count("vm_write -1 Operation not permitted") == 2, attack
    assert lines.count("kill Operation not permitted") == 2, attack
    assert after.stdout == b"still-here\n" and after.extra["replaced"] is False, after


def test_a_stopped_container_is_replaced_and_keeps_the_workspace(
    docker_backend: SandboxBackend,
) -> None:
    async def go() -> tuple[Any, Any, str, str]:
        async with await docker_backend.open("stopped") as sb:
            await sb.exec(["/bin/sh", "-c", "echo kept > notes.txt"])
            first = sb.container_id  # type: ignore[attr-defined]
            docker_backend.client.containers.get(first).kill()  # type: ignore[attr-defined]
            again = await sb.exec(["cat", "notes.txt"])
            later = await sb.exec(["/bin/sh", "-c", "echo fine"])
            return again, later, first, sb.container_id  # type: ignore[attr-defined]

    again, later, first, second = run(go())
    assert again.stdout == b"kept\n" and again.extra["replaced"] is True, again
    assert later.stdout == b"fine\n" and later.extra["replaced"] is False, later
    assert first != second
