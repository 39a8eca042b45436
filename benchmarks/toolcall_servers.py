"""The two servers of ``benchmarks/toolcalls.py``, one at a time with all cores: our
gateway (``python -m executor serve``) and SGLang's own OpenAI server
(``python -m sglang.launch_server --tool-call-parser qwen25``), same weights."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class Endpoint:
    """A server's ``/v1`` URL and API key."""

    base: str
    key: str


def _ready(url: str, proc: subprocess.Popen[bytes], what: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        time.sleep(1)
    raise SystemExit(f"{what} not ready after 900 s")


@contextlib.contextmanager
def our_gateway(model: str, max_total_tokens: int, log_dir: Path) -> Iterator[Endpoint]:
    """``python -m executor serve`` with one replica (all cores)."""
    from benchmarks.sglang_http import _stop
    from executor.fleet.actor import free_port

    port, token = free_port(), "toolcalls-bench"
    env = dict(os.environ, EXECUTOR_TOKEN=token, EXECUTOR_GATEWAY_TOOL_CALL_PARSER="qwen25")
    cmd = [sys.executable, "-m", "executor", "serve", "--model", model, "--port", str(port)]
    cmd += ["--max-total-tokens", str(max_total_tokens), "--journal", str(log_dir / "j.db")]
    with (log_dir / "executor.log").open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        auth = {"Authorization": f"Bearer {token}"}
        _ready(f"http://127.0.0.1:{port}/readyz", proc, "executor serve", auth)
        yield Endpoint(f"http://127.0.0.1:{port}/v1", token)
    finally:
        _stop(proc)


@contextlib.contextmanager
def sglang_server(model: str, max_total_tokens: int, log_dir: Path) -> Iterator[Endpoint]:
    """SGLang's own OpenAI server (``--tool-call-parser qwen25``), same engine settings."""
    from benchmarks.sglang_http import sglang_servers
    from executor.fleet.config import ReplicaConfig

    cpus = os.cpu_count() or 1
    cfg = ReplicaConfig(
        model=model, max_total_tokens=max_total_tokens, num_cpus=cpus, cpu_threads=cpus
    )
    extra = ["--tool-call-parser", "qwen25", "--served-model-name", model]
    with sglang_servers(cfg, 1, log_dir, extra) as workers:
        yield Endpoint(f"{workers['s0']}/v1", "-")


SERVERS = {"ours": our_gateway, "sglang": sglang_server}
