"""SGLang HTTP servers and SGLang's router on loopback: the deployment a user would
run today without this platform (``sglang.launch_server`` x N behind
``sglang_router.launch_router``, ``--policy cache_aware`` or the sticky
``--policy manual --assignment-mode min_load``; several routers may front the
same servers, one after the other).

Each server gets the same engine settings as the platform's replicas
(:meth:`ReplicaConfig.engine_kwargs`, as command-line flags) and the same
threads. Every process is started in its own session and stopped with its
process group.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from executor.errors import ExecutorError
from executor.fleet.actor import free_port
from executor.fleet.config import ReplicaConfig
from executor.models import resolve


def server_argv(config: ReplicaConfig, port: int) -> list[str]:
    """``launch_server`` flags for the engine kwargs of a replica with ``config``."""
    kwargs = config.engine_kwargs(str(resolve(config.model)), config.resolved_device(), port)
    argv = [sys.executable, "-m", "sglang.launch_server", "--host", "127.0.0.1"]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False and value is not None:
            argv += [flag, str(value)]
    return argv


def _wait_ready(url: str, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ExecutorError(f"{what} exited with {proc.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise ExecutorError(f"{what} not ready after {timeout_s:.0f} s ({url})")


def exit_on_sigterm() -> None:
    """A SIGTERM (``kill``, ``timeout``) unwinds like an exception, so the servers this
    process started are stopped by their ``finally`` blocks instead of left running
    (Python's default SIGTERM ends the process without unwinding)."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@contextlib.contextmanager
def sglang_servers(
    config: ReplicaConfig, servers: int, log_dir: Path, extra: list[str] | None = None
) -> Iterator[dict[str, str]]:
    """Start ``servers`` SGLang HTTP servers (``extra``: more flags); yield their URLs by
    name (``s0``, ``s1``, ...; logs in ``log_dir/server{i}.log``); stop them at exit."""
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, SGLANG_USE_CPU_ENGINE="1", OMP_NUM_THREADS=str(config.threads()))
    if config.resolved_device() != "cpu":
        env.pop("SGLANG_USE_CPU_ENGINE")
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        workers: dict[str, str] = {}
        for i in range(servers):
            port = free_port()
            log = open(log_dir / f"server{i}.log", "wb")  # noqa: SIM115 (the process keeps it)
            procs.append(
                subprocess.Popen(
                    server_argv(config, port) + (extra or []),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            workers[f"s{i}"] = f"http://127.0.0.1:{port}"
        for (name, url), proc in zip(workers.items(), procs, strict=True):
            _wait_ready(f"{url}/health", proc, f"SGLang server {name}", 600)
        yield workers
    finally:
        for proc in reversed(procs):
            _stop(proc)


def router_argv(port: int, workers: dict[str, str], policy: str, extra: list[str]) -> list[str]:
    # its Prometheus exporter gets a free port too: the default (29000) is taken by any
    # other router on the host, and the router then panics at start
    return [
        sys.executable,
        "-m",
        "sglang_router.launch_router",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--policy",
        policy,
        *extra,
        "--worker-startup-check-interval",
        "1",
        "--log-level",
        "warn",
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        str(free_port()),
        "--worker-urls",
        *workers.values(),
    ]


@contextlib.contextmanager
def sglang_router(
    workers: dict[str, str],
    log_dir: Path,
    policy: str = "cache_aware",
    extra: list[str] | None = None,
) -> Iterator[str]:
    """SGLang's router over running ``workers``; yield its URL; stop it at exit.
    ``extra``: more flags (``["--assignment-mode", "min_load"]`` with ``manual``)."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"router-{policy}.log", "wb")  # noqa: SIM115
    router = subprocess.Popen(
        router_argv(port, workers, policy, extra or []),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_workers(url, router, len(workers))
        yield url
    finally:
        _stop(router)


@contextlib.contextmanager
def router_deployment(
    config: ReplicaConfig, servers: int, log_dir: Path, policy: str = "cache_aware"
) -> Iterator[tuple[str, dict[str, str]]]:
    """``servers`` SGLang HTTP servers and the router; yield the router's URL and the
    workers' URLs by name; stop them all at exit."""
    with (
        sglang_servers(config, servers, log_dir) as workers,
        sglang_router(workers, log_dir, policy) as url,
    ):
        yield url, workers


#: the servers log each request's metadata (its rid), so a router's calls can be
#: attributed to the worker that served them: the router's answer does not say
LOG_REQUESTS = ["--log-requests", "--log-requests-level", "0"]
_RID = re.compile(r"""\brid['"]?\s*[:=]\s*['"]([^'"]+)['"]""")


def served_by(log_dir: Path, workers: dict[str, str]) -> dict[str, str]:
    """rid -> worker name, from the servers' request logs (``LOG_REQUESTS``)."""
    out: dict[str, str] = {}
    for i, name in enumerate(workers):
        path = log_dir / f"server{i}.log"
        if path.exists():
            for rid in _RID.findall(path.read_text(errors="replace")):
                out.setdefault(rid, name)
    return out


def _find(data: object, key: str) -> int | None:
    if isinstance(data, dict):
        if key in data and isinstance(data[key], int | float):
            return int(data[key])
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            if (found := _find(item, key)) is not None:
                return found
    return None


async def worker_kv(
    client: httpx.AsyncClient, workers: dict[str, str]
) -> list[tuple[str, int, int]]:
    """Each worker's KV pool: (name, used tokens, capacity) from its ``/v1/loads``
    (a worker that does not answer is left out)."""
    out = []
    for name, url in workers.items():
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = (await client.get(f"{url}/v1/loads", timeout=5)).json()
            used, cap = _find(body, "num_used_tokens"), _find(body, "max_total_num_tokens")
            if used is not None and cap:
                out.append((name, used, cap))
    return out


async def flush_workers(client: httpx.AsyncClient, workers: dict[str, str]) -> None:
    for url in workers.values():
        with contextlib.suppress(httpx.HTTPError):
            await client.post(f"{url}/flush_cache", timeout=30)


def _wait_workers(
    url: str, router: subprocess.Popen[bytes], n: int, timeout_s: float = 120
) -> None:
    """The router answers /health before it knows any worker: wait for all of them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if router.poll() is not None:
            raise ExecutorError(f"the SGLang router exited with {router.returncode}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = httpx.get(f"{url}/workers", timeout=2).json()
            healthy = [w for w in body.get("workers", []) if w.get("is_healthy")]
            if len(healthy) >= n:
                return
        time.sleep(0.5)
    raise ExecutorError(f"the SGLang router did not register {n} workers in {timeout_s:.0f} s")
