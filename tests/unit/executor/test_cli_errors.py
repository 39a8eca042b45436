"""The CLI on a host that lacks something: one line with the fix, exit code 2, no traceback.

The README's first command once died with a 30-line traceback on a machine without
bubblewrap; these run the real CLI in a subprocess with that thing taken away.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def path_without(tmp_path: Path, *names: str) -> str:
    """A PATH of one folder linking every program of today's PATH except ``names``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = bin_dir / entry.name
            if entry.name in names or link.exists() or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return str(bin_dir)


def run_cli(*args: str, env: dict[str, str] | None = None, code: str | None = None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "executor", *args]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


def test_run_without_bwrap_says_how_to_install_it(tmp_path: Path) -> None:
    proc = run_cli(
        "run",
        "What is 1234 * 5678?",
        "--model",
        "tiny",
        env={"PATH": path_without(tmp_path, "bwrap")},
    )
    assert_one_line(proc, "bubblewrap (bwrap) is not installed", "infra/install.sh")


@pytest.mark.slow  # a CLI subprocess that imports the whole service (~5 s)
def test_serve_without_bwrap_says_how_to_install_it(tmp_path: Path) -> None:
    proc = run_cli("serve", "--model", "tiny", env={"PATH": path_without(tmp_path, "bwrap")})
    assert_one_line(proc, "bubblewrap (bwrap) is not installed")


def test_docker_sandbox_without_an_engine_says_how_to_start_one(tmp_path: Path) -> None:
    sock = tmp_path / "no-docker.sock"
    proc = run_cli(
        "run",
        "x",
        "--model",
        "tiny",
        "--sandbox",
        "docker",
        env={"DOCKER_HOST": f"unix://{sock}"},
    )
    assert_one_line(proc, "no Docker engine answers", "infra/dockerd.sh start")


def test_unknown_model_is_one_line() -> None:
    proc = run_cli("run", "x", "--model", "no-such-model", "--sandbox", "local")
    assert_one_line(proc, "unknown model 'no-such-model'")


def test_a_missing_python_package_is_one_line() -> None:
    # a venv without rich (a half-finished install): python -m executor must not trace back
    code = (
        "import sys, runpy; sys.modules['rich'] = None; "
        "runpy.run_module('executor', run_name='__main__')"
    )
    proc = run_cli(code=code)
    assert_one_line(proc, "'rich' is missing", "infra/install.sh")
