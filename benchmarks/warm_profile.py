"""Where a warm call's milliseconds go, on the CPU backend (py-spy on every engine process).

One sglang.Engine in this process (no Ray: the replica actor adds nothing inside the
latency it measures). For each history length: the history is prefilled, then
``--calls`` warm calls of history + ``--new-tokens`` (one token generated) are made
while py-spy samples the tokenizer side (this process), the scheduler and the
detokenizer. Each sampled frame stack is put in one bucket (first match from the
leaf up, see BUCKETS); a bucket's figure is its samples / rate / calls, i.e. CPU
milliseconds of that process per warm call. Samples of an idle thread are not taken
(py-spy's default), so the per-process sums are busy time, and the rest of the
end-to-end latency is waiting (IPC wake-ups, the other core being taken).

    python -m benchmarks.warm_profile --history 1000,8000 --json out/warm_profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# (bucket, substrings of a frame "function (file:line)"): the first bucket whose
# substring occurs in a frame, scanning the stack from the leaf towards the root.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    # the gather lines of the backend are added at run time (gather_frames())
    ("attention: KV gather (k_cache[tokens])", ("_agent_kv_rows",)),
    ("attention: mask", ("_make_sliding_window_mask",)),
    ("attention: sdpa", ("scaled_dot_product_attention", "_run_sdpa_forward", "_agent_warm")),
    ("attention: KV write", ("set_kv_buffer",)),
    ("mlp", ("mlp", "MLP", "act_fn", "SiluAndMul")),
    ("qkv/o projections, rope, norms", ("rotary", "qkv_proj", "o_proj", "RMSNorm", "norm")),
    ("logits + sampling", ("logits_processor", "sample", "Sampler", "lm_head")),
    ("forward: other (embed, metadata, model glue)", ("forward_extend", "model_runner", "forward")),
    (
        "scheduling (batch building, radix match, alloc)",
        (
            "get_next_batch_to_run",
            "prepare_for_extend",
            "match_prefix",
            "schedule_policy",
            "alloc",
            "get_new_batch_prefill",
            "PrefillAdder",
        ),
    ),
    (
        "output processing (stream/detokenize)",
        (
            "process_batch_result",
            "stream_output",
            "detokeniz",
            "handle_batch_output",
            "_handle_batch_output",
            "decode",
        ),
    ),
    (
        "request intake (recv, tokenizer side)",
        (
            "recv_requests",
            "process_input_requests",
            "handle_generate_request",
            "tokeniz",
            "_send_one_request",
            "generate_request",
            "_wait_one_response",
        ),
    ),
    ("IPC (zmq, pickle)", ("zmq", "pickle", "send_pyobj", "recv_pyobj")),
    ("event loop / polling", ("event_loop", "poll", "select", "asyncio", "run_forever")),
]


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.warm_profile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="tiny", help="registered model name or HF folder")
    p.add_argument("--history", type=_int_list, default=[1000, 8000])
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--calls", type=int, default=30, help="warm calls sampled per length")
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--no-spy", action="store_true", help="time only, no py-spy")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="extra sglang.Engine argument (repeatable), e.g. sleep_on_idle=false",
    )
    p.add_argument(
        "--attention-patch",
        choices=["installed", "warm"],
        default="installed",
        help="warm: load sglang_warm_attention's backend as an overlay",
    )
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def gather_frames() -> tuple[str, ...]:
    """'torch_native_backend.py:N' for the installed backend's lines that copy K/V rows."""
    import importlib.util

    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.origin is None:
        return ()
    path = Path(spec.origin).parent / "srt" / "layers" / "attention" / "torch_native_backend.py"
    return tuple(
        f"torch_native_backend.py:{i})"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "k_cache[per_req_tokens]" in line or "v_cache[per_req_tokens]" in line
    )


def bucket_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # leaf first
        for name, keys in BUCKETS:
            if any(k in frame for k in keys):
                return name
    return "other"


def read_raw(path: Path) -> Counter[str]:
    """py-spy --format raw: 'frame;frame;...;leaf count' per line (root first)."""
    counts: Counter[str] = Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        stack_text, _, n = line.rpartition(" ")
        if not stack_text or not n.isdigit():
            continue
        counts[bucket_of(stack_text.split(";"))] += int(n)
    return counts


def leaf_lines(path: Path, top: int = 25) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            stack_text, _, n = line.rpartition(" ")
            if stack_text and n.isdigit():
                counts[stack_text.split(";")[-1]] += int(n)
    return counts.most_common(top)


