"""Command-line options shared by ``sim.cli`` and ``planner.cli``:
the engine/model, the workload and the scheduler knobs, turned into specs with
argparse errors (not tracebacks) for bad values."""

from __future__ import annotations

import argparse
from pathlib import Path

from scheduler.config import SchedulerConfig
from sim.model import DTYPE_BYTES, EngineSpec, ModelShape
from sim.workload import WorkloadSpec


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return v


def nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return v


def nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return v


def fraction(text: str) -> float:
    v = nonneg_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1): {text}")
    return v


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and engine (defaults: a 70B-class model on TP-4 H100s)")
    g.add_argument("--layers", type=positive_int, default=80, help="transformer layers (80)")
    g.add_argument("--kv-heads", type=positive_int, default=8, help="KV heads (8, GQA)")
    g.add_argument("--head-dim", type=positive_int, default=128, help="head dimension (128)")
    g.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="KV dtype (bf16)")
    g.add_argument(
        "--kv-bytes-per-token",
        type=positive_int,
        default=None,
        help="override the shape: KV bytes per token (shape gives 327,680 = 320 KB)",
    )
    g.add_argument(
        "--kv-room-gb",
        type=positive_float,
        default=160.0,
        help="KV cache room per replica in GB (160)",
    )
    g.add_argument(
        "--prefill-tok-s",
        type=positive_float,
        default=11_300.0,
        help="prefill rate of one replica, tokens/s (11,300)",
    )
    g.add_argument(
        "--decode-tok-s",
        type=positive_float,
        default=100.0,
        help="decode rate of one call alone, tokens/s (100)",
    )
    g.add_argument(
        "--decode-batch-slowdown",
        type=nonneg_float,
        default=0.015,
        help="extra step time per extra decoding call, relative (0.015)",
    )
    g.add_argument(
        "--chunk-tokens",
        type=positive_int,
        default=2048,
        help="chunked-prefill tokens per engine step (2048)",
    )
    g.add_argument(
        "--max-running-requests",
        type=positive_int,
        default=32,
        help="engine's own cap on concurrent calls (32)",
    )
    g.add_argument(
        "--no-prefix-cache",
        action="store_true",
        help="engine without prefix caching: every call prefills its whole prompt",
    )
    g.add_argument(
        "--host-tier-gb",
        type=nonneg_float,
        default=0.0,
        help="host DRAM per replica for released/evicted KV, GB (0: none); "
        "reloaded instead of re-prefilled (SGLang HiCache)",
    )
    g.add_argument(
        "--host-tier-gbps",
        type=positive_float,
        default=50.0,
        help="host tier load bandwidth back to the GPU, GB/s (50)",
    )


def add_workload_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload (seeded)")
    g.add_argument("--calls", type=positive_int, default=20, help="model calls per task (20)")
    g.add_argument(
        "--calls-spread",
        type=fraction,
        default=0.0,
        help="calls per task uniform in calls x [1-s, 1+s] (0: fixed)",
    )
    g.add_argument(
        "--history-tokens",
        type=positive_int,
        default=30_000,
        help="mean history at a task's last call, tokens (30,000)",
    )
    g.add_argument(
        "--system-prompt-tokens",
        type=nonneg_int,
        default=1_500,
        help="shared system prompt per agent (1,500)",
    )
    g.add_argument(
        "--first-message-tokens",
        type=positive_int,
        default=500,
        help="task's own first message (500)",
    )
    g.add_argument(
        "--output-tokens", type=positive_int, default=30, help="mean output tokens per call (30)"
    )
    g.add_argument(
        "--token-spread",
        type=fraction,
        default=0.5,
        help="new/output tokens uniform in mean x [1-s, 1+s] (0.5)",
    )
    g.add_argument(
        "--tool-median-s",
        type=nonneg_float,
        default=2.0,
        help="tool latency median, s (2.0); lognormal",
    )
    g.add_argument("--tool-p99-s", type=nonneg_float, default=4.0, help="tool latency p99, s (4.0)")
    g.add_argument(
        "--agents", type=positive_int, default=4, help="distinct agents (shared system prompts) (4)"
    )
    g.add_argument(
        "--expect-margin",
        type=positive_float,
        default=1.1,
        help="expected peak history told to the scheduler = margin x mean (1.1)",
    )
    g.add_argument(
        "--trace",
        type=Path,
        default=None,
        metavar="FILE",
        help="replay an agent trace (JSONL, one task per line: per step the new "
        "input tokens, output tokens and tool seconds; see sim/traces.py and "
        "docs/benchmarks-e2e.md) at the Poisson arrivals, its tasks in order, "
        "cycling; the workload options above are then ignored",
    )


