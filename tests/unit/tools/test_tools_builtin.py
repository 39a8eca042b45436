"""The built-in tools inside a task's sandbox, on every isolating backend."""

from __future__ import annotations

import os

from sandbox_helpers import run

from tools import BUILTIN_TOOLS, Toolbox, ToolContext
from tools.sandbox import SandboxBackend

pytest_plugins = ["sandbox_fixtures"]  # fixtures: backend, docker_host, loopback_server...

BOX = Toolbox(BUILTIN_TOOLS)


def calls(backend: SandboxBackend, *steps: tuple[str, dict], **ctx_kw: object) -> list:
    async def go() -> list:
        async with await backend.open("tools") as sb:
            ctx = ToolContext(sandbox=sb, **ctx_kw)  # type: ignore[arg-type]
            return [await BOX.call(name, args, ctx) for name, args in steps]

    return run(go())


def test_builtin_specs_are_prompt_ready() -> None:
    assert BOX.names == ["shell", "python", "web_fetch", "read_file", "write_file", "list_files"]
    for spec in BOX.specs():
        assert spec["description"] and spec["parameters"]["type"] == "object"


def test_shell_and_python(backend: SandboxBackend) -> None:
    sh, py, err, fail = calls(
        backend,
        ("shell", {"command": "echo hello; echo oops >&2; pwd; id -u"}),
        ("python", {"code": "import math\nx = 6\nmath.factorial(x)"}),
        ("python", {"code": "def f():\n    raise ValueError('bad value')\nf()"}),
        ("shell", {"command": "exit 7"}),
    )
    assert sh.ok
    assert sh.text.startswith("hello\n[stderr]\noops") or "hello" in sh.text
    assert "/workspace" in sh.text and "\n65534" in sh.text + "\n"
    assert sh.data["exit_code"] == 0
    assert py.ok and py.text == "720"
    assert (
        not err.ok and "ValueError: bad value" in err.text and 'File "<code>", line 2' in err.text
    )
    assert "<string>" not in err.text  # the tool's own bootstrap is not shown
    assert not fail.ok and fail.text == "[exit code 7]" and fail.data["exit_code"] == 7


def test_workspace_persists_across_calls_and_file_tools_share_it(backend: SandboxBackend) -> None:
    results = calls(
        backend,
        ("write_file", {"path": "notes/todo.txt", "content": "one\ntwo\nthree\n"}),
        ("shell", {"command": "cat notes/todo.txt && echo four >> notes/todo.txt && mkdir out"}),
        ("python", {"code": "open('out/data.txt', 'w').write('42')"}),
        ("read_file", {"path": "notes/todo.txt", "start_line": 2, "max_lines": 2}),
        ("read_file", {"path": "/workspace/out/data.txt"}),
        ("list_files", {"recursive": True}),
        ("write_file", {"path": "notes/todo.txt", "content": "five\n", "append": True}),
        ("shell", {"command": "cat notes/todo.txt; touch notes/todo.txt && echo writable"}),
    )
    assert all(r.ok for r in results), [r.text for r in results if not r.ok]
    assert results[1].text == "one\ntwo\nthree"
    assert results[3].text.startswith("two\nthree\n") and "[lines 2-3 of 4]" in results[3].text
    assert results[4].text == "42"
    assert results[5].text.splitlines() == [
        "notes/",
        "notes/todo.txt  (19 bytes)",
        "out/",
        "out/data.txt  (2 bytes)",
    ]
    assert results[7].text == "one\ntwo\nthree\nfour\nfive\nwritable"


def test_file_tools_refuse_paths_outside(backend: SandboxBackend) -> None:
    results = calls(
        backend,
        ("read_file", {"path": "/etc/passwd"}),
        ("read_file", {"path": "../../../etc/passwd"}),
        ("write_file", {"path": "/tmp/x", "content": "x"}),
        ("list_files", {"path": ".."}),
        ("read_file", {"path": "missing.txt"}),
    )
    assert all(not r.ok for r in results)
    assert "outside the workspace (/workspace)" in results[0].text
    assert "leads outside the workspace" in results[1].text
    assert "outside the workspace" in results[2].text and not os.path.exists("/tmp/x-never")
    assert "leads outside the workspace" in results[3].text
    assert "no such file or directory" in results[4].text


def test_timeouts_and_truncation_are_reported(backend: SandboxBackend) -> None:
    slow, loud = calls(
        backend,
        ("shell", {"command": "sleep 30", "timeout_s": 1}),
        ("python", {"code": "print('x' * 100_000)"}),
        max_output_chars=2000,
    )
    assert not slow.ok and slow.data["timed_out"]
    assert "timed out after 1 s" in slow.text
    assert loud.ok and loud.data["output_truncated"] and len(loud.text) < 2200
    assert "characters truncated" in loud.text
