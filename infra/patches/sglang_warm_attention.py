"""Make a warm extend on SGLang's CPU attention backend read the cached KV in place.

Applied after ``sglang_extend_attention.py`` (whose code it extends). With that patch
a warm extend attends with the new queries only, but each layer still (1) copies
the request's whole history out of the KV pool (``k_cache[per_req_tokens]``, an
O(history) gather per layer and per call: 2 x 30 layers x 6 MB at 8K tokens for
SmolLM2-135M) and (2) builds and applies an O(new x history) boolean causal mask,
which sends SDPA down its masked path.

This splits the attention in two exact parts and merges them by their log-sum-exp
(the same algebra flash attention uses between blocks):

- the new queries over the cached prefix: no mask at all (every new token sees
  every cached one); GQA folded into the query length so K/V are not repeated;
- the new queries over themselves: an ordinary causal attention (square, small).

The cached prefix is read in place: each contiguous run of its KV slots (a task's
history is allocated in a few runs: prompt, decoded output, observation...) is a
view of the pool, attended to on its own and merged in; past 16 runs it is gathered
once. Only the new tokens' K/V (n rows) are copied. The decode step reads the pool
in place when the request's slots are one run. Idempotent; fails loudly when the code
it expects is not there; greedy outputs checked identical warm vs cold
(tests/unit/infra/test_warm_attention.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARKER = "# agent-executor: warm extend reads the cached KV in place"
PREREQUISITE = "# agent-executor: extend attends with the new queries only"

HELPERS_ANCHOR = "from sglang.srt.model_executor.forward_batch_info import ForwardBatch\n"
HELPERS = f'''
{MARKER}
_agent_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _agent_kv_rows(cache: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """cache[tokens] as a view when the slots are one contiguous run, else a gather."""
    n = tokens.shape[0]
    if n == 0:
        return cache[tokens]
    first = int(tokens[0])
    if int(tokens[-1]) - first == n - 1 and torch.equal(
        tokens, torch.arange(first, first + n, dtype=tokens.dtype, device=tokens.device)
    ):
        return cache[first : first + n]
    return cache[tokens]


_AGENT_MAX_RUNS = 16


def _agent_runs(tokens: torch.Tensor) -> list[tuple[int, int]]:
    """[start, end) index ranges of `tokens` whose slots are consecutive."""
    n = tokens.shape[0]
    if n == 0:
        return []
    cuts = (torch.nonzero(tokens[1:] - tokens[:-1] != 1).flatten() + 1).tolist()
    edges = [0, *cuts, n]
    return list(zip(edges[:-1], edges[1:]))


def _agent_merge(o1, l1, o2, l2):
    """Two attention results over disjoint key sets, merged by their log-sum-exp."""
    m = torch.maximum(l1, l2)
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
    return (o1 * w1 + o2 * w2) / (w1 + w2), m + torch.log(w1 + w2)


def _agent_warm_extend(q, k_cache, v_cache, tokens, prefix, scale):
    """Causal attention of n new queries q [H, n, D] after `prefix` cached tokens.

    tokens: the request's KV slots (prefix + n). Returns [n, H, Dv]. Exact: the
    prefix (no mask; each contiguous run of slots read in place) and the new tokens
    (causal) are attended separately and merged by log-sum-exp."""
    h, n, d = q.shape
    kvh, dv = k_cache.shape[1], v_cache.shape[-1]
    g = h // kvh
    q_folded = q.reshape(1, kvh, g * n, d)  # GQA folded into the query length
    runs = _agent_runs(tokens[:prefix])
    if len(runs) <= _AGENT_MAX_RUNS:
        parts = []
        for a, b in runs:
            first = int(tokens[a])
            parts.append((k_cache[first : first + b - a], v_cache[first : first + b - a]))
    else:
        parts = [(k_cache[tokens[:prefix]], v_cache[tokens[:prefix]])]
    out = lse = None
    for k, v in parts:
        if k.dtype != q.dtype:
            k, v = k.to(q.dtype), v.to(q.dtype)
        o, l = _agent_flash(
            q_folded, k.movedim(0, 1).unsqueeze(0), v.movedim(0, 1).unsqueeze(0),
            0.0, False, scale=scale,
        )[:2]
        o, l = o.reshape(h, n, dv), l.reshape(h, n, 1)
        out, lse = (o, l) if out is None else _agent_merge(out, lse, o, l)
    new = tokens[prefix:]
    kn, vn = k_cache[new].movedim(0, 1), v_cache[new].movedim(0, 1)
    if kn.dtype != q.dtype:
        kn, vn = kn.to(q.dtype), vn.to(q.dtype)
    if g > 1:
        kn, vn = kn.repeat_interleave(g, 0), vn.repeat_interleave(g, 0)
    o, l = _agent_flash(
        q.unsqueeze(0), kn.unsqueeze(0), vn.unsqueeze(0), 0.0, True, scale=scale
    )[:2]
    o, l = o.reshape(h, n, dv), l.reshape(h, n, 1)
    if out is not None:
        o, _ = _agent_merge(out, lse, o, l)
    return o.movedim(0, 1)
'''

EXTEND_ANCHOR = f"""            {PREREQUISITE}
            prefix_len = int(prefill_seq_len_q)
