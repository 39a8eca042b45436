"""Warm vs cold prefill on a real SGLang replica, proven by SGLang's cached_tokens.

For each history length L, the call measured is call k+1 of a task: L tokens of
history plus ``new`` tokens (a tool result, say), one token generated.

- cold: the radix cache is flushed first, so the whole prompt is prefilled
  (cached_tokens must be 0);
- warm: the history was prefilled by the previous call, so only the new tokens
  are (cached_tokens must be >= L).

Latency is the engine's (measured inside the replica actor); medians over repeats.

Beside each row, the physical limit of the warm call on this machine: the new
tokens' FLOPs (their linear layers, the last one's LM head, and their attention
over the cached history and each other) at the matmul rate measured here with
torch (fp32, the engine's thread count), and how far the warm call is from it.
The JSON also holds the plan for a GPU fleet (not a measurement): warm and cold
prefill of a 30K-token history on the simulator's 70B engine model.

    python -m benchmarks.prefill --json out/prefill.json
    python -m benchmarks.prefill --model smollm2-135m --history 1000,2000,4000 --repeats 3
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
    p.add_argument(
        "--attention-patch",
        choices=["installed", "warm"],
        default="installed",
        help="installed: the SGLang as installed; warm: load sglang_warm_attention's backend "
        "in the engine as an overlay (measures the patch where it is not installed yet)",
    )
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


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 7) -> float:
    """This machine's fp32 matmul rate (GFLOP/s) with the engine's thread count."""
    import time

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / statistics.median(times) / 1e9


def warm_call_flops(cfg: dict[str, Any], history: int, new: int) -> dict[str, float]:
    """FLOPs of a warm call's prefill: ``new`` tokens behind ``history`` cached ones
    (a Llama-shaped config.json; the LM head for the last token only, as SGLang does)."""
    hidden, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads", heads))
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    inter, vocab = int(cfg["intermediate_size"]), int(cfg["vocab_size"])
    per_token = layers * (
        hidden * (heads + 2 * kv_heads) * head_dim  # q, k, v
        + heads * head_dim * hidden  # o
        + 3 * hidden * inter  # gate, up, down
    )
    linear = 2.0 * (new * per_token + hidden * vocab)
    # each new token i attends to history + i + 1 keys: QK^T and PV, all heads
    keys = new * history + new * (new + 1) / 2
    attention = 2.0 * 2 * layers * heads * head_dim * keys
    return {"linear": linear, "attention": attention}


def gpu_plan(history: int = 30_000, new: int = 300) -> dict[str, Any]:
    """Warm vs cold on the simulator's engine model of a 70B replica (a plan)."""
    from sim.model import EngineSpec

    spec = EngineSpec()
    warm = spec.prefill_seconds(new, history + new)
    cold = spec.prefill_seconds(history + new, history + new)
    return {
        "what": "a plan, not a measurement: sim.model.EngineSpec() (70B, TP-4, "
        f"{spec.prefill_tokens_per_s:.0f} tok/s prefill)",
        "history_tokens": history,
        "new_tokens": new,
        "warm_s": round(warm, 4),
        "cold_s": round(cold, 3),
        "ratio": round(cold / warm, 1),
    }


def add_limits(results: list[dict[str, Any]], cfg: dict[str, Any], gflops: float) -> None:
    """limit_s per row at the row's own matmul_gflops (measured beside it), else ``gflops``."""
    for row in results:
        f = warm_call_flops(cfg, row["history_tokens"], row["new_tokens"])
        limit = (f["linear"] + f["attention"]) / (row.get("matmul_gflops", gflops) * 1e9)
        row["warm_gflop"] = round((f["linear"] + f["attention"]) / 1e9, 3)
        row["warm_attention_share"] = round(f["attention"] / (f["linear"] + f["attention"]), 3)
        row["limit_s"] = round(limit, 5)
        row["warm_over_limit"] = round(row["warm_s"] / limit, 2)


def overlay_warm_patch() -> Path:
    """Make engines started from here load the warm-attention backend (an overlay)."""
    import tempfile

    from benchmarks import patch_ab

    work = Path(tempfile.mkdtemp(prefix="prefill-overlay-"))
    backend = patch_ab.variants(work)["B"]
    patch_ab.install_overlay(work)
    os.environ["AGENT_EXECUTOR_BACKEND_OVERLAY"] = str(backend)
    return backend


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
    from executor.models.resolve import resolve

    overlay = overlay_warm_patch() if args.attention_patch == "warm" else None
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
                # the rate at this moment, beside the row it bounds (a shared host varies)
                row["matmul_gflops"] = round(matmul_gflops(config.threads()), 1)
                results.append(row)
                console.print(
                    f"cold {row['cold_s']:.3f} s  warm {row['warm_s']:.3f} s  "
                    f"ratio {row['ratio']:.1f}x  cached {row['cached_tokens']}"
                )
    except ExecutorError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    model_cfg = json.loads((resolve(args.model) / "config.json").read_text())
    gflops = matmul_gflops(config.threads())
    add_limits(results, model_cfg, gflops)
    for row in results:
        console.print(
            f"history {row['history_tokens']:>6}: warm {row['warm_s']:.3f} s, limit "
            f"{row['limit_s']:.3f} s ({row['warm_gflop']} GFLOP at "
            f"{row.get('matmul_gflops', gflops)} GFLOP/s), x{row['warm_over_limit']}"
        )
    loaded = len(Path(f"{overlay}.hits").read_text().split()) if overlay else None
    if overlay is not None and not loaded:
        console.print("[red]the warm-attention overlay was not loaded by the engine[/]")
        return 1
    report = {
        "model": args.model,
        "device": config.resolved_device(),
        "attention_patch": args.attention_patch,
        "overlay_loaded_in_processes": loaded,
        "matmul_gflops": round(gflops, 1),
        "results": results,
        "gpu_plan": gpu_plan(),
    }
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
