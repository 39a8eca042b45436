"""A ``python -m executor serve`` process on the session's replicas (attached by actor
name, so killing the server leaves them serving), for the tests that need a real
server: SIGKILL and restart, the remote SDK, drain, the dashboard in Chromium."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from executor.fleet.actor import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Server:
    """One server process at a time on a fixed port and journal (a restart keeps both)."""

    def __init__(self, pool: Any, root: Path) -> None:
        import ray

        self.journal, self.counter, self.log = root / "j.sqlite", root / "counter", root / "log"
        journal, counter = self.journal, self.counter
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [
            sys.executable,
            "-m",
            "executor",
            "serve",
            "--model",
            "tiny",
            "--port",
            str(self.port),
            "--journal",
            str(journal),
            "--sandbox",
            "bwrap",
            "--agents",
            "service_agents",
            "--ray-address",
            ray.get_runtime_context().gcs_address,
            "--replica-actor",
            pool.actor_name("r0"),
            "--replica-actor",
            pool.actor_name("r1"),
        ]
        self.env = dict(
            os.environ,
            EXECUTOR_TOKEN=TOKEN,
            AGENT_TEST_COUNTER=str(counter),
            PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "support"), str(ROOT)]),
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", headers=AUTH, timeout=5).status_code == 200:
                    return
            time.sleep(0.3)
        raise AssertionError(f"the server was not ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crash or the OOM killer does."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def get(self, path: str, **kw: Any) -> Any:
        return httpx.get(f"{self.url}{path}", headers=AUTH, timeout=30, **kw).json()


def running_server(pool: Any, root: Path) -> Iterator[Server]:
    """A module fixture's body: a started server, stopped at the end."""
    server = Server(pool, root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
