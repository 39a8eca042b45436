"""The service under load: many clients submit at once to ``python -m executor serve``,
against the same tasks run by an in-process ``Executor`` on the same replicas.

``--tasks`` tasks (default 200) are submitted at once by ``--clients`` concurrent
clients (default 20; each its share, one ``POST /v1/tasks`` after another, with an
``Idempotency-Key``) to a service attached to two tiny-model replicas. Every task is
the same: the agent ``load`` below, 3 model calls and 2 runs of a 0.2-s tool. Then
the same tasks run through one in-process ``Executor`` over the same replicas.

Reported (JSON): submit latency p50/p99 (the client's round trip), 429s, task
latency p50/p95 and makespan for both paths, the service's overhead per task
(p50 latency and makespan per task, service minus in-process), the server's memory
(RSS when ready, its peak, at the end), and the journal's check: every accepted task
once, every one ended.

    python -m benchmarks.service --json out/service.json        # ~6 min
    python -m benchmarks.service --tasks 40 --clients 8         # ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from executor.agent import Agent
from tools import tool

TOKEN = "bench-token"
ENDED = ("succeeded", "step_limit", "failed", "cancelled")


@tool
async def wait_briefly(label: Literal["a", "b"]) -> str:
    """Wait for an external system (0.2 s).

    Args:
        label: which system
    """
    await asyncio.sleep(0.2)
    return f"{label} is done"


# The same work for every task: 3 calls, 2 tool runs, then its step limit.
load = Agent(
    name="load",
    model="tiny",
    tools=[wait_briefly],
    tool_choice="required",
    reset_tool_choice=False,
    answer_on_repeat=False,
    max_steps=3,
    max_answer_chars=12,
    sampling={"max_new_tokens": 32},
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.service",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--tasks", type=int, default=200, help="tasks submitted at once (200)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    p.add_argument("--max-active", type=int, default=256, help="the service's --max-active")
    p.add_argument("--json", type=Path, default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.clients < 1 or args.clients > args.tasks:
        p.error("need 1 <= --clients <= --tasks")
    return args


def quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


# -- the service path --------------------------------------------------------------


class ServerProcess:
    def __init__(self, pool: Any, workdir: Path, max_active: int) -> None:
        import ray

        from executor.fleet.actor import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.journal = workdir / "service.sqlite"
        self.log = workdir / "server.log"
        root = Path(__file__).resolve().parents[1]
        cmd = [
            sys.executable,
            "-m",
            "executor",
            "serve",
            "--model",
            "tiny",
            "--port",
            str(self.port),
            "--journal",
            str(self.journal),
            "--agents",
            "benchmarks.service",
            "--max-active",
            str(max_active),
            "--ray-address",
            ray.get_runtime_context().gcs_address,
            *[a for rid in pool.ids for a in ("--replica-actor", pool.actor_name(rid))],
        ]
        path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, EXECUTOR_TOKEN=TOKEN, PYTHONPATH=path)
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout_s: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()[-2000:]}")
            try:
                r = httpx.get(
                    f"{self.url}/readyz", timeout=5, headers={"Authorization": f"Bearer {TOKEN}"}
                )
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the server was not ready in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


class Memory(threading.Thread):
    """The server's RSS, sampled every 0.25 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.start_mb = self.proc.memory_info().rss / 2**20
        self.peak_mb = self.start_mb
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.peak_mb = max(self.peak_mb, self.proc.memory_info().rss / 2**20)

    def end(self) -> float:
        self.stopped.set()
        self.join()
        return float(self.proc.memory_info().rss / 2**20)


def client(url: str, index: int, count: int, out: dict[str, Any], lock: threading.Lock) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        for i in range(count):
            key = f"client{index}-task{i}"
            body = {"agent": "load", "goal": f"Task {key}: wait for the systems, then answer."}
            started = time.monotonic()
            r = http.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
            latency = time.monotonic() - started
            with lock:
                out["submit_s"].append(latency)
                if r.status_code == 202:
                    out["accepted"].append(r.json()["task_id"])
                elif r.status_code == 429:
                    out["rejected"] += 1
                else:
                    out["errors"].append(f"{r.status_code}: {r.text[:200]}")


def wait_all(url: str, ids: set[str], timeout_s: float) -> None:
    """One watcher lists the tasks every second until all have ended."""
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as http:
        while time.monotonic() < deadline:
            page = http.get("/v1/tasks", params={"limit": 500}).json()["tasks"]
            ended = {t["task_id"] for t in page if t["status"] in ENDED}
            if ids <= ended:
                return
            time.sleep(1.0)
    raise RuntimeError(f"{len(ids)} tasks did not all end in {timeout_s:.0f} s")


