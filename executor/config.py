"""``ExecutorConfig``: everything an :class:`~executor.runtime.Executor` is set up with.

    Executor(ExecutorConfig(model="tiny", replicas=2, sandbox="docker"))
    Executor(model="tiny", replicas=2, sandbox="docker")   # the same, as keywords

Its fields are plain data (a CLI, a service or a file can build it), except
where a caller hands over a live object it owns: a ``Journal``, a ``Telemetry``
or a ``SandboxBackend`` (the executor then neither creates nor closes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from executor.agent import DEFAULT_MODEL
from executor.errors import ExecutorError, validation_problems
from executor.fleet.config import ReplicaConfig
from executor.fleet.health import HealthConfig
from executor.loop.journal import Journal
from executor.telemetry import Telemetry, TelemetryExporter
from scheduler import SchedulerConfig
from tools.sandbox import SandboxBackend
from tools.web.policy import WebPolicy


class ExecutorConfig(BaseModel):
    model_config = ConfigDict(
        extra="forbid", arbitrary_types_allowed=True, frozen=True, populate_by_name=True
    )

    model: str = DEFAULT_MODEL
    """The model every replica serves (a registered name or a local HF folder)."""
    replicas: int = Field(1, ge=1)
    """Replicas to start (ignored with an existing ``pool``)."""
    replica: ReplicaConfig | None = Field(
        None, validation_alias=AliasChoices("replica", "replica_config")
    )
    """The shape of each replica (KV pool, CPUs/GPUs, engine arguments); its ``model``
    is replaced by ``model``. (``replica_config=``, its earlier name, is accepted.)"""
    address: str | None = None
    """A Ray cluster to join (default: start an embedded local one)."""
    replica_ids: list[str] | None = None
    """With an existing pool: serve only on these of its replicas."""
    sandbox: str | SandboxBackend = "bwrap"
    """Where tools run: ``bwrap``, ``docker``, ``local`` (no isolation), or a backend."""
    journal: Journal | Path | str | None = None
    """The journal file (default: ``$EXECUTOR_HOME/journal.sqlite``), or an open Journal."""
    telemetry: Telemetry | TelemetryExporter | None = None
    """An exporter name or a Telemetry (default: ``$EXECUTOR_TELEMETRY``, else none)."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    web: WebPolicy = Field(default_factory=WebPolicy)
    """Which hosts ``web_fetch`` may reach."""
    kv_reserve_tokens: int | None = Field(None, ge=1)
    """KV each task is admitted with (default: with admission v2, its first prompt plus
    the expected growth; with v1, its expected peak history). After its first call
    the admission policy reserves by use (v2) or keeps at least this much (v1)."""
    health: HealthConfig | None = Field(default_factory=HealthConfig)
    """How hung replicas are found (None: only deaths a call runs into)."""
    heal: bool = True
    """Start a new replica in place of each dead one."""
    progress: bool = False
    """Print the replicas' start-up on stderr (the CLI turns it on; the library is quiet)."""

    @classmethod
    def build(cls, base: ExecutorConfig | None = None, **options: Any) -> ExecutorConfig:
        """``base`` with ``options`` over it, validated; a clear error names bad fields."""
        try:
            if base is None:
                return cls(**options)
            return cls(**{**dict(base), **options}) if options else base
        except ValidationError as exc:
            problems = validation_problems(exc, "config")
            raise ExecutorError(f"invalid executor options: {problems}") from None

    def replica_config(self) -> ReplicaConfig:
        cfg = self.replica or ReplicaConfig(model=self.model)
        return cfg if cfg.model == self.model else cfg.model_copy(update={"model": self.model})
