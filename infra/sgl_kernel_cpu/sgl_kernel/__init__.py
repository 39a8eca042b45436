"""Pure-torch stand-in for ``sgl_kernel`` on CPU-only hosts.

There is no CPU build of sglang-kernel on the package registry. On a CPU without
AMX, SGLang 0.5.23 calls exactly two of its functions; both are implemented here
with torch. Every other symbol resolves to a function that raises
NotImplementedError when called, so a code path we did not expect fails loudly
instead of computing something wrong.

infra/install.sh installs this package only where ``import sgl_kernel`` fails.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__version__ = "0.0.1+cpu-standin"
IS_STANDIN = True


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Write each request's new cache locations into its row of req_to_token.

    Request i owns out_cache_loc[sum(len_0..len_{i-1}) : +len_i] where
    len_i = end_offset[i] - start_offset[i]; they go to
    req_to_token[req_pool_indices[i], start_offset[i]:end_offset[i]].
    """
    del pool_len  # the row length is req_to_token.shape[1]
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    pos = 0
    for row, start, end in zip(rows, starts, ends, strict=True):
        n = end - start
        if n > 0:
            req_to_token[row, start:end] = out_cache_loc[pos : pos + n].to(req_to_token.dtype)
        pos += n


def copy_all_layer_kv_cache_cpu(
    data_ptrs: torch.Tensor,
    strides: torch.Tensor,
    tgt_loc: torch.Tensor,
    src_loc: torch.Tensor,
) -> None:
    """Copy KV slots src_loc -> tgt_loc in every layer's buffer.

    data_ptrs[i] is the base address of buffer i, strides[i] the bytes of one slot.
    """
    if tgt_loc.numel() == 0:
        return
    src = src_loc.to(torch.int64).numpy()
    tgt = tgt_loc.to(torch.int64).numpy()
    top = int(max(src.max(), tgt.max())) + 1
    for ptr, stride in zip(data_ptrs.tolist(), strides.tolist(), strict=True):
        raw = (ctypes.c_uint8 * (top * stride)).from_address(ptr)
        view = np.frombuffer(raw, dtype=np.uint8).reshape(top, stride)
        view[tgt] = view[src]  # fancy indexing reads all sources before writing


def _missing(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"sgl_kernel.{name} is not available in the CPU stand-in "
            "(infra/sgl_kernel_cpu); install the real sglang-kernel on a CUDA host"
        )

    call.__name__ = name
    return call


def __getattr__(name: str) -> Callable[..., Any]:
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing(name)
