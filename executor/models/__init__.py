"""Models: the registry of named models (``tiny``, ``smollm2-135m``,
``qwen2.5-coder-0.5b``), their builders (:mod:`.tiny`, :mod:`.gguf`) and the
resolver to a local Hugging Face folder. Imports point one way:
``resolve -> {tiny, gguf} -> registry``.
"""

from executor.models.registry import (
    PROVENANCE_FILE,
    REGISTRY,
    GGUFSource,
    ModelError,
    ModelSpec,
    cache_dir,
    read_provenance,
    sha256_file,
)
from executor.models.resolve import describe, gguf_files, recipe, resolve

__all__ = [
    "PROVENANCE_FILE",
    "REGISTRY",
    "GGUFSource",
    "ModelError",
    "ModelSpec",
    "cache_dir",
    "describe",
    "gguf_files",
    "read_provenance",
    "recipe",
    "resolve",
    "sha256_file",
]