def engine_processes(engine: Any) -> dict[str, int]:
    import psutil

    procs = {"tokenizer (this process)": os.getpid()}
    for pid in engine.get_all_child_pids():
        try:
            name = " ".join(psutil.Process(pid).cmdline()) or psutil.Process(pid).name()
        except psutil.NoSuchProcess:
            continue
        if "scheduler" in name:
            procs["scheduler"] = pid
        elif "detokenizer" in name:
            procs["detokenizer"] = pid
    return procs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
    if args.attention_patch == "warm":
        from benchmarks.prefill import overlay_warm_patch

        overlay_warm_patch()
    import sglang
    import torch

    from executor.fleet.config import ReplicaConfig
    from executor.models.resolve import resolve

    BUCKETS[0] = (BUCKETS[0][0], BUCKETS[0][1] + gather_frames())
    longest = max(args.history) + args.new_tokens
    extra = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.engine_arg)}
    config = ReplicaConfig(
        model=args.model,
        max_total_tokens=2 * longest + 1024,
        context_length=max(longest + 512, 4096),
        num_cpus=float(os.cpu_count() or 1),
        device="cpu",
        engine_args=extra,
    )
    torch.set_num_threads(config.threads())
    from executor.fleet.actor import free_port

    engine = sglang.Engine(**config.engine_kwargs(str(resolve(args.model)), "cpu", free_port()))
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    report: dict[str, Any] = {"model": args.model, "new_tokens": args.new_tokens, "rows": []}
    try:
        procs = engine_processes(engine)
        report["processes"] = procs
        vocab = min(4000, engine.tokenizer_manager.model_config.vocab_size)
        rng = random.Random(0)
        ids = [rng.randrange(100, vocab) for _ in range(longest)]
        one = {"max_new_tokens": 1, "temperature": 0.0}
        engine.generate(input_ids=ids[:64], sampling_params=one)
        for history in sorted(args.history):
            prompt = ids[: history + args.new_tokens]
            engine.flush_cache()
            engine.generate(input_ids=prompt[:history], sampling_params=one)
            # the warm call repeated: its own new tokens were cached by the previous one,
            # so each repeat is made on a distinct branch (last new token varied)
            tmp = Path(tempfile.mkdtemp(prefix="warmprof-"))
            spies: dict[str, subprocess.Popen[bytes]] = {}
            if not args.no_spy:
                for label, pid in procs.items():
                    spies[label] = subprocess.Popen(
                        [
                            spy,
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            str(args.rate),
                            "--format",
                            "raw",
                            "--output",
                            str(tmp / f"{pid}.txt"),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                time.sleep(1.5)  # py-spy attaches
            lat, cached = [], []
            for k in range(args.calls):
                p = prompt[:history] + [
                    100 + (k * 37 + j) % (vocab - 100) for j in range(args.new_tokens)
                ]  # fresh new tokens each call: only the history is cached
                t0 = time.perf_counter()
                out = engine.generate(input_ids=p, sampling_params=one)
                lat.append(time.perf_counter() - t0)
                cached.append(int(out["meta_info"].get("cached_tokens", 0)))
            for proc in spies.values():
                proc.send_signal(2)  # SIGINT: py-spy writes its output
            for proc in spies.values():
                proc.wait(timeout=60)
            row: dict[str, Any] = {
                "history_tokens": history,
                "warm_ms_median": round(1000 * statistics.median(lat), 2),
                "warm_ms_min": round(1000 * min(lat), 2),
                "cached_tokens_min": min(cached),
                "per_process_ms_per_call": {},
            }
            for label, pid in procs.items():
                counts = read_raw(tmp / f"{pid}.txt")
                scale = 1000.0 / args.rate / args.calls
                row["per_process_ms_per_call"][label] = {
                    "busy_ms": round(sum(counts.values()) * scale, 2),
                    "buckets_ms": {b: round(n * scale, 2) for b, n in counts.most_common()},
                    "top_leaf_frames": [
                        (f, round(n * scale, 2)) for f, n in leaf_lines(tmp / f"{pid}.txt")
                    ],
                }
            shutil.rmtree(tmp, ignore_errors=True)
            report["rows"].append(row)
            print(f"history {history}: warm median {row['warm_ms_median']} ms", file=sys.stderr)
    finally:
        engine.shutdown()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
