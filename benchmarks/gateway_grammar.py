"""The cost of the gateway's tool-call grammars (issue 30), through the gateway's own
reply path on one real replica (in-process: no HTTP, the engine's latency as the
replica measures it).

Per mode, the same prompt: ``none`` (unconstrained), ``required`` and ``auto``
(structural tags of the Qwen family, built from SGLang's ``structure_info``); each
mode's first call on a tool set it has not seen compiles the grammar (in the engine),
the repeats find it cached. Reported: latency of the first call, median of the
repeats (the gateway's wall time: grammar built, prompt rendered, core, engine), and
the engine's latency per output token.

    python -m benchmarks.gateway_grammar --json out/gateway_grammar.json
    python -m benchmarks.gateway_grammar --model qwen2.5-coder-0.5b --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The time in a zone.",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]
ASK = [
    {"role": "system", "content": "Use the tools."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


async def measure(model: str, repeats: int, max_tokens: int) -> dict[str, Any]:
    from executor.gateway import Gateway, GatewayConfig
    from executor.runtime import Executor

    out: dict[str, Any] = {"model": model, "repeats": repeats, "max_tokens": max_tokens}
    async with Executor(model=model, replicas=1) as ex:
        gw = Gateway(lambda: ex.services, GatewayConfig(tool_call_parser="qwen25"))
        for mode in ("none", "required", "auto"):
            runs = []
            for i in range(repeats + 1):
                body = {
                    "model": model,
                    "messages": ASK,
                    "tools": TOOLS,
                    "tool_choice": mode,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                t0 = time.perf_counter()
                reply = await gw.chat(body, {})
                wall = time.perf_counter() - t0
                r = reply.result
                runs.append(
                    {
                        "first": i == 0,
                        "latency_s": r.latency_s,
                        "wall_s": wall,
                        "completion_tokens": r.completion_tokens,
                        "tool_calls": len(reply.parsed.calls),
                    }
                )
            later = runs[1:]
            out[mode] = {
                "first_latency_s": runs[0]["latency_s"],
                "first_wall_s": runs[0]["wall_s"],
                "median_wall_s": statistics.median(r["wall_s"] for r in later),
                "median_latency_s": statistics.median(r["latency_s"] for r in later),
                "median_ms_per_token": statistics.median(
                    1000 * r["latency_s"] / max(1, r["completion_tokens"]) for r in later
                ),
                "calls": runs,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    out = asyncio.run(measure(args.model, args.repeats, args.max_tokens))
    text = json.dumps(out, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    for mode in ("none", "required", "auto"):
        m = out[mode]
        first, median = m["first_wall_s"], m["median_wall_s"]
        per_token = m["median_ms_per_token"]
        print(
            f"{mode:9s} first {first:.2f} s  median {median:.2f} s (gateway wall)  "
            f"engine {per_token:.1f} ms/token"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