def add_scheduler_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scheduler core (ours)")
    d = SchedulerConfig()
    g.add_argument(
        "--max-running-calls",
        type=positive_int,
        default=d.max_running_calls,
        help=f"concurrent calls the core lets a replica run ({d.max_running_calls})",
    )
    g.add_argument(
        "--kv-headroom",
        type=fraction,
        default=d.kv_headroom,
        help=f"KV capacity never reserved ({d.kv_headroom})",
    )
    g.add_argument(
        "--queue-limit",
        type=nonneg_int,
        default=d.admission_queue_limit,
        help=f"admission queue bound; beyond it tasks are rejected ({d.admission_queue_limit})",
    )
    g.add_argument(
        "--retention-ratio",
        type=nonneg_float,
        default=d.retention_ratio,
        help="under pressure, release KV when the tool wait > ratio x re-prefill "
        f"time ({d.retention_ratio})",
    )
    g.add_argument(
        "--waiting-kv-cap",
        type=positive_float,
        default=d.waiting_kv_cap,
        help=f"under pressure, KV share tool-waiting tasks may hold ({d.waiting_kv_cap})",
    )
    g.add_argument(
        "--max-migrations",
        type=nonneg_int,
        default=d.max_migrations,
        help=f"re-placements after replica deaths per task ({d.max_migrations})",
    )
    g.add_argument(
        "--warm-up",
        choices=("on", "off"),
        default="on" if d.warm_up else "off",
        help="re-prefill a paused task's history on an idle replica before its tool is "
        f"expected to end ({'on' if d.warm_up else 'off'})",
    )
    g.add_argument(
        "--shed-slo",
        type=positive_float,
        default=None,
        metavar="S",
        help="opt-in shedding: reject at arrival a task whose predicted admission "
        "wait exceeds S seconds (off)",
    )


def engine_spec(a: argparse.Namespace, p: argparse.ArgumentParser) -> EngineSpec:
    try:
        shape = ModelShape(a.layers, a.kv_heads, a.head_dim, a.dtype)
        return EngineSpec(
            prefill_tokens_per_s=a.prefill_tok_s,
            decode_tokens_per_s=a.decode_tok_s,
            decode_batch_slowdown=a.decode_batch_slowdown,
            chunk_tokens=a.chunk_tokens,
            kv_room_bytes=a.kv_room_gb * 1e9,
            kv_bytes_per_token=a.kv_bytes_per_token or shape.kv_bytes_per_token,
            max_running_requests=a.max_running_requests,
            prefix_cache=not a.no_prefix_cache,
            host_tier_bytes=a.host_tier_gb * 1e9,
            host_tier_gbps=a.host_tier_gbps,
        )
    except ValueError as exc:
        p.error(str(exc))


def workload_spec(a: argparse.Namespace, p: argparse.ArgumentParser) -> WorkloadSpec:
    if getattr(a, "trace", None) is not None:
        from sim.traces import TraceError, load_trace, spec_of

        try:
            return spec_of(load_trace(a.trace))
        except TraceError as exc:
            p.error(str(exc))
    try:
        return WorkloadSpec(
            calls=a.calls,
            calls_spread=a.calls_spread,
            history_tokens=a.history_tokens,
            system_prompt_tokens=a.system_prompt_tokens,
            first_message_tokens=a.first_message_tokens,
            output_tokens=a.output_tokens,
            token_spread=a.token_spread,
            tool_median_s=a.tool_median_s,
            tool_p99_s=a.tool_p99_s,
            agents=a.agents,
            expect_margin=a.expect_margin,
        )
    except ValueError as exc:
        p.error(str(exc))


def scheduler_config(
    a: argparse.Namespace, p: argparse.ArgumentParser, slo_s: float, prefill: float
) -> SchedulerConfig:
    try:
        return SchedulerConfig(
            kv_headroom=a.kv_headroom,
            admission_queue_limit=a.queue_limit,
            max_running_calls=a.max_running_calls,
            slo_s=slo_s,
            prefill_tokens_per_s=prefill,
            retention_ratio=a.retention_ratio,
            waiting_kv_cap=a.waiting_kv_cap,
            max_migrations=a.max_migrations,
            shed_slo_s=a.shed_slo,
            warm_up=a.warm_up == "on",
        )
    except ValueError as exc:
        p.error(str(exc))
