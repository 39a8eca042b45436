"""What the simulator knows about a model and an engine replica.

KV bytes per token = 2 (K and V) x layers x KV heads x head dim x dtype bytes.
Engine timing (a fluid model of SGLang's continuous batching with chunked
prefill): a step decodes one token for every decoding call and prefills up to
``chunk_tokens`` of prompt, shared by the calls in prefill. A step lasts
``d0 + d1 x decoding`` (+ ``chunk / prefill_tokens_per_s`` with prefill in it),
with ``d0 + d1 = 1 / decode_tokens_per_s`` (one call decodes at exactly that
rate) and ``d1 = decode_batch_slowdown x d0``. Alone, a prefill runs at exactly
``prefill_tokens_per_s``. So one call alone takes
``uncached / prefill + output / decode`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


@dataclass(frozen=True, slots=True)
class ModelShape:
    layers: int = 80
    kv_heads: int = 8
    head_dim: int = 128
    dtype: str = "bf16"

    def __post_init__(self) -> None:
        if min(self.layers, self.kv_heads, self.head_dim) < 1:
            raise ValueError("layers, kv_heads and head_dim must be >= 1")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}")

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True, slots=True)
class EngineSpec:
    prefill_tokens_per_s: float = 11_300.0
    decode_tokens_per_s: float = 100.0
    decode_batch_slowdown: float = 0.015
    chunk_tokens: int = 2048
    kv_room_bytes: float = 160e9
    kv_bytes_per_token: int = 327_680
    max_running_requests: int = 32
    prefix_cache: bool = True

    def __post_init__(self) -> None:
        if self.prefill_tokens_per_s <= 0 or self.decode_tokens_per_s <= 0:
            raise ValueError("prefill and decode rates must be > 0")
        if self.decode_batch_slowdown < 0 or self.chunk_tokens < 1:
            raise ValueError("decode_batch_slowdown must be >= 0 and chunk_tokens >= 1")
        if self.kv_room_bytes <= 0 or self.kv_bytes_per_token <= 0:
            raise ValueError("KV room and KV bytes per token must be > 0")
        if self.max_running_requests < 1:
            raise ValueError("max_running_requests must be >= 1")

    @property
    def kv_capacity_tokens(self) -> int:
        return int(self.kv_room_bytes // self.kv_bytes_per_token)

    @property
    def d0(self) -> float:
        return 1.0 / (self.decode_tokens_per_s * (1.0 + self.decode_batch_slowdown))

    @property
    def d1(self) -> float:
        return self.decode_batch_slowdown * self.d0

    def call_seconds_alone(self, uncached_tokens: int, output_tokens: int) -> float:
        prefill = uncached_tokens / self.prefill_tokens_per_s
        return prefill + output_tokens / self.decode_tokens_per_s
