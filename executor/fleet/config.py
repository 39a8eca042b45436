"""How a replica is shaped: its model, its KV pool, its resources, its engine arguments."""

from __future__ import annotations

import math
import shutil
import subprocess
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Ray's built-in resources, declared through their own fields (num_cpus, num_gpus).
_BUILTIN_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}


def cuda_available() -> bool:
    """True where an NVIDIA driver answers (decides the engine's device in 'auto')."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class ReplicaConfig(BaseModel):
    """One replica: a Ray actor hosting one sglang.Engine with a bounded KV pool."""

    model_config = ConfigDict(extra="forbid")

    model: str = "tiny"
    # Always bounded: on a CPU an unbounded pool took 7.6 GB and the scheduler 8.7 GB.
    max_total_tokens: int = Field(16384, ge=256)
    context_length: int | None = Field(None, ge=256)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tp_size: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float | None = Field(None, ge=0)  # None: tp_size on CUDA, 0 on CPU
    # Custom Ray resources the replica's actor needs, e.g. {"node_a": 0.5}: it is placed
    # only on a node that declares them (``ray start --resources '{"node_a": 1}'``).
    resources: dict[str, float] = Field(default_factory=dict)
    cpu_threads: int | None = Field(None, ge=1)  # torch threads of the engine; None: num_cpus
    random_seed: int = 0
    log_level: str = "error"
    engine_args: dict[str, Any] = Field(default_factory=dict)  # passed to sglang.Engine as is
    release_in_engine: bool = False
    """Each task's calls carry a session (SGLang's session radix cache): when the
    scheduler releases a task's KV, its session is closed and the engine evicts that
    history before any retained one (measured on the CPU backend: README, "Release in
    the engine"). Off: a release is bookkeeping and the engine's LRU decides."""
    session_idle_s: float = Field(900.0, gt=0)
    """With ``release_in_engine``: a session no release reached (its driver died) is
    closed after this long without a call."""

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if not name:
                raise ValueError("a resource needs a name")
            if name in _BUILTIN_RESOURCES:
                raise ValueError(f"{name!r} is not a custom resource: use num_cpus / num_gpus")
            if not (math.isfinite(amount) and amount >= 0):
                raise ValueError(f"resource {name!r} must be a number >= 0, got {amount}")
            if amount > 1 and not amount.is_integer():  # Ray's own rule, caught before it
                raise ValueError(f"resource {name!r}: amounts above 1 must be whole, got {amount}")
        return value

    def resolved_device(self) -> Literal["cpu", "cuda"]:
        if self.device == "auto":
            return "cuda" if cuda_available() else "cpu"
        return self.device

    def resolved_num_gpus(self) -> float:
        if self.num_gpus is not None:
            return self.num_gpus
        return float(self.tp_size) if self.resolved_device() == "cuda" else 0.0

    def threads(self) -> int:
        return self.cpu_threads or max(1, int(self.num_cpus))

    def engine_kwargs(self, model_path: str, device: str, port: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model_path": model_path,
            "device": device,
            "tp_size": self.tp_size,
            "max_total_tokens": self.max_total_tokens,
            "random_seed": self.random_seed,
            "log_level": self.log_level,
            "port": port,
            # Compact JSON under a schema: no free whitespace to wander in (a weak or
            # random-weight model otherwise fills max_new_tokens with blanks).
            "constrained_json_disable_any_whitespace": True,
        }
        if self.context_length is not None:
            kwargs["context_length"] = self.context_length
        if device == "cpu":
            # The CPU recipe (see infra/): torch-native attention, no CUDA graphs,
            # fp32 weights (bf16 matmuls are slow on CPUs without AMX).
            # An idle scheduler busy-polls a whole core unless it sleeps on idle: on a
            # 2-core host, two idle replicas would leave nothing for the busy one.
            kwargs.update(
                attention_backend="torch_native",
                disable_cuda_graph=True,
                dtype="float32",
                sleep_on_idle=True,
            )
        if self.release_in_engine:
            kwargs["enable_session_radix_cache"] = True
        kwargs.update(self.engine_args)
        return kwargs
