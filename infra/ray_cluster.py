"""A multi-node Ray cluster on one machine (a head and N worker nodes, each its own
``ray start``), for tests, chaos and trying the executor on a cluster:

    eval "$(python -m infra.ray_cluster start --workers 2)"   # prints the export line
    python -m infra.ray_cluster status                          # the nodes as Ray sees them
    python -m infra.ray_cluster kill-node node_a                # SIGKILL the whole node
    python -m infra.ray_cluster restart-node node_a
    python -m infra.ray_cluster stop                            # stops only this cluster

``start`` prints ``export AEX_RAY_CLUSTER=DIR AEX_RAY_ADDRESS=127.0.0.1:PORT
RAY_AUTH_MODE=disabled`` on stdout (everything else on stderr); the other commands
find the cluster through ``--dir`` or ``$AEX_RAY_CLUSTER``. A driver joins with
``ReplicaPool(address=...)`` / ``Executor(address=...)`` and ``RAY_AUTH_MODE=disabled``
in its environment. Worker ``node_X`` declares the custom resource ``{"node_X": 1}``
(pin a replica there with ``ReplicaConfig(resources={"node_X": 0.5})``).
The library is ``infra.local_cluster``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file, not with -m from the repository
    sys.path.insert(0, str(ROOT))

from infra.local_cluster import (  # noqa: E402
    MAX_WORKERS,
    ClusterError,
    LocalCluster,
    describe,
)

DIR_ENV = "AEX_RAY_CLUSTER"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infra.ray_cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start a head and N worker nodes; print the export line")
    start.add_argument("--workers", type=int, default=2, help=f"1-{MAX_WORKERS} (default 2)")
    start.add_argument("--head-cpus", type=float, default=0, help="CPUs of the head (default 0)")
    start.add_argument("--worker-cpus", type=float, default=1, help="per worker (default 1)")
    start.add_argument("--worker-gpus", type=float, default=0, help="per worker (default 0)")
    start.add_argument("--port", type=int, default=None, help="the head's port (default: free)")
    start.add_argument("--dir", default=None, help="the cluster's directory (default: /tmp/aexc-*)")
    start.add_argument("--timeout", type=float, default=120, help="seconds to wait for the nodes")
    for name, what in (
        ("stop", "stop every node of the cluster and remove its directory"),
        ("status", "the nodes as the cluster's GCS sees them (JSON)"),
    ):
        sub.add_parser(name, help=what).add_argument("--dir", default=None)
    for name, what in (
        ("kill-node", "SIGKILL a worker node: its raylet and everything on it"),
        ("restart-node", "start the node again (a new Ray node, the same resources)"),
    ):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("node", help="node_a, node_b, ...")
        cmd.add_argument("--dir", default=None)
    return p


def _load(args: argparse.Namespace) -> LocalCluster:
    folder = args.dir or os.environ.get(DIR_ENV)
    if not folder:
        raise ClusterError(f"which cluster? pass --dir or set {DIR_ENV} (start prints it)")
    return LocalCluster.load(folder)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            try:
                cluster = LocalCluster(
                    args.workers,
                    head_cpus=args.head_cpus,
                    worker_cpus=args.worker_cpus,
                    worker_gpus=args.worker_gpus,
                    port=args.port,
                    root=args.dir,
                )
            except ValueError as exc:
                parser.error(str(exc))
            cluster.start(timeout_s=args.timeout)
            cluster.save()
            print(
                f"[ray_cluster] {len(cluster.nodes)} nodes ({', '.join(cluster.nodes)}) up in "
                f"{cluster.start_s:.1f} s at {cluster.address}; logs in {cluster.root}",
                file=sys.stderr,
            )
            print(
                f"export {DIR_ENV}={cluster.root} AEX_RAY_ADDRESS={cluster.address} "
                "RAY_AUTH_MODE=disabled"
            )
            return 0
        cluster = _load(args)
        if args.command == "stop":
            cluster.stop()
            print(f"[ray_cluster] stopped; {cluster.root} removed", file=sys.stderr)
        elif args.command == "status":
            print(json.dumps(describe(cluster), indent=1))
        else:
            if args.node not in cluster.workers:
                parser.error(f"no worker node {args.node!r}; the workers: {cluster.workers}")
            if args.command == "kill-node":
                pids = cluster.kill_node(args.node)
                print(f"[ray_cluster] {args.node}: killed {len(pids)} processes", file=sys.stderr)
            else:
                cluster.restart_node(args.node)
                print(f"[ray_cluster] {args.node} is back", file=sys.stderr)
            cluster.save()
    except ClusterError as exc:
        print(f"[ray_cluster] {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
