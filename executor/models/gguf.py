"""Convert a GGUF model (one file, or parts to concatenate in order) to an fp32 HF folder.

transformers loads GGUF with ``from_pretrained(dir, gguf_file=...)`` (dequantizing
to fp32), but refuses ``save_pretrained`` on such a model; copying its weights into
a fresh model built from the same config gives a plain folder SGLang loads.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from executor.models.registry import sha256_file

log = logging.getLogger(__name__)

CONVERTER_VERSION = 2  # bump to rebuild cached conversions


def _join_parts(parts: list[Path], out: Path) -> Path:
    if len(parts) == 1:
        return parts[0]
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, dst, 16 << 20)
    return out


def convert_gguf(parts: list[Path], dest: Path) -> dict[str, object]:
    """Write the HF folder into ``dest``; return provenance (sha256 of the GGUF)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    scratch = dest / "_gguf"
    scratch.mkdir()
    try:
        gguf = _join_parts(parts, scratch / "model.gguf")
        digest = sha256_file(gguf)
        log.info("converting %s (%d MiB) to fp32; once", gguf.name, gguf.stat().st_size >> 20)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = loaded.config
        # The loaded config still says "gguf"; SGLang would then expect quantized weights.
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        del loaded
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return {
        "source": "gguf",
        "recipe": f"gguf_convert v{CONVERTER_VERSION}",
        "gguf_files": [p.name for p in parts],
        "gguf_sha256": digest,
        "converted_with": f"transformers {transformers.__version__}",
        "dtype": "float32",
    }