def service_path(
    pool: Any, args: argparse.Namespace, workdir: Path, console: Console
) -> dict[str, Any]:
    from executor.loop.journal import Journal

    server = ServerProcess(pool, workdir, args.max_active)
    try:
        server.wait_ready()
        memory = Memory(server.proc.pid)
        memory.start()
        out: dict[str, Any] = {"submit_s": [], "accepted": [], "rejected": 0, "errors": []}
        lock = threading.Lock()
        shares = [
            args.tasks // args.clients + (i < args.tasks % args.clients)
            for i in range(args.clients)
        ]
        console.print(f"service: {args.tasks} tasks from {args.clients} clients at once ...")
        started = time.time()
        threads = [
            threading.Thread(target=client, args=(server.url, i, n, out, lock))
            for i, n in enumerate(shares)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted = time.time() - started
        wait_all(server.url, set(out["accepted"]), timeout_s=1800)
        end_mb = memory.end()
    finally:
        server.stop()
    journal = Journal(server.journal)
    rows = journal.list(100_000)
    journal.close()
    by_id = {r["task_id"]: r for r in rows}
    latencies = [by_id[t]["updated_at"] - by_id[t]["created_at"] for t in out["accepted"]]
    makespan = max(by_id[t]["updated_at"] for t in out["accepted"]) - started
    return {
        "accepted": len(out["accepted"]),
        "rejected_429": out["rejected"],
        "errors": out["errors"],
        "submit_p50_s": quantile(out["submit_s"], 0.5),
        "submit_p99_s": quantile(out["submit_s"], 0.99),
        "all_submitted_s": round(submitted, 3),
        "task_p50_s": quantile(latencies, 0.5),
        "task_p95_s": quantile(latencies, 0.95),
        "makespan_s": round(makespan, 3),
        "journal_once": len(rows) == len(by_id) == len(out["accepted"])
        and set(by_id) == set(out["accepted"]),
        "journal_all_ended": all(r["status"] in ENDED for r in rows),
        "statuses": dict(Counter(r["status"] for r in rows)),
        "rss_ready_mb": round(memory.start_mb, 1),
        "rss_peak_mb": round(memory.peak_mb, 1),
        "rss_end_mb": round(end_mb, 1),
    }


# -- the in-process path -----------------------------------------------------------


async def in_process(pool: Any, tasks: int, workdir: Path, console: Console) -> dict[str, Any]:
    from executor import Executor

    console.print(f"in-process: the same {tasks} tasks on one Executor ...")
    workdir.mkdir(parents=True, exist_ok=True)
    ex = Executor("tiny", pool=pool, journal=workdir / "inproc.sqlite")
    await ex.start()
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                ex.run(load, f"Task inproc-{i}: wait for the systems, then answer.")
                for i in range(tasks)
            )
        )
        makespan = time.monotonic() - started
    finally:
        await ex.close()
    latencies = [r.latency_s for r in results]
    return {
        "tasks": tasks,
        "task_p50_s": quantile(latencies, 0.5),
        "task_p95_s": quantile(latencies, 0.95),
        "makespan_s": round(makespan, 3),
        "statuses": dict(Counter(r.status for r in results)),
    }


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from executor.fleet.config import ReplicaConfig
    from executor.fleet.pool import ReplicaPool

    workdir = Path(tempfile.mkdtemp(prefix="aex-service-bench-"))
    config = ReplicaConfig(model="tiny", max_total_tokens=16384, num_cpus=0.5, cpu_threads=1)
    with ReplicaPool(replicas=2, config=config, progress=True) as pool:
        # in-process before and after the service: an order effect (a warmer engine,
        # the machine's other load) shows as a gap between the two
        before = asyncio.run(in_process(pool, args.tasks, workdir / "before", console))
        service = service_path(pool, args, workdir, console)
        after = asyncio.run(in_process(pool, args.tasks, workdir / "after", console))
    inproc = {
        "task_p50_s": round((before["task_p50_s"] + after["task_p50_s"]) / 2, 4),
        "task_p95_s": round((before["task_p95_s"] + after["task_p95_s"]) / 2, 4),
        "makespan_s": round((before["makespan_s"] + after["makespan_s"]) / 2, 3),
        "runs": [before, after],
    }
    n = max(service["accepted"], 1)
    return {
        "tasks": args.tasks,
        "clients": args.clients,
        "service": service,
        "in_process": inproc,
        "overhead": {
            "task_p50_s": round(service["task_p50_s"] - inproc["task_p50_s"], 4),
            "task_p50_ratio": round(service["task_p50_s"] / max(inproc["task_p50_s"], 1e-9), 3),
            "makespan_per_task_s": round((service["makespan_s"] - inproc["makespan_s"]) / n, 4),
        },
        "ok": service["journal_once"]
        and service["journal_all_ended"]
        and not service["errors"]
        and service["accepted"] + service["rejected_429"] == args.tasks,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    report = run(args, console)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        console.print(f"wrote {args.json}")
    s, i, o = report["service"], report["in_process"], report["overhead"]
    console.print(
        f"submit p50 {s['submit_p50_s'] * 1000:.1f} ms, p99 {s['submit_p99_s'] * 1000:.1f} ms; "
        f"{s['accepted']} accepted, {s['rejected_429']} got 429; task p50 {s['task_p50_s']:.2f} s "
        f"(in-process {i['task_p50_s']:.2f} s, overhead {o['task_p50_s']:+.3f} s); "
        f"makespan {s['makespan_s']:.1f} s vs {i['makespan_s']:.1f} s; RSS {s['rss_ready_mb']:.0f}"
        f" -> peak {s['rss_peak_mb']:.0f} MB; journal once: {s['journal_once']}"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
