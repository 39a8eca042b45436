"""The warm-vs-cold demo: a growing conversation on one real replica.

Each step sends the previous prompt + the model's reply + a new "observation", the
way an agent's call k+1 extends call k. SGLang's cached_tokens shows that only
the new tokens are prefilled. At the end the last prompt is sent again on a
flushed cache (cold) for comparison.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

OBSERVATION = (
    "Observation from the tool: the file data.csv has {rows} rows; columns are "
    "date, account, amount, currency and memo. The amounts range from -913.20 to "
    "4,120.00 and the memo field is free text written by several people. "
)


def run_demo(model: str, steps: int, max_total_tokens: int, console: Console) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from executor.fleet.config import ReplicaConfig
    from executor.fleet.pool import ReplicaPool
    from executor.models import resolve

    path = resolve(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    messages = [
        {"role": "system", "content": "You are a careful data analyst. Answer briefly."},
        {"role": "user", "content": "Look at the workspace's data.csv and describe it."},
    ]
    prompt: list[int] = list(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )
    config = ReplicaConfig(model=model, max_total_tokens=max_total_tokens)
    table = Table(title=f"{steps} calls of one task on {model}", expand=True)
    for col in ("call", "prompt tok", "cached tok", "prefilled", "latency s", "reply"):
        table.add_column(col, justify="right" if col != "reply" else "left")
    rows: list[dict[str, Any]] = []
    with ReplicaPool(replicas=1, config=config, progress=True) as pool:
        replica = pool["r0"]
        sampling = {"max_new_tokens": 24, "temperature": 0.0}
        for step in range(1, steps + 1):
            result = replica.generate({"input_ids": prompt, "sampling": sampling})
            reply = result.text.strip().replace("\n", " ")
            rows.append(
                {
                    "call": step,
                    "prompt_tokens": result.prompt_tokens,
                    "cached_tokens": result.cached_tokens,
                    "latency_s": result.latency_s,
                }
            )
            table.add_row(
                str(step),
                str(result.prompt_tokens),
                str(result.cached_tokens),
                str(result.prefilled_tokens),
                f"{result.latency_s:.3f}",
                reply[:40],
            )
            observation = OBSERVATION.format(rows=1000 + 37 * step) * 3
            prompt = (
                prompt
                + result.output_ids
                + tokenizer.encode("\n" + observation, add_special_tokens=False)
            )
        replica.flush_cache()
        cold = replica.generate({"input_ids": prompt, "sampling": {"max_new_tokens": 1}})
        replica.flush_cache()
        replica.generate({"input_ids": prompt[:-150], "sampling": {"max_new_tokens": 1}})
        warm = replica.generate({"input_ids": prompt, "sampling": {"max_new_tokens": 1}})
    console.print(table)
    ratio = cold.latency_s / warm.latency_s
    console.print(
        f"final prompt of {cold.prompt_tokens} tokens: cold (cache flushed) "
        f"{cold.latency_s:.3f} s, cached={cold.cached_tokens}; warm (+150 new tokens) "
        f"{warm.latency_s:.3f} s, cached={warm.cached_tokens}: [bold]{ratio:.1f}x[/]"
    )
    return {
        "model": model,
        "calls": rows,
        "cold_s": cold.latency_s,
        "warm_s": warm.latency_s,
        "ratio": ratio,
    }


def add_demo_commands(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="start one replica and show warm vs cold calls of a growing conversation",
        description="Starts a real SGLang replica in a Ray actor and runs a growing "
        "conversation on it: each call extends the previous one, and SGLang's "
        "cached_tokens shows that only the new tokens are prefilled.",
    )
    p.add_argument(
        "--model", default="smollm2-135m", help="model name or HF folder (default: smollm2-135m)"
    )
    p.add_argument("--steps", type=int, default=6, help="calls in the conversation (default: 6)")
    p.add_argument("--max-total-tokens", type=int, default=16384, help="KV pool size in tokens")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    report = run_demo(args.model, args.steps, args.max_total_tokens, console)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0
