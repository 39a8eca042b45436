"""Warm vs cold prefill on a real SGLang replica, proven by SGLang's cached_tokens.

For each history length L, the call measured is call k+1 of a task: L tokens of
history plus ``new`` tokens (a tool result, say), one token generated.

- cold: the radix cache is flushed first, so the whole prompt is prefilled
  (cached_tokens must be 0);
- warm: the history was prefilled by the previous call, so only the new tokens
  are (cached_tokens must be >= L).

Latency is the engine's (measured inside the replica actor); medians over repeats.

    python -m benchmarks.prefill --json out/prefill.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("history lengths must be positive integers")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.prefill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default="tiny", help="registered model name or HF folder (default: tiny)"
    )
    p.add_argument(
        "--history",
        type=_int_list,
        default=[1000, 2000, 4000, 8000],
        help="comma-separated history lengths in tokens (default: 1000,2000,4000,8000)",
    )
    p.add_argument("--new-tokens", type=int, default=200, help="new tokens per call (default: 200)")
    p.add_argument(
        "--repeats", type=int, default=5, help="repeats per length; medians reported (default: 5)"
    )
    p.add_argument("--json", type=Path, default=None, help="write the results JSON here")
    p.add_argument("--plot", type=Path, default=None, help="PNG plot path (default: beside --json)")
    p.add_argument(
        "--cpus",
        type=float,
        default=float(os.cpu_count() or 1),
        help="CPUs the replica declares and uses (default: all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic token ids")
    args = p.parse_args(argv)
    if args.new_tokens < 1 or args.repeats < 1:
        p.error("--new-tokens and --repeats must be >= 1")
    return args


def measure(handle: Any, ids: list[int], history: int, repeats: int) -> dict[str, Any]:
    """Cold and warm timings of ``ids``, whose first ``history`` tokens are the history."""
    one = {"max_new_tokens": 1, "temperature": 0.0}
    cold_s, warm_s, cold_cached, warm_cached = [], [], [], []
    for _ in range(repeats):
        handle.flush_cache()
        cold = handle.generate({"input_ids": ids, "sampling": one})
        cold_s.append(cold.latency_s)
        cold_cached.append(cold.cached_tokens)
        handle.flush_cache()
        handle.generate({"input_ids": ids[:history], "sampling": one})  # call k leaves its KV
        warm = handle.generate({"input_ids": ids, "sampling": one})
        warm_s.append(warm.latency_s)
        warm_cached.append(warm.cached_tokens)
    cold_med, warm_med = statistics.median(cold_s), statistics.median(warm_s)
    return {
        "history_tokens": history,
        "new_tokens": len(ids) - history,
        "cold_s": round(cold_med, 5),
        "warm_s": round(warm_med, 5),
        "ratio": round(cold_med / warm_med, 2),
        "cached_tokens": min(warm_cached),
        "cold_cached_tokens": max(cold_cached),
        "warm_hit": min(warm_cached) >= history and max(cold_cached) == 0,
        "cold_all_s": [round(v, 5) for v in cold_s],
        "warm_all_s": [round(v, 5) for v in warm_s],
    }


def plot(results: list[dict[str, Any]], model: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["history_tokens"] for r in results]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(xs, [r["cold_s"] for r in results], "o-", label="cold (cache flushed)")
    ax.plot(xs, [r["warm_s"] for r in results], "s-", label="warm (history cached)")
    for r in results:
        ax.annotate(
            f"{r['ratio']:.0f}x",
            (r["history_tokens"], r["cold_s"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax.set_xlabel("history tokens (prompt = history + new tokens)")
    ax.set_ylabel("prefill latency, median (s)")
    ax.set_yscale("log")
    ax.set_title(f"Warm vs cold prefill: {model}, +{results[0]['new_tokens']} new tokens")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(stderr=True)
    from executor.errors import ExecutorError
    from executor.fleet.config import ReplicaConfig
    from executor.fleet.pool import ReplicaPool

    longest = max(args.history) + args.new_tokens
    config = ReplicaConfig(
        model=args.model,
        max_total_tokens=2 * longest + 1024,
        context_length=max(longest + 512, 4096),
        num_cpus=args.cpus,
    )
    rng = random.Random(args.seed)
    results: list[dict[str, Any]] = []
    try:
        with ReplicaPool(replicas=1, config=config) as pool:
            handle = pool["r0"]
            vocab = min(4000, handle.info["vocab_size"])
            ids = [rng.randrange(100, vocab) for _ in range(longest)]
            handle.generate({"input_ids": ids[:64], "sampling": {"max_new_tokens": 1}})  # warm-up
            for history in sorted(args.history):
                console.print(f"history {history:>6} tokens + {args.new_tokens} new ...", end=" ")
                row = measure(handle, ids[: history + args.new_tokens], history, args.repeats)
                results.append(row)
                console.print(
                    f"cold {row['cold_s']:.3f} s  warm {row['warm_s']:.3f} s  "
                    f"ratio {row['ratio']:.1f}x  cached {row['cached_tokens']}"
                )
    except ExecutorError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    report = {"model": args.model, "device": config.resolved_device(), "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        png = args.plot or args.json.with_suffix(".png")
        plot(results, args.model, png)
        console.print(f"wrote {args.json} and {png}")
    if not all(r["warm_hit"] for r in results):
        console.print("[red]a warm call was not served from the cache (see cached_tokens)[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
