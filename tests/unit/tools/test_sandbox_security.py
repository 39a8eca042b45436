"""The security suite, run against every isolating backend (bwrap and docker).

Whatever a command does, it cannot reach the network, the host's files or
secrets, another task's workspace, or exhaust the machine; every call ends
within its limit. Behaviour only; the one time bound is the generous
``timed_out`` margin.
"""

from __future__ import annotations

import os
import resource
import secrets
import time
from pathlib import Path

import pytest
from sandbox_helpers import SUITE_LIMITS, LoopbackServer, run

from tools import ToolContext, list_files, read_file, write_file
from tools.sandbox import SandboxBackend

pytest_plugins = ["sandbox_fixtures"]  # fixtures: backend, docker_host, loopback_server...

TIMEOUT_MARGIN_S = 2.0


def sh(backend: SandboxBackend, script: str, **kw):  # noqa: ANN201
    async def go():  # noqa: ANN202
        async with await backend.open("sec") as sb:
            return await sb.exec(["/bin/sh", "-c", script], **kw)

    return run(go())


def test_network_egress_is_blocked(
    backend: SandboxBackend, loopback_server: LoopbackServer
) -> None:
    url = loopback_server.route("/hello", b"reachable")
    code = (
        "import urllib.request, sys\n"
        f"try:\n    urllib.request.urlopen({url!r}, timeout=3)\n"
        "except Exception as e:\n    print('blocked', type(e).__name__); sys.exit(3)\n"
        "print('REACHED')\n"
    )

    async def go():  # noqa: ANN202
        async with await backend.open("net") as sb:
            py = await sb.exec(["python3", "-c", code])
            tcp = await sb.exec(
                [
                    "python3",
                    "-c",
                    f"import socket; socket.create_connection(('127.0.0.1', "
                    f"{loopback_server.port}), timeout=3)",
                ]
            )
            return py, tcp

    py, tcp = run(go())
    assert py.exit_code == 3 and b"blocked" in py.stdout, py
    assert b"REACHED" not in py.stdout
    assert tcp.exit_code != 0
    assert loopback_server.hits == []


def test_writing_outside_the_workspace_fails(backend: SandboxBackend) -> None:
    marker = f"agent-sec-{secrets.token_hex(6)}"
    targets = [
        f"/{marker}",
        f"/etc/{marker}",
        f"/usr/{marker}",
        f"/root/{marker}",
        f"/var/{marker}",
        f"/home/{marker}",
    ]
    script = "; ".join(f"if touch {t} 2>/dev/null; then echo WROTE {t}; fi" for t in targets)
    script += f"; echo private > /tmp/{marker} && echo tmp-ok"
    res = sh(backend, script)
    assert b"WROTE" not in res.stdout, res
    assert b"tmp-ok" in res.stdout  # a private /tmp works...
    assert not Path(f"/tmp/{marker}").exists()  # ...and is not the host's
    for target in targets:
        assert not Path(target).exists()


def test_host_secrets_cannot_be_read(
    backend: SandboxBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = secrets.token_hex(16)
    monkeypatch.setenv("AGENT_EXECUTOR_TEST_SECRET", token)
    secret_file = Path.home() / f".agent-executor-test-secret-{os.getpid()}"
    secret_file.write_text(token)
    try:
        res = sh(
            backend,
            f"cat {secret_file}; ls -la /root; cat /root/*; env; cat /proc/1/environ; "
            "cat /proc/self/environ; cat /proc/*/environ; cat /etc/shadow; echo done",
        )
        shadow = sh(backend, "cat /etc/shadow")
    finally:
        secret_file.unlink()
    assert b"done" in res.stdout
    assert token.encode() not in res.stdout + res.stderr
    assert shadow.exit_code != 0 and shadow.stdout == b""


def test_one_task_cannot_see_another_workspace(backend: SandboxBackend) -> None:
    name = f"agent-sec-{secrets.token_hex(6)}"

    async def go():  # noqa: ANN202
        async with await backend.open("a") as a, await backend.open("b") as b:
            wrote = await a.exec(["/bin/sh", "-c", f"echo secret-of-a > {name}"])
            assert wrote.exit_code == 0
            assert (a.workspace / name).exists()
            look = (
                f"cat {a.workspace}/{name}; ls {a.workspace.parent}; "
                f"ls {b.workspace.parent.parent}; "
                "find / \\( -path /proc -o -path /sys -o -path /usr \\) -prune "
                f"-o -name {name} -print; echo done"
            )
            return await b.exec(["/bin/sh", "-c", look])

    res = run(go())
    assert b"done" in res.stdout
    assert b"secret-of-a" not in res.stdout
    assert name.encode() not in res.stdout


def test_fork_bomb_is_contained(backend: SandboxBackend) -> None:
    counted = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while n < 10000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('blocked after', n, e.errno)\n"
    )

    async def go():  # noqa: ANN202
        async with await backend.open("fork") as sb:
            py = await sb.exec(["python3", "-c", counted], timeout=20)
            bomb = await sb.exec(["/bin/sh", "-c", "b() { b | b & }; b"], timeout=3)
            after = await sb.exec(["/bin/sh", "-c", "echo alive"])
            return py, bomb, after

    py, bomb, after = run(go())
    assert b"blocked after" in py.stdout, py
    assert int(py.stdout.split()[2]) < SUITE_LIMITS.pids
    assert not py.timed_out  # children were killed with the call, not waited for
    assert bomb.exit_code is not None or bomb.timed_out
    assert after.stdout == b"alive\n"  # the sandbox (and the host) still work


