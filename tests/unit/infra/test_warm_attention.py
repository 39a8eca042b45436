"""infra/patches/sglang_warm_attention.py: exact, idempotent, loud, and greedy-identical."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.nn.functional import scaled_dot_product_attention

ROOT = Path(__file__).resolve().parents[3]


def _patch() -> ModuleType:
    path = ROOT / "infra" / "patches" / "sglang_warm_attention.py"
    spec = importlib.util.spec_from_file_location("sglang_warm_attention", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _helpers() -> dict[str, Any]:
    ns: dict[str, Any] = {"torch": torch}
    exec(_patch().HELPERS, ns)  # noqa: S102 - the patch's own code, as it lands in SGLang
    return ns


def _reference(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, tokens: torch.Tensor, prefix: int
) -> torch.Tensor:
    """What the backend computed before: gather, offset causal mask, one SDPA."""
    n_kv = tokens.shape[0]
    k = k_cache[tokens].movedim(0, 1).unsqueeze(0)
    v = v_cache[tokens].movedim(0, 1).unsqueeze(0)
    q_pos = torch.arange(prefix, n_kv).unsqueeze(1)
    mask = torch.arange(n_kv).unsqueeze(0) <= q_pos
    out = scaled_dot_product_attention(q.unsqueeze(0), k, v, attn_mask=mask, enable_gqa=True)
    return out.squeeze(0).movedim(0, 1)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (9, 3), (4, 4)])
@pytest.mark.parametrize("layout", ["contiguous", "runs", "scattered"])
def test_warm_extend_equals_masked_attention(heads: int, kv_heads: int, layout: str) -> None:
    torch.manual_seed(0)
    ns = _helpers()
    prefix, new, dim = 300, 37, 32
    k_cache, v_cache = torch.randn(1000, kv_heads, dim), torch.randn(1000, kv_heads, dim)
    if layout == "contiguous":
        tokens = torch.arange(17, 17 + prefix + new)
    elif layout == "runs":  # prompt, output, observation in three runs; new ones elsewhere
        tokens = torch.cat(
            [
                torch.arange(500, 600),
                torch.arange(40, 190),
                torch.arange(700, 750),
                torch.arange(900, 900 + new),
            ]
        )
    else:
        tokens = torch.randperm(1000)[: prefix + new]
    q = torch.randn(new, heads, dim).movedim(0, 1)  # the backend's [H, n, D] view
    got = ns["_agent_warm_extend"](q, k_cache, v_cache, tokens, prefix, None)
    want = _reference(q, k_cache, v_cache, tokens, prefix)
    assert got.shape == (new, heads, dim)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_kv_rows_is_a_view_when_contiguous() -> None:
    ns = _helpers()
    cache = torch.randn(100, 2, 8)
    view = ns["_agent_kv_rows"](cache, torch.arange(10, 40))
    assert view.data_ptr() == cache[10].data_ptr() and torch.equal(view, cache[10:40])
    tokens = torch.tensor([5, 7, 6, 8])  # first/last look contiguous, the order is not
    assert torch.equal(ns["_agent_kv_rows"](cache, tokens), cache[tokens])


def _installed_text() -> str:
    patch = _patch()
    path = patch.backend_path()
    if path is None:
        pytest.skip("sglang is not installed")
    return str(patch.unpatch_text(path.read_text()))


def test_patch_is_idempotent_and_reversible() -> None:
    patch = _patch()
    text = _installed_text()
    if patch.PREREQUISITE not in text:
        pytest.skip("the installed SGLang lacks sglang_extend_attention.py")
    once = patch.patch_text(text)
    assert patch.MARKER in once and once != text
    assert patch.patch_text(once) == once
    assert patch.unpatch_text(once) == text
    compile(once, "torch_native_backend.py", "exec")


def test_patch_is_loud_when_the_code_differs() -> None:
    patch = _patch()
    with pytest.raises(patch.PatchError, match="must be applied first"):
        patch.patch_text("import torch\n")
    with pytest.raises(patch.PatchError, match="expected"):
        patch.patch_text(patch.PREREQUISITE + "\n")


@pytest.mark.engine
def test_greedy_output_identical_warm_vs_cold(tmp_path: Path) -> None:
    """A real engine running the patched backend (an overlay: the installed SGLang is
    not touched): 30 greedy tokens after a 1,500-token prompt, cold and warm."""
    from benchmarks import patch_ab

    files = patch_ab.variants(tmp_path)
    patch_ab.install_overlay(tmp_path)
    conn, proc = patch_ab.start_engine(files["B"], "tiny", 4096, 4096, "1")
    ids = [(i * 7919) % 3000 + 10 for i in range(1500)]
    try:
        conn.send("flush")
        conn.recv()
        conn.send((ids, 30))
        _, cold_cached, cold = conn.recv()
        conn.send("flush")
        conn.recv()
        conn.send((ids[:1200], 1))  # the previous call leaves 1,200 tokens of KV
        conn.recv()
        conn.send((ids, 30))
        _, warm_cached, warm = conn.recv()
    finally:
        patch_ab.stop_engine(conn, proc)
    assert (tmp_path / "backend_b.py.hits").exists()  # the patched backend was loaded
    assert cold_cached == 0 and warm_cached >= 1200
    assert warm == cold and len(warm) == 30