"""
EXTEND_FAST = f"""{EXTEND_ANCHOR}            {MARKER}
            if (
                prefix_len > 0
                and causal
                and encoder_lens is None
                and not (sliding_window_size is not None and sliding_window_size > -1)
            ):
                output[start_q:end_q, :, :] = _agent_warm_extend(
                    per_req_query,
                    k_cache,
                    v_cache,
                    req_to_token[req_pool_indices[seq_idx], : int(seq_len_kv)],
                    prefix_len,
                    scaling,
                )
                start_q = end_q
                continue
"""

DECODE_GATHER = """            per_req_tokens = req_to_token[req_pool_idx, start_kv:end_kv]
            per_req_key = k_cache[per_req_tokens].movedim(0, query.dim() - 2)
            per_req_value = v_cache[per_req_tokens].movedim(0, query.dim() - 2)
"""
DECODE_VIEW = """            per_req_tokens = req_to_token[req_pool_idx, start_kv:end_kv]
            per_req_key = _agent_kv_rows(k_cache, per_req_tokens).movedim(0, query.dim() - 2)
            per_req_value = _agent_kv_rows(v_cache, per_req_tokens).movedim(0, query.dim() - 2)
"""

DECODE_START = "    def _run_sdpa_forward_decode("


class PatchError(RuntimeError):
    pass


def patch_text(text: str) -> str:
    """The patched source; the text unchanged if already patched; PatchError if the
    code is not the one this patch was written against."""
    if MARKER in text:
        return text
    if PREREQUISITE not in text:
        raise PatchError("sglang_extend_attention.py must be applied first")
    if text.count(HELPERS_ANCHOR) != 1 or text.count(EXTEND_ANCHOR) != 1:
        raise PatchError("expected code not found")
    head, sep, decode = text.partition(DECODE_START)
    if not sep or decode.count(DECODE_GATHER) < 1:
        raise PatchError("expected decode code not found")
    decode = decode.replace(DECODE_GATHER, DECODE_VIEW, 1)
    head = head.replace(HELPERS_ANCHOR, HELPERS_ANCHOR + HELPERS, 1)
    head = head.replace(EXTEND_ANCHOR, EXTEND_FAST, 1)
    return head + sep + decode


def unpatch_text(text: str) -> str:
    """The source without this patch (for side-by-side measurements)."""
    if MARKER not in text:
        return text
    head, sep, decode = text.partition(DECODE_START)
    head = head.replace(HELPERS_ANCHOR + HELPERS, HELPERS_ANCHOR, 1)
    head = head.replace(EXTEND_FAST, EXTEND_ANCHOR, 1)
    return head + sep + decode.replace(DECODE_VIEW, DECODE_GATHER, 1)


def backend_path() -> Path | None:
    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "srt" / "layers" / "attention" / "torch_native_backend.py"


def main() -> int:
    path = backend_path()
    if path is None:
        print("[install] sglang not installed; nothing to patch", file=sys.stderr)
        return 1
    text = path.read_text()
    try:
        new = patch_text(text)
    except PatchError as exc:
        print(f"[install] {path}: {exc}; not patching", file=sys.stderr)
        return 1
    if new != text:
        path.write_text(new)
        print(f"[install] patched {path} (warm extend reads the KV in place)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
