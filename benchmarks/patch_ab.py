"""A/B of an SGLang patch side by side: two engines alive at once, calls interleaved.

Variant A is the attention backend with ``sglang_extend_attention`` only; variant B
adds ``sglang_warm_attention``. Both are built from the installed file (so the
installed SGLang is not touched) and loaded in each engine's processes by a
``sitecustomize`` overlay. The two engines serve the same warm calls in turn (A, B,
B, A, ...), so a noisy shared machine slows both alike and the ratio holds. Greedy
outputs (``--gen`` tokens) of every call are compared between A and B.

    python -m benchmarks.patch_ab --history 1000,8000 --json out/patch_ab.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODULE = "sglang.srt.layers.attention.torch_native_backend"
SITECUSTOMIZE = f'''
import importlib.abc, importlib.util, os, sys
_path = os.environ.get("AGENT_EXECUTOR_BACKEND_OVERLAY")
if _path:
    class _Overlay(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "{MODULE}":
                with open(_path + ".hits", "a") as f:
                    f.write(str(os.getpid()) + chr(10))
                return importlib.util.spec_from_file_location(name, _path)
            return None
    sys.meta_path.insert(0, _Overlay())
'''


def _load_patch() -> Any:
    import importlib.util as iu

    path = Path(__file__).resolve().parents[1] / "infra" / "patches" / "sglang_warm_attention.py"
    spec = iu.spec_from_file_location("sglang_warm_attention", path)
    assert spec is not None and spec.loader is not None
    mod = iu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def variants(workdir: Path) -> dict[str, Path]:
    """backend files: A (extend patch only) and B (A + warm patch), from the installed one."""
    patch = _load_patch()
    installed = patch.backend_path()
    assert installed is not None, "sglang is not installed"
    text = patch.unpatch_text(installed.read_text())
    out = {"A": workdir / "backend_a.py", "B": workdir / "backend_b.py"}
    out["A"].write_text(text)
    out["B"].write_text(patch.patch_text(text))
    return out


def install_overlay(work: Path) -> None:
    """Engines started after this (in child processes) honour AGENT_EXECUTOR_BACKEND_OVERLAY."""
    (work / "sitecustomize.py").write_text(SITECUSTOMIZE)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(work), *filter(None, [os.environ.get("PYTHONPATH")])]
    )


def start_engine(
    backend: Path, model: str, max_total_tokens: int, context_length: int, threads: str = ""
) -> tuple[Any, Any]:
    """An engine in a child process that loads ``backend`` as the attention backend.
    Returns (connection, process): send (ids, max_new_tokens) or "flush", None to stop."""
    from executor.fleet.actor import free_port
    from executor.fleet.config import ReplicaConfig
    from executor.models.resolve import resolve

    model_path = str(resolve(model))
    cfg = ReplicaConfig(
        model=model, max_total_tokens=max_total_tokens, context_length=context_length, device="cpu"
    )
    kw = cfg.engine_kwargs(model_path, "cpu", free_port())
    kw.pop("model_path")
    if threads:
        os.environ["OMP_NUM_THREADS"] = threads
    else:
        os.environ.pop("OMP_NUM_THREADS", None)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, str(backend), model_path, kw))
    proc.start()
    if parent.recv() != "ready":
        raise RuntimeError("the engine did not start")
    return parent, proc


def stop_engine(conn: Any, proc: Any) -> None:
    conn.send(None)
    proc.join(timeout=60)
    if proc.is_alive():
        proc.kill()


def _serve(conn: Any, overlay: str, model_path: str, kwargs: dict[str, Any]) -> None:
    os.environ["AGENT_EXECUTOR_BACKEND_OVERLAY"] = overlay
    os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
    import sglang

    engine = sglang.Engine(model_path=model_path, **kwargs)
    conn.send("ready")
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            if msg == "flush":
                engine.flush_cache()
                conn.send(True)
                continue
            ids, gen = msg
            t0 = time.perf_counter()
            out = engine.generate(
                input_ids=ids, sampling_params={"max_new_tokens": gen, "temperature": 0.0}
            )
            conn.send(
                (
                    time.perf_counter() - t0,
                    int(out["meta_info"]["cached_tokens"]),
                    list(out["output_ids"]),
                )
            )
    finally:
        engine.shutdown()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.patch_ab",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="tiny")
    p.add_argument("--history", default="1000,8000")
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--calls", type=int, default=12, help="warm calls per variant and length")
    p.add_argument("--gen", type=int, default=1, help="tokens generated per call")
    p.add_argument("--a", default="A", help="engine A: backend variant A|B[:OMP threads]")
    p.add_argument("--b", default="B", help="engine B: backend variant A|B[:OMP threads]")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    history = sorted(int(v) for v in args.history.split(","))
    longest = history[-1] + args.new_tokens + args.gen
    work = Path(tempfile.mkdtemp(prefix="patch-ab-"))
    files = variants(work)
    install_overlay(work)
    conns: dict[str, Any] = {}
    procs: list[tuple[Any, Any]] = []
    try:
        for name, spec in (("A", args.a), ("B", args.b)):
            variant, _, threads = spec.partition(":")
            file = work / f"{name}_{files[variant].name}"
            file.write_text(files[variant].read_text())
            conn, proc = start_engine(
                file, args.model, 3 * longest + 1024, max(longest + 512, 4096), threads
            )
            procs.append((conn, proc))
            conns[name] = conn
        vocab = 4000
        rng = random.Random(0)
        ids = [rng.randrange(100, vocab) for _ in range(longest)]
        rows = []
        for h in history:
            lat: dict[str, list[float]] = {"A": [], "B": []}
            cached: dict[str, list[int]] = {"A": [], "B": []}
            same = True
            for name in conns:
                conns[name].send("flush")
                conns[name].recv()
                conns[name].send((ids[:h], 1))
                conns[name].recv()
            for k in range(args.calls):
                suffix = [100 + (k * 37 + j) % (vocab - 100) for j in range(args.new_tokens)]
                outs = {}
                for name in ("A", "B") if k % 2 == 0 else ("B", "A"):
                    conns[name].send((ids[:h] + suffix, args.gen))
                    s, c, o = conns[name].recv()
                    lat[name].append(s)
                    cached[name].append(c)
                    outs[name] = o
                same = same and outs["A"] == outs["B"]
            a, b = statistics.median(lat["A"]), statistics.median(lat["B"])
            row = {
                "history_tokens": h,
                "new_tokens": args.new_tokens,
                "a_ms": round(1000 * a, 2),
                "b_ms": round(1000 * b, 2),
                "speedup": round(a / b, 2),
                "greedy_identical": same,
                "cached_min": min(cached["A"] + cached["B"]),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        for conn, proc in procs:
            stop_engine(conn, proc)
    hits = {
        n: len((work / f"{n}_{files[s.partition(':')[0]].name}.hits").read_text().split())
        if (work / f"{n}_{files[s.partition(':')[0]].name}.hits").exists()
        else 0
        for n, s in (("A", args.a), ("B", args.b))
    }
    report = {
        "model": args.model,
        "gen": args.gen,
        "a": args.a,
        "b": args.b,
        "overlay_loaded_in_processes": hits,
        "rows": rows,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if all(r["greedy_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
