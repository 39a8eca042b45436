"""The pure-torch sgl_kernel stand-in computes what SGLang expects of the real kernels."""

from __future__ import annotations

import importlib.util

import pytest
import torch

sgl_kernel = pytest.importorskip("sgl_kernel")
if not getattr(sgl_kernel, "IS_STANDIN", False):  # a real sgl_kernel (CUDA host)
    pytest.skip("the real sgl_kernel is installed", allow_module_level=True)


def test_assign_req_to_token_pool() -> None:
    req_to_token = torch.zeros((4, 10), dtype=torch.int32)
    out_cache_loc = torch.tensor([11, 12, 13, 21, 22], dtype=torch.int64)
    sgl_kernel.assign_req_to_token_pool_cpu(
        torch.tensor([2, 0]),
        req_to_token,
        torch.tensor([1, 4]),
        torch.tensor([4, 6]),
        out_cache_loc,
        10,
    )
    assert req_to_token[2].tolist() == [0, 11, 12, 13, 0, 0, 0, 0, 0, 0]
    assert req_to_token[0].tolist() == [0, 0, 0, 0, 21, 22, 0, 0, 0, 0]
    assert req_to_token[[1, 3]].abs().sum() == 0


def test_copy_all_layer_kv_cache() -> None:
    layers = [torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3) + 100 * i for i in range(2)]
    expected = [t.clone() for t in layers]
    for t in expected:
        t[[5, 6]] = t[[1, 2]]
    ptrs = torch.tensor([t.data_ptr() for t in layers], dtype=torch.int64)
    strides = torch.tensor([t.stride(0) * t.element_size() for t in layers], dtype=torch.int64)
    sgl_kernel.copy_all_layer_kv_cache_cpu(
        ptrs, strides, torch.tensor([5, 6]), torch.tensor([1, 2])
    )
    for got, want in zip(layers, expected, strict=True):
        assert torch.equal(got, want)


def test_other_symbols_fail_loudly() -> None:
    with pytest.raises(NotImplementedError, match="CPU stand-in"):
        sgl_kernel.some_cuda_only_kernel(1, 2)
    assert importlib.util.find_spec("sgl_kernel") is not None
