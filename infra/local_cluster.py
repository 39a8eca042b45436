"""A real multi-node Ray cluster on one machine: a head and N worker nodes, each a
``ray start --block`` process of its own (its own raylet, object store and agents),
for tests, chaos and trying a cluster out before there is one.

    with LocalCluster(workers=2) as cluster:      # nodes "head", "node_a", "node_b"
        pool = ReplicaPool(config=ReplicaConfig(resources={"node_a": 0.5}),
                           address=cluster.address)
        ...
        cluster.kill_node("node_a")                # SIGKILL: the node and all on it
        cluster.restart_node("node_a")             # a new node with the same resources

Each worker declares a custom resource named after it (``{"node_a": 1}``), so a
replica can be pinned to it through ``ReplicaConfig.resources``. The head has no
CPU by default: replicas go to the workers, the driver connects to the head
(Ray's driver prefers the head among several nodes of one host).

Every node runs in a session (and process group) of its own, so one ``killpg``
takes the node's raylet, its agents, its workers (the replica actors) and what
they started (the SGLang engine's scheduler and detokenizer); a process that left
the group is found by walking the node's descendants and killed too. Only this
cluster's own processes are ever signalled (by their group and descendants, never
by name: ``ray stop`` would kill every Ray of the machine). Everything lives under
one short private directory (Ray's socket paths must stay under ~107 characters),
removed by ``stop``. ``infra/ray_cluster.py`` is the command line.

Token authentication (on by default in Ray 2.60) is turned off for the nodes
(``RAY_AUTH_MODE=disabled``): a driver must run with the same setting (``ENV``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

# The environment of every node and of every driver that joins them.
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
STATE_FILE = "cluster.json"
MAX_WORKERS = len(string.ascii_lowercase)
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # per node; Ray's default is 30% of RAM each


class ClusterError(RuntimeError):
    """The cluster (or one of its nodes) could not be started, found or stopped."""


def worker_names(count: int) -> list[str]:
    return [f"node_{c}" for c in string.ascii_lowercase[:count]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NodeSpec:
    name: str
    head: bool
    num_cpus: float
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)
    pgid: int | None = None  # the node's process group (= its `ray start` pid) while it runs


@dataclass
class NodeStatus:
    name: str
    node_id: str
    alive: bool
    head: bool
    resources: dict[str, float]


def _validate(workers: int, head_cpus: float, worker_cpus: float, worker_gpus: float) -> None:
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")
    if head_cpus < 0 or worker_cpus < 0 or worker_gpus < 0:
        raise ValueError("CPU and GPU counts must be >= 0")
    if worker_cpus == 0 and worker_gpus == 0:
        raise ValueError("worker nodes with no CPU and no GPU could not host a replica")


class LocalCluster:
    def __init__(
        self,
        workers: int = 2,
        *,
        head_cpus: float = 0,
        worker_cpus: float = 1,
        worker_gpus: float = 0,
        port: int | None = None,
        root: str | Path | None = None,
    ) -> None:
        """``root``: the directory for the nodes' temp dirs and logs (default: a new
        one under /tmp; removed by ``stop`` either way)."""
        _validate(workers, head_cpus, worker_cpus, worker_gpus)
        self.port = port or free_port()
        self._root = Path(root) if root is not None else None
        self.nodes: dict[str, NodeSpec] = {"head": NodeSpec("head", True, head_cpus)}
        for name in worker_names(workers):
            self.nodes[name] = NodeSpec(name, False, worker_cpus, worker_gpus, {name: 1.0})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.start_s: float | None = None

    @property
    def address(self) -> str:
        """What a driver passes to ``ray.init`` / ``ReplicaPool(address=...)``."""
        return f"127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        if self._root is None:
            raise ClusterError("the cluster is not started")
        return self._root

    @property
    def workers(self) -> list[str]:
        return [n for n, spec in self.nodes.items() if not spec.head]

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> LocalCluster:
        """Start the head, then the workers; return when every node is registered."""
        started = time.perf_counter()
        if self._root is None:
            # Short: the nodes' socket paths live beneath it (limit ~107 characters).
            self._root = Path(tempfile.mkdtemp(prefix="aexc-", dir="/tmp"))
        self._root.mkdir(parents=True, exist_ok=True)
        try:
            for name in self.nodes:
                self._launch(name)
                if name == "head":
                    self.wait_for(["head"], timeout_s)
            self.wait_for(list(self.nodes), timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - started
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        """Stop every node of this cluster, then remove its directory. The nodes get
        SIGTERM, then SIGKILL after ``grace_s`` (a graceful Ray stop takes 10-30 s, and
        a test cluster keeps nothing worth it)."""
        running = [n for n, spec in self.nodes.items() if spec.pgid is not None]
        procs = {name: self.processes(name) for name in running}
        for name in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nodes[name].pgid or 0, signal.SIGTERM)
        psutil.wait_procs([p for ps in procs.values() for p in ps], timeout=grace_s)
        for name in running:
            self._kill(name, 30.0)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- chaos ----------------------------------------------------------------------

    def processes(self, name: str) -> list[psutil.Process]:
        """The node's processes: its session (the raylet puts each worker in a process
        group of its own, inside the node's session) and every descendant of it (a
        process that started a session of its own is still a descendant)."""
        sid = self.nodes[name].pgid  # started with start_new_session: pid = pgid = sid
        if sid is None:
            return []
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
        for proc in list(found.values()):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    if child.status() != psutil.STATUS_ZOMBIE:
                        found.setdefault(child.pid, child)
        return sorted(found.values(), key=lambda p: p.pid)

    def kill_node(self, name: str, timeout_s: float = 30.0) -> list[int]:
        """SIGKILL the whole node at once: its process group (the ``ray start``
        process, the raylet, its agents), the group of each worker (a replica's actor
        and its engine's processes), then any other descendant. Returns the pids
        killed, once they are all gone."""
        if self.nodes[name].head:
            raise ClusterError("kill a worker node; the head holds the cluster's GCS")
        return self._kill(name, timeout_s)

    def restart_node(self, name: str, timeout_s: float = 120.0) -> None:
        """Start a (new) node with the resources of ``name``; return when it is
        registered. A node still running is killed first."""
        spec = self.nodes[name]
        if spec.pgid is not None and self.processes(name):
            self._kill(name, 30.0)
        self._launch(name)
        self.wait_for([name], timeout_s)

    # -- status -----------------------------------------------------------------------

    def status(self, timeout_s: float = 10.0) -> list[NodeStatus]:
        """The cluster's nodes as its GCS sees them (Ray notices a dead node only
        after its own health checks, seconds later)."""
        # pinned Ray 2.60: what `ray status` uses (absent from its type stubs)
        from ray._raylet import GcsClient  # type: ignore[attr-defined]

        infos = GcsClient(address=self.address).get_all_node_info(timeout=timeout_s).values()
        names = set(self.nodes)
        out = []
        for info in infos:
            resources = dict(info.resources_total)
            mine = [n for n in resources if n in names]
            name = "head" if info.is_head_node else (mine[0] if mine else "?")
            alive = info.state == 0  # GcsNodeInfo.ALIVE
            out.append(NodeStatus(name, info.node_id.hex(), alive, info.is_head_node, resources))
        return out

    def wait_for(self, names: list[str], timeout_s: float) -> None:
        """Until every node in ``names`` is registered and alive."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while True:
            for name in names:
                self._check_running(name)
            try:
                alive = {s.name for s in self.status(timeout_s=5) if s.alive}
                if set(names) <= alive:
                    return
            except Exception as exc:  # the GCS not up yet
                last = exc
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"nodes {sorted(set(names))} not registered after {timeout_s:g} s"
                    + (f" ({last})" if last else "")
                )
            time.sleep(0.5)

    # -- the CLI's state file -------------------------------------------------------

    def save(self) -> Path:
        path = self.root / STATE_FILE
        state = {"port": self.port, "nodes": [asdict(s) for s in self.nodes.values()]}
        path.write_text(json.dumps(state, indent=1))
        return path

    @classmethod
    def load(cls, root: str | Path) -> LocalCluster:
        """The cluster a ``start`` (e.g. of the CLI) left running under ``root``."""
        path = Path(root) / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ClusterError(f"no local cluster at {root} ({exc})") from None
        specs = [NodeSpec(**n) for n in state["nodes"]]
        cluster = cls.__new__(cls)
        cluster.port = int(state["port"])
        cluster._root = Path(root)
        cluster.nodes = {s.name: s for s in specs}
        cluster._procs = {}
        cluster.start_s = None
        for spec in specs:  # a session id reused by someone else's processes is not ours
            if spec.pgid is not None and not any(
                str(cluster.root) in " ".join(_cmdline(p)) for p in cluster.processes(spec.name)
            ):
                spec.pgid = None
        return cluster

    # -- internals ----------------------------------------------------------------------

    def _command(self, spec: NodeSpec) -> list[str]:
        ray_bin = str(Path(sys.executable).with_name("ray"))
        common = [
            "--block",
            "--disable-usage-stats",
            "--num-cpus",
            f"{spec.num_cpus:g}",
            "--num-gpus",
            f"{spec.num_gpus:g}",
            "--object-store-memory",
            str(OBJECT_STORE_BYTES),
            # Several nodes on one host: no fixed ports to collide on.
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--temp-dir",
            str(self.root / spec.name[-1]),  # short: "d" for head, "a", ...
        ]
        if spec.resources:
            common += ["--resources", json.dumps(spec.resources)]
        if spec.head:
            return [
                ray_bin,
                "start",
                "--head",
                "--port",
                str(self.port),
                "--include-dashboard",
                "false",
                "--ray-client-server-port",
                str(free_port()),
                *common,
            ]
        return [ray_bin, "start", "--address", self.address, *common]

    def _launch(self, name: str) -> None:
        spec = self.nodes[name]
        log = (self.root / f"{name}.log").open("ab")
        with log:
            proc = subprocess.Popen(
                self._command(spec),
                env={**os.environ, **ENV},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs[name] = proc
        spec.pgid = proc.pid

    def _check_running(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            tail = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
            raise ClusterError(f"node {name} exited ({proc.returncode}):\n{tail}")

    def _kill(self, name: str, timeout_s: float) -> list[int]:
        spec = self.nodes[name]
        procs = self.processes(name)
        groups = {spec.pgid} if spec.pgid is not None else set()
        for proc in procs:
            with contextlib.suppress(OSError):
                groups.add(os.getpgid(proc.pid))
        for pgid in sorted(groups, key=lambda g: g != spec.pgid):  # the node's own first
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for proc in procs:  # any left (a process that changed its group since)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self._reap(name)
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        alive = [p for p in alive if _running(p)]
        if alive:
            raise ClusterError(f"node {name}: processes {[p.pid for p in alive]} survived SIGKILL")
        spec.pgid = None
        return [p.pid for p in procs]

    def _reap(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(cluster: LocalCluster) -> dict[str, Any]:
    """The cluster as plain data (the CLI's ``status --json``)."""
    try:
        nodes = [asdict(s) for s in cluster.status()]
    except Exception as exc:  # noqa: BLE001 - the GCS is gone: say so
        nodes = [{"error": str(exc)}]
    return {"address": cluster.address, "root": str(cluster.root), "nodes": nodes}
