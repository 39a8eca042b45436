"""python -m benchmarks.sandbox: exec latency and time-to-ready of the sandbox backends.

Per backend: the latency of a trivial ``python3 -c pass`` and of a shell ``true``
run in one open sandbox (p50/p99 over ``--repeats``), and the time to get a ready
sandbox for a new task (``backend.open``). For Docker, ready is measured twice:
from the pool of pre-started containers (the pool is refilled between samples, as
it would be between task arrivals) and without a pool (a container started for
the task). Targets: bwrap exec p50 < 60 ms; Docker exec into a warm container
p50 < 150 ms; a pooled Docker sandbox ready in < 50 ms.

JSON: {"backends": {"bwrap": {"exec_p50_ms", "exec_p99_ms", "ready_p50_ms", ...},
"docker": {...}}}; a backend that cannot run here is reported with its reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from tools.sandbox import ISOLATING_BACKENDS, SandboxBackend, SandboxUnavailable, create_backend

PYTHON_ARGV = ["python3", "-c", "pass"]
SHELL_ARGV = ["sh", "-c", "true"]
TARGETS_MS = {
    "bwrap": {"exec_p50_ms": 60.0},
    "docker": {"exec_p50_ms": 150.0, "ready_p50_ms": 50.0},
}


def _stats(samples_s: list[float], prefix: str) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000.0
    return {
        f"{prefix}_p50_ms": round(float(np.percentile(ms, 50)), 2),
        f"{prefix}_p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


async def _timed(n: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return samples


async def _exec_latency(backend: SandboxBackend, repeats: int) -> dict[str, float]:
    async with await backend.open("bench-exec") as sandbox:

        async def run(argv: list[str]) -> None:
            result = await sandbox.exec(argv, timeout=30)
            if result.exit_code != 0:
                raise RuntimeError(f"{argv} failed in {backend.name}: {result.text('stderr')}")

        await run(PYTHON_ARGV)  # warm-up: page cache, first exec
        python_s = await _timed(repeats, lambda: run(PYTHON_ARGV))
        shell_s = await _timed(repeats, lambda: run(SHELL_ARGV))
    out = _stats(python_s, "exec")  # the headline figure: a trivial python3 -c
    out.update(_stats(python_s, "python_exec"))
    out.update(_stats(shell_s, "shell_exec"))
    return out


async def _ready_latency(backend: SandboxBackend, repeats: int, label: str) -> list[float]:
    samples = []
    pool = getattr(backend, "pool", None)
    for i in range(repeats):
        if pool is not None:
            await asyncio.to_thread(pool.wait_full, 120.0)
        t0 = time.perf_counter()
        sandbox = await backend.open(f"bench-{label}-{i}")
        samples.append(time.perf_counter() - t0)
        await sandbox.close()
    return samples


async def bench_backend(name: str, repeats: int, ready_repeats: int) -> dict[str, Any]:
    try:
        backend = await asyncio.to_thread(create_backend, name)
    except SandboxUnavailable as exc:
        return {"unavailable": str(exc)}
    try:
        out: dict[str, Any] = await _exec_latency(backend, repeats)
        ready = await _ready_latency(backend, ready_repeats, "ready")
        out.update(_stats(ready, "ready"))
    finally:
        await backend.close()
    if name == "docker":
        out["ready_pooled"] = True
        unpooled = await asyncio.to_thread(create_backend, name, pool_size=0)
        try:
            cold = await _ready_latency(unpooled, ready_repeats, "cold")
        finally:
            await unpooled.close()
        out.update(_stats(cold, "ready_unpooled"))
    out["targets_ms"] = TARGETS_MS.get(name, {})
    out["meets_targets"] = all(out[k] < v for k, v in out["targets_ms"].items())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sandbox",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=list(ISOLATING_BACKENDS),
        choices=ISOLATING_BACKENDS,
        help="backends to measure (default: all isolating backends)",
    )
    parser.add_argument("--repeats", type=int, default=50, help="execs per measurement")
    parser.add_argument("--ready-repeats", type=int, default=10, help="sandboxes opened per case")
    args = parser.parse_args(argv)
    if args.repeats < 2 or args.ready_repeats < 1:
        parser.error("--repeats must be >= 2 and --ready-repeats >= 1")

    result: dict[str, Any] = {"machine": platform.machine(), "backends": {}}
    for name in args.backends:
        print(f"[sandbox] measuring {name} ...", file=sys.stderr)
        measured = asyncio.run(bench_backend(name, args.repeats, args.ready_repeats))
        result["backends"][name] = measured
        print(f"[sandbox] {name}: {json.dumps(measured)}", file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
