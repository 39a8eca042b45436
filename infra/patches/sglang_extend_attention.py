"""Make SGLang's CPU attention backend pay only for the new tokens of a cached prompt.

SGLang 0.5.23's ``torch_native`` backend (the one that runs on a CPU without AMX)
computes an extend (a prefill whose prefix is already in the radix cache) by
padding the new queries to the full sequence length and running a full causal
attention over it: a warm call with 8,000 cached tokens and 200 new ones does the
same O(L^2) attention work as the cold call, and the prefix cache buys little.

This rewrites that step to attend with the new queries only, under a causal mask
offset by the cached prefix length (the backend's own ``_make_sliding_window_mask``
with ``query_offset``). Results are the same; the work is O(new x L). Applied at
install time to the pinned SGLang release; idempotent; fails loudly if the code it
expects is not there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARKER = "# agent-executor: extend attends with the new queries only"

OLD = """            per_req_query = query[:, start_q:end_q, :]
            per_req_query_redudant = torch.empty(
                (per_req_query.shape[0], seq_len_kv, per_req_query.shape[2]),
                dtype=per_req_query.dtype,
                device=per_req_query.device,
            )

            per_req_query_redudant[:, prefill_seq_len_q:, :] = per_req_query
"""

NEW = f"""            per_req_query = query[:, start_q:end_q, :]
            {MARKER}
            prefix_len = int(prefill_seq_len_q)
"""

OLD_MASK = """            attn_mask = None
            is_causal = causal
            if sliding_window_size is not None and sliding_window_size > -1:
                attn_mask = self._make_sliding_window_mask(
                    q_len=seq_len_kv,
                    kv_len=seq_len_kv,
                    sliding_window_size=sliding_window_size,
                    device=per_req_query.device,
                )
                is_causal = False

            per_req_out_redudant = (
                scaled_dot_product_attention(
                    per_req_query_redudant.unsqueeze(0),
"""

NEW_MASK = """            attn_mask = None
            is_causal = causal
            windowed = sliding_window_size is not None and sliding_window_size > -1
            if windowed or (causal and prefix_len > 0):
                attn_mask = self._make_sliding_window_mask(
                    q_len=per_req_query.shape[1],
                    kv_len=int(seq_len_kv),
                    sliding_window_size=sliding_window_size if windowed else int(seq_len_kv),
                    device=per_req_query.device,
                    query_offset=prefix_len,
                )
                is_causal = False

            per_req_out_redudant = (
                scaled_dot_product_attention(
                    per_req_query.unsqueeze(0),
"""

OLD_OUT = (
    "            output[start_q:end_q, :, :] = per_req_out_redudant[prefill_seq_len_q:, :, :]\n"
)
NEW_OUT = "            output[start_q:end_q, :, :] = per_req_out_redudant\n"


def main() -> int:
    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.origin is None:
        print("[install] sglang not installed; nothing to patch", file=sys.stderr)
        return 1
    path = Path(spec.origin).parent / "srt" / "layers" / "attention" / "torch_native_backend.py"
    text = path.read_text()
    if MARKER in text:
        return 0
    for old, new in ((OLD, NEW), (OLD_MASK, NEW_MASK), (OLD_OUT, NEW_OUT)):
        if text.count(old) != 1:
            print(f"[install] {path}: expected code not found; not patching", file=sys.stderr)
            return 1
        text = text.replace(old, new)
    path.write_text(text)
    print(f"[install] patched {path} (extend attention over new tokens only)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
