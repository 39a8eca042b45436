"""Resolve a model name or path to a local Hugging Face folder, building it once.

Every name resolves to a directory SGLang can load (config.json, weights,
tokenizer), built or converted once into the cache (see :mod:`.registry`) and
reused after. A model built by an older recipe is rebuilt.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from executor.models.gguf import CONVERTER_VERSION, convert_gguf
from executor.models.registry import (
    PROVENANCE_FILE,
    REGISTRY,
    ModelError,
    ModelSpec,
    cache_dir,
    read_provenance,
)
from executor.models.tiny import BUILDER_VERSION, build_tiny


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
            provenance = build_tiny(tmp)
        else:
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
        return f"tiny_model v{BUILDER_VERSION}"
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


def describe() -> list[dict[str, Any]]:
    """One row per registered model: whether it is in the cache, and its provenance."""
    rows: list[dict[str, Any]] = []
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
