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

Optional terms (0 by default) fit engines whose attention is not negligible
next to the weights, such as a small model on a CPU, where a call's cost grows
with its context, and replicas that share a host:

- ``prefill_attention_s``: a prefill chunk of ``n`` new tokens behind earlier
  tokens (the cached prefix, or the prompt's previous chunk), ending at position
  ``P``, costs ``prefill_attention_s x n x P`` more (each new token attends to
  everything before it; :func:`attention_units`); ``first_chunk_attention_s`` is
  the same for a prompt's first chunk from position 0. Prefill batches hold up
  to ``chunk_tokens``, filled in arrival order: a prompt queued behind others
  gets what room their last batch leaves as its first chunk (SGLang's chunked
  prefill; :meth:`EngineSpec.prefill_seconds`);
- ``decode_context_s``: a decode step costs ``decode_context_s x context`` more
  for each decoding call (reading its KV);
- ``call_overhead_s``: engine time spent once per call (scheduling, the batch's
  bookkeeping), charged with its prefill;
- ``host_contention``: replicas that share a host's CPU cores (all of a
  simulation's replicas) slow each other: each other busy one makes this one's
  work take this fraction longer.

A host-memory tier (``host_tier_bytes`` > 0; SGLang's HiCache): histories that
leave the GPU are kept in that much host DRAM per replica and loaded back at
``host_tier_gbps`` GB/s (:meth:`EngineSpec.host_load_seconds`) instead of being
re-prefilled (``sim.engine``).
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


def attention_units(
    uncached_tokens: int, prompt_tokens: int, chunk_tokens: int, first_chunk: int | None = None
) -> tuple[int, int]:
    """The work of a prefill's attention, chunk by chunk: the sum of new tokens x
    the prompt length at the chunk's end, as ``(a first chunk from position 0, the
    chunks behind earlier tokens)``. Kernels differ between the two: a chunk from 0
    is plainly causal, one behind a prefix needs an offset mask. ``first_chunk``:
    the room the prompt's first chunk gets (default ``chunk_tokens``)."""
    done = prompt_tokens - uncached_tokens
    first = behind = 0
    left = uncached_tokens
    room = chunk_tokens if first_chunk is None else max(1, min(first_chunk, chunk_tokens))
    while left > 0:
        n = min(room, left)
        if done:
            behind += n * (done + n)
        else:
            first += n * n
        done += n
        left -= n
        room = chunk_tokens
    return first, behind


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
    prefill_attention_s: float = 0.0
    first_chunk_attention_s: float = 0.0
    decode_context_s: float = 0.0
    call_overhead_s: float = 0.0
    host_contention: float = 0.0
    host_tier_bytes: float = 0.0  # host DRAM per replica for offloaded KV (0: none)
    host_tier_gbps: float = 50.0  # its load bandwidth back to the GPU, GB/s

    def __post_init__(self) -> None:
        if self.prefill_tokens_per_s <= 0 or self.decode_tokens_per_s <= 0:
            raise ValueError("prefill and decode rates must be > 0")
        if self.decode_batch_slowdown < 0 or self.chunk_tokens < 1:
            raise ValueError("decode_batch_slowdown must be >= 0 and chunk_tokens >= 1")
        if self.kv_room_bytes <= 0 or self.kv_bytes_per_token <= 0:
            raise ValueError("KV room and KV bytes per token must be > 0")
        if self.max_running_requests < 1:
            raise ValueError("max_running_requests must be >= 1")
        extra = (
            self.prefill_attention_s,
            self.first_chunk_attention_s,
            self.decode_context_s,
            self.call_overhead_s,
            self.host_contention,
        )
        if min(extra) < 0:
            raise ValueError("the attention, context, overhead and contention terms must be >= 0")
        if self.host_tier_bytes < 0 or self.host_tier_gbps <= 0:
            raise ValueError("host tier bytes must be >= 0 and its bandwidth > 0")

    @property
    def kv_capacity_tokens(self) -> int:
        return int(self.kv_room_bytes // self.kv_bytes_per_token)

    @property
    def d0(self) -> float:
        return 1.0 / (self.decode_tokens_per_s * (1.0 + self.decode_batch_slowdown))

    @property
    def d1(self) -> float:
        return self.decode_batch_slowdown * self.d0

    def host_load_seconds(self, tokens: int) -> float:
        """Time to load ``tokens`` of KV back from the host tier."""
        return tokens * self.kv_bytes_per_token / (self.host_tier_gbps * 1e9)

    def prefill_seconds(
        self, uncached_tokens: int, prompt_tokens: int, queued_tokens: float = 0.0
    ) -> float:
        """Engine time of a call's prefill alone (its overhead included).
        ``queued_tokens``: prefill tokens of other calls ahead of it that are not in
        the batch running now; the batch after them has room for only the rest of
        a chunk, so the prompt is split there and the rest of it runs behind its
        own first part."""
        seconds = self.call_overhead_s + uncached_tokens / self.prefill_tokens_per_s
        if self.prefill_attention_s or self.first_chunk_attention_s:
            room = self.chunk_tokens - int(queued_tokens) % self.chunk_tokens
            first, behind = attention_units(uncached_tokens, prompt_tokens, self.chunk_tokens, room)
            seconds += self.first_chunk_attention_s * first + self.prefill_attention_s * behind
        return seconds

    def call_seconds_alone(
        self, uncached_tokens: int, output_tokens: int, prompt_tokens: int | None = None
    ) -> float:
        prompt = uncached_tokens if prompt_tokens is None else prompt_tokens
        step = 1.0 / self.decode_tokens_per_s + self.decode_context_s * prompt
        return self.prefill_seconds(uncached_tokens, prompt) + output_tokens * step
