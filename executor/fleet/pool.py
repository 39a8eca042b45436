"""A pool of replicas on a Ray cluster: start N, hand out handles, stop what it started.

    with ReplicaPool(replicas=2, config=ReplicaConfig(model="tiny")) as pool:
        result = pool["r0"].generate({"text": "hello"})

By default the pool starts an embedded local Ray cluster; pass ``address=`` to
join an existing one. Each replica declares its resources (CPUs here; GPUs and
tensor parallelism on GPU hosts; custom node resources from
``ReplicaConfig.resources``), so Ray places it where they are. ``add`` can give
new replicas another shape than the pool's (e.g. pinned to one node); a
replacement for a dead replica takes the pool's own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
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
# Starts of one replica whose actor died of something else than its own __init__.
START_ATTEMPTS = 3
log = logging.getLogger(__name__)
# Engine warnings that say nothing actionable on a CPU host (GGUF/Triton availability).
_ENGINE_ENV = {"PYTHONWARNINGS": "ignore::UserWarning", "TOKENIZERS_PARALLELISM": "false"}


_FIELD = {"CPU": "num_cpus", "GPU": "num_gpus"}  # the ReplicaConfig field of a resource


def _needs(cfg: ReplicaConfig) -> dict[str, float]:
    """What one replica of ``cfg`` asks Ray for (zero amounts left out)."""
    needs = {"CPU": cfg.num_cpus, "GPU": cfg.resolved_num_gpus(), **cfg.resources}
    return {name: amount for name, amount in needs.items() if amount > 0}


def _describe(resources: dict[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if "memory" not in k and not k.startswith("node:")}
    return ", ".join(f"{k}={v:g}" for k, v in sorted(shown.items())) or "nothing"


class ReplicaPool:
    def __init__(
        self,
        replicas: int = 1,
        config: ReplicaConfig | None = None,
        address: str | None = None,
        progress: bool = False,
        start_timeout_s: float = 600.0,
    ) -> None:
        if replicas < 0:
            raise ValueError("a pool cannot have a negative number of replicas")
        self.size = replicas
        self.config = config or ReplicaConfig()
        self.address = address
        self.start_timeout_s = start_timeout_s
        self._console = Console(stderr=True, quiet=not progress)
        self._connection: RayConnection | None = None
        self._handles: dict[str, ReplicaHandle] = {}
        self._next_index = 0
        self._index_lock = threading.Lock()  # add() may run in several threads (healing)
        self._names: dict[str, str] = {}  # actor names other than the default (restarts)
        self._owns_actors = True
        # Actors are named (unique per pool) so that another driver can attach to them.
        self.pool_id = uuid.uuid4().hex[:8]

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> ReplicaPool:
        model_path = str(resolve(self.config.model))  # build/convert once, in the driver
        self._connection = connect(self.address)
        if not self.size:  # connected only: replicas come with add()
            return self
        try:
            self.check_resources([self.config] * self.size)
            self._console.print(
                f"[bold]starting {self.size} replica(s)[/] of {self.config.model} "
                f"(KV pool {self.config.max_total_tokens} tokens each)"
            )
            self.add(self.size, model_path)
        except BaseException:
            self.shutdown()
            raise
        return self

    def check_resources(self, configs: Sequence[ReplicaConfig]) -> None:
        """Refuse at once replicas the cluster can never hold (Ray would keep them
        pending forever): more of a resource than all live nodes have together, or one
        replica's needs that no single node has."""
        if not configs:
            return
        have = ray.cluster_resources()
        total: dict[str, float] = {}
        for cfg in configs:
            for name, amount in _needs(cfg).items():
                total[name] = total.get(name, 0.0) + amount
        for name, need in total.items():
            if need > have.get(name, 0.0) + 1e-9:
                per = ", ".join(sorted({f"{_needs(c).get(name, 0):g}" for c in configs}))
                raise ExecutorError(
                    f"{len(configs)} replica(s) x {per} {name} need {need:g} {name} but the "
                    f"Ray cluster has {have.get(name, 0.0):g}; lower {_FIELD.get(name, name)} "
                    "per replica or add nodes"
                )
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        for cfg in configs:
            needs = _needs(cfg)
            if not any(all(res.get(k, 0.0) + 1e-9 >= v for k, v in needs.items()) for res in nodes):
                shape = ", ".join(f"{k}={v:g}" for k, v in needs.items())
                raise ExecutorError(
                    f"no node of the Ray cluster has {shape} for one replica; the nodes have "
                    + "; ".join(_describe(res) for res in nodes)
                )

    def add(
        self, count: int, model_path: str | None = None, *, config: ReplicaConfig | None = None
    ) -> list[str]:
        """Start ``count`` more replicas (of ``config``, default the pool's) and wait
        until they serve."""
        return self.add_each([config or self.config] * count, model_path)

    def add_each(
        self, configs: Sequence[ReplicaConfig], model_path: str | None = None
    ) -> list[str]:
        """Start one replica per config, all at once, and wait until they serve. Each
        config must serve the pool's model (its shape may differ: resources, KV pool)."""
        wrong = {c.model for c in configs} - {self.config.model}
        if wrong:
            raise ExecutorError(
                f"this pool serves {self.config.model!r}; a replica of {sorted(wrong)} "
                "belongs in another pool"
            )
        model_path = model_path or str(resolve(self.config.model))
        shapes: dict[str, ReplicaConfig] = {}
        for cfg in configs:
            with self._index_lock:
                rid = f"r{self._next_index}"
                self._next_index += 1
            shapes[rid] = cfg
        new = {rid: self._create(rid, cfg, model_path) for rid, cfg in shapes.items()}
        attempts = dict.fromkeys(new, 1)
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
                try:
                    info = ray.get(done[0])
                except ray.exceptions.RayActorError as exc:
                    # Not its own fault (its node died, its worker crashed): once more. Ray
                    # may place a new actor on a node that died until its health check
                    # says so (seconds), and then cancels the actor instead of moving it.
                    if exc.actor_init_failed or attempts[rid] >= START_ATTEMPTS:
                        raise
                    log.warning(
                        "replica %s died before it served (%s); starting it again",
                        rid,
                        str(exc).splitlines()[-1],
                    )
                    attempts[rid] += 1
                    # a dead actor keeps its name: the new one gets another
                    self._names[rid] = f"{self._default_name(rid)}-{attempts[rid]}"
                    new[rid] = self._create(rid, shapes[rid], model_path)
                    pending[new[rid].ready.remote()] = rid
                    continue
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

    def _create(self, replica_id: str, cfg: ReplicaConfig, model_path: str) -> Any:
        env = dict(_ENGINE_ENV, OMP_NUM_THREADS=str(cfg.threads()))
        return (
            ray.remote(ReplicaActor)
            .options(
                name=self.actor_name(replica_id),
                namespace=NAMESPACE,
                num_cpus=cfg.num_cpus,
                num_gpus=cfg.resolved_num_gpus(),
                resources=dict(cfg.resources),
                max_concurrency=1000,
                runtime_env={"env_vars": env},
            )
            .remote(replica_id, cfg, model_path)
        )

    def actor_name(self, replica_id: str) -> str:
        """The replica's actor name on the cluster (for ``attach``)."""
        return self._names.get(replica_id) or self._default_name(replica_id)

    def _default_name(self, replica_id: str) -> str:
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