def test_memory_bomb_ends_as_oom(backend: SandboxBackend) -> None:
    res = sh(backend, "python3 -c 'x = []\nwhile True: x.append(b\"x\" * 10_000_000)'", timeout=30)
    assert res.oom, res
    assert not res.timed_out
    assert res.exit_code != 0


def test_infinite_loop_times_out(backend: SandboxBackend) -> None:
    limit = 2.0
    t0 = time.monotonic()
    res = sh(backend, "python3 -c 'while True: pass'", timeout=limit)
    elapsed = time.monotonic() - t0
    assert res.timed_out
    assert not res.oom
    assert res.duration_s < limit + TIMEOUT_MARGIN_S
    assert elapsed < limit + TIMEOUT_MARGIN_S + 1.0  # includes opening and closing the sandbox


def test_100mb_of_output_is_truncated_in_bounded_memory(backend: SandboxBackend) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    res = sh(backend, "head -c 100000000 /dev/zero; head -c 100000000 /dev/zero >&2", timeout=60)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert res.truncated
    assert res.stdout_bytes == 100_000_000 and res.stderr_bytes == 100_000_000
    assert len(res.stdout) < SUITE_LIMITS.max_output_bytes + 200
    assert len(res.stderr) < SUITE_LIMITS.max_output_bytes + 200
    assert b"bytes truncated" in res.stdout
    assert grown_mib < 50, f"peak memory grew by {grown_mib:.0f} MiB"


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_background_processes_are_gone_after_the_call(backend: SandboxBackend) -> None:
    secs = f"{secrets.randbelow(90000) + 10000}.5"

    async def go():  # noqa: ANN202
        async with await backend.open("bg") as sb:
            res = await sb.exec(
                [
                    "/bin/sh",
                    "-c",
                    f"(sleep {secs} &); setsid sleep {secs} & "
                    f"nohup sleep {secs} >/dev/null 2>&1 & "
                    "python3 -c 'import os,time\nif os.fork()==0:\n os.setsid()\n "
                    f"time.sleep({secs})' & "
                    "echo started",
                ],
                timeout=8,
            )
            left_during_task = _processes_with(f"{secs}".encode())
            return res, left_during_task

    res, left = run(go())
    assert res.stdout == b"started\n"
    assert not res.timed_out  # the call ended when its command did
    assert left == []
    assert _processes_with(secs.encode()) == []


def test_symlink_out_of_the_workspace_cannot_be_used(
    backend: SandboxBackend, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")

    async def go():  # noqa: ANN202
        async with await backend.open("link") as sb:
            ctx = ToolContext(sandbox=sb)
            links = (
                f"ln -s {outside}/secret.txt s1; ln -s {outside} d1; ln -s / root; ln -s ../.. up"
            )
            made = await sb.exec(["/bin/sh", "-c", links])
            assert made.exit_code == 0, made
            attempts = "cat s1; echo overwritten > s1; echo new > d1/new.txt; echo x > root/tmp/x"
            inside = await sb.exec(["/bin/sh", "-c", attempts])
            results = [
                await read_file.invoke({"path": "s1"}, ctx),
                await read_file.invoke({"path": "d1/secret.txt"}, ctx),
                await read_file.invoke({"path": "up/etc/passwd"}, ctx),
                await write_file.invoke({"path": "s1", "content": "pwned"}, ctx),
                await write_file.invoke({"path": "d1/new.txt", "content": "pwned"}, ctx),
                await write_file.invoke({"path": "d1/sub/new.txt", "content": "pwned"}, ctx),
                await list_files.invoke({"path": "d1"}, ctx),
                await read_file.invoke({"path": f"{outside}/secret.txt"}, ctx),
            ]
            listing = await list_files.invoke({}, ctx)
            return inside, results, listing

    inside, results, listing = run(go())
    assert b"host secret" not in inside.stdout
    for res in results:
        assert not res.ok, res
        assert "host secret" not in res.text
    assert "outside the workspace" in results[0].text
    assert (outside / "secret.txt").read_text() == "host secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert "s1 -> " in listing.text  # shown as a link, not followed
    # closing the sandbox removed the workspace without following the links
    assert (outside / "secret.txt").exists()
