"""The Ray path's per-call overhead at light load: one call at a time, as a driver makes it.

A replica (the tiny model, CPU) answers ``--calls`` calls one after another, each
the first call of a task of the service benchmark's agent (its first prompt for a
new goal, its reply grammar, 32 new tokens). Each call is timed twice over:

- ``round_trip``: the driver's own path (:func:`executor.loop.driver.generate_unless_lost`:
  the request built, the call raced against the replica's death, the result back);
- ``engine``: the engine's time inside the actor (``GenerateResult.latency_s``).

``overhead`` = round trip - engine: Ray's transport, the request's (de)serialisation,
the actor's validation and the event loops' hops. Reported (JSON): p50/p90 of each.

    python -m benchmarks.call_overhead --json out/call_overhead.json     # ~2 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else 0.0


async def measure(pool: Any, calls: int) -> dict[str, Any]:
    from benchmarks.service import load
    from executor.dispatch import Dispatcher
    from executor.fleet.generation import GenerateRequest
    from executor.fleet.registry import ReplicaRegistry
    from executor.loop.chat_format import ChatFormat
    from executor.loop.driver import first_prompt, generate_unless_lost
    from executor.loop.reply import reply_schema
    from executor.models import resolve
    from executor.sampling import SamplingParams
    from scheduler import SchedulerCore

    chat = ChatFormat.load(resolve("tiny"))
    (handle,) = list(pool)
    replicas = ReplicaRegistry()
    replicas.add(handle)
    dispatcher = Dispatcher(SchedulerCore())
    dispatcher.replica_joined(handle.replica_id, handle.context_tokens)
    sampling = SamplingParams.model_validate(
        {
            **load.sampling.model_dump(exclude_none=True),
            "json_schema": json.dumps(reply_schema(load, "required")),
        }
    )
    trips: list[float] = []
    engine: list[float] = []
    sizes: list[int] = []
    for i in range(calls + 3):  # the first 3 warm the engine up: not counted
        ids = first_prompt(load, f"Task light-{i}: wait for the systems, then answer.", chat)
        started = time.perf_counter()
        request = GenerateRequest(
            input_ids=ids, sampling=sampling, rid=f"overhead-{i}", session_id=f"t{i}"
        )
        result = await generate_unless_lost(replicas, dispatcher, handle.replica_id, request)
        trip = time.perf_counter() - started
        if i >= 3:
            trips.append(trip)
            engine.append(result.latency_s)
            sizes.append(len(pickle.dumps(request)))
    over = [t - e for t, e in zip(trips, engine, strict=True)]
    return {
        "calls": calls,
        "prompt_tokens": len(ids),
        "request_bytes_p50": int(quantile([float(s) for s in sizes], 0.5)),
        "round_trip_p50_s": quantile(trips, 0.5),
        "round_trip_p90_s": quantile(trips, 0.9),
        "engine_p50_s": quantile(engine, 0.5),
        "overhead_p50_s": quantile(over, 0.5),
        "overhead_p90_s": quantile(over, 0.9),
        "overhead_mean_s": round(sum(over) / len(over), 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.call_overhead")
    p.add_argument("--calls", type=int, default=40, help="calls timed (40)")
    p.add_argument("--json", type=Path, default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error("--calls must be at least 1")
    from executor.fleet.config import ReplicaConfig
    from executor.fleet.pool import ReplicaPool

    console = Console(stderr=True)
    config = ReplicaConfig(model="tiny", max_total_tokens=16384, num_cpus=0.5, cpu_threads=1)
    with ReplicaPool(replicas=1, config=config, progress=True) as pool:
        report = asyncio.run(measure(pool, args.calls))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    console.print(
        f"round trip p50 {report['round_trip_p50_s'] * 1000:.1f} ms, engine p50 "
        f"{report['engine_p50_s'] * 1000:.1f} ms, overhead p50 "
        f"{report['overhead_p50_s'] * 1000:.1f} ms (p90 {report['overhead_p90_s'] * 1000:.1f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
