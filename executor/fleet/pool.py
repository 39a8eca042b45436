"""A pool of replicas on a Ray cluster: start N, hand out handles, stop what it started.

    with ReplicaPool(replicas=2, config=ReplicaConfig(model="tiny")) as pool:
        result = pool["r0"].generate({"text": "hello"})

By default the pool starts an embedded local Ray cluster; pass ``address=`` to
join an existing one. Each replica declares its resources (CPUs here; GPUs and
tensor parallelism on GPU hosts), so Ray places it where they are.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import ray
from rich.console import Console

from executor.errors import ExecutorError
from executor.fleet.actor import ReplicaActor
from executor.fleet.cluster import RayConnection, connect
from executor.fleet.config import ReplicaConfig
from executor.fleet.handle import ReplicaHandle
from executor.models import resolve

NAMESPACE = "agent-executor"
# Engine warnings that say nothing actionable on a CPU host (GGUF/Triton availability).
_ENGINE_ENV = {"PYTHONWARNINGS": "ignore::UserWarning", "TOKENIZERS_PARALLELISM": "false"}


class ReplicaPool:
    def __init__(
        self,
        replicas: int = 1,
        config: ReplicaConfig | None = None,
        address: str | None = None,
        progress: bool = False,
        start_timeout_s: float = 600.0,
    ) -> None:
        if replicas < 1:
            raise ValueError("a pool needs at least one replica")
        self.size = replicas
        self.config = config or ReplicaConfig()
        self.address = address
        self.start_timeout_s = start_timeout_s
        self._console = Console(stderr=True, quiet=not progress)
        self._connection: RayConnection | None = None
        self._handles: dict[str, ReplicaHandle] = {}
        self._next_index = 0
        self._owns_actors = True
        # Actors are named (unique per pool) so that another driver can attach to them.
        self.pool_id = uuid.uuid4().hex[:8]

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> ReplicaPool:
        model_path = str(resolve(self.config.model))  # build/convert once, in the driver
        self._connection = connect(self.address)
        self._check_resources()
        self._console.print(
            f"[bold]starting {self.size} replica(s)[/] of {self.config.model} "
            f"(KV pool {self.config.max_total_tokens} tokens each)"
        )
        try:
            self.add(self.size, model_path)
        except BaseException:
            self.shutdown()
            raise
        return self

    def _check_resources(self) -> None:
        need = self.size * self.config.num_cpus
        have = ray.cluster_resources().get("CPU", 0.0)
        if need > have:
            raise ExecutorError(
                f"{self.size} replica(s) x {self.config.num_cpus} CPU need {need:g} CPUs but the "
                f"Ray cluster has {have:g}; lower num_cpus per replica or add nodes"
            )

    def add(self, count: int, model_path: str | None = None) -> list[str]:
        """Start ``count`` more replicas and wait until they serve."""
        model_path = model_path or str(resolve(self.config.model))
        cfg = self.config
        actor_cls = ray.remote(ReplicaActor)
        new: dict[str, Any] = {}
        for _ in range(count):
            rid = f"r{self._next_index}"
            self._next_index += 1
            env = dict(_ENGINE_ENV, OMP_NUM_THREADS=str(cfg.threads()))
            new[rid] = actor_cls.options(
                name=self.actor_name(rid),
                namespace=NAMESPACE,
                num_cpus=cfg.num_cpus,
                num_gpus=cfg.resolved_num_gpus(),
                max_concurrency=1000,
                runtime_env={"env_vars": env},
            ).remote(rid, cfg, model_path)
        started = time.perf_counter()
        pending = {actor.ready.remote(): rid for rid, actor in new.items()}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=self.start_timeout_s)
                if not done:
                    raise ExecutorError(
                        f"replicas {sorted(pending.values())} not ready after "
                        f"{self.start_timeout_s:.0f} s"
                    )
                rid = pending.pop(done[0])
                info = ray.get(done[0])
                self._handles[rid] = ReplicaHandle(rid, new[rid], info)
                waited = time.perf_counter() - started
                self._console.print(
                    f"  replica {rid} ready in {waited:.1f} s (engine {info['start_s']:.1f} s, "
                    f"KV pool {info['max_total_num_tokens']} tokens)"
                )
        except ray.exceptions.RayError as exc:
            for actor in new.values():
                ray.kill(actor)
            raise ExecutorError(f"a replica failed to start: {exc}") from exc
        return list(new)

    def actor_name(self, replica_id: str) -> str:
        return f"aex-{self.pool_id}-{replica_id}"

    @classmethod
    def attach(cls, address: str, actor_names: list[str]) -> ReplicaPool:
        """Serve on replicas another driver started on the cluster at ``address`` (their
        ``actor_name``s). Closing this pool leaves them running: they are not its own."""
        pool = cls()
        pool._owns_actors = False
        pool._connection = connect(address)
        try:
            for name in actor_names:
                actor = ray.get_actor(name, namespace=NAMESPACE)
                info = ray.get(actor.ready.remote(), timeout=60)
                pool._handles[info["replica_id"]] = ReplicaHandle(info["replica_id"], actor, info)
        except (ValueError, ray.exceptions.RayError) as exc:
            pool.shutdown()
            raise ExecutorError(f"cannot attach to replica actors {actor_names}: {exc}") from None
        pool.size = len(pool._handles)
        return pool

    def remove(self, replica_id: str) -> None:
        """Stop the replica: its engine shuts down, then its actor goes (a no-op if gone)."""
        handle = self._handles.pop(replica_id, None)
        if handle is None or not self._owns_actors:
            return
        with contextlib.suppress(ray.exceptions.RayError):  # already dead: kill is enough
            ray.get(handle.actor.shutdown.remote(), timeout=60)
        ray.kill(handle.actor)

    def discard(self, replica_id: str) -> None:
        """Kill a dead or hung replica's actor at once (its engine processes die with
        it); a no-op if it is gone already."""
        handle = self._handles.pop(replica_id, None)
        if handle is not None and self._owns_actors:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.kill(handle.actor, no_restart=True)

    def shutdown(self) -> None:
        for rid in list(self._handles):
            self.remove(rid)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> ReplicaPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- access -----------------------------------------------------------------

    def __getitem__(self, replica_id: str) -> ReplicaHandle:
        try:
            return self._handles[replica_id]
        except KeyError:
            raise KeyError(f"no replica {replica_id!r}; have {sorted(self._handles)}") from None

    def __iter__(self) -> Iterator[ReplicaHandle]:
        return iter(list(self._handles.values()))

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def handles(self) -> dict[str, ReplicaHandle]:
        """The live replicas by id (the pool's own dict: replicas added later appear in it)."""
        return self._handles

    @property
    def ids(self) -> list[str]:
        return list(self._handles)
