"""A small pool of pre-started sandbox containers, so a new task need not wait ~0.5 s.

A background thread keeps ``size`` containers (each with its own fresh
workspace) started with the pool's limits. ``take()`` hands one over at once or
returns None (empty pool, other limits): the caller then starts one itself.
Containers are never reused across tasks: a taken one belongs to its task and
is removed with it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from tools.sandbox.base import Limits
from tools.sandbox.docker.container import WarmContainer

log = logging.getLogger(__name__)


class ContainerPool:
    def __init__(self, size: int, limits: Limits, start: Callable[[], WarmContainer]) -> None:
        self.size = size
        self.limits = limits
        self._start = start
        self._ready: deque[WarmContainer] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._filled = threading.Condition(self._lock)
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="sandbox-pool", daemon=True)
        self._thread.start()

    def take(self, limits: Limits) -> WarmContainer | None:
        if limits != self.limits:
            return None
        with self._lock:
            warm = self._ready.popleft() if self._ready else None
        self._wake.set()
        return warm

    def wait_full(self, timeout: float = 30.0) -> bool:
        """Block until ``size`` containers are ready (for benchmarks and tests)."""
        with self._filled:
            return self._filled.wait_for(lambda: len(self._ready) >= self.size, timeout)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ready)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                missing = self.size - len(self._ready)
            if missing <= 0:
                self._wake.wait(timeout=5.0)
                self._wake.clear()
                continue
            try:
                warm = self._start()
            except Exception as exc:  # keep trying, slower: the daemon may come back
                self._failures += 1
                log.warning("sandbox pool: cannot start a container: %s", exc)
                self._stop.wait(min(30.0, 0.5 * 2 ** min(self._failures, 6)))
                continue
            self._failures = 0
            with self._filled:
                keep = not self._stop.is_set()
                if keep:
                    self._ready.append(warm)
                    self._filled.notify_all()
            if not keep:
                warm.remove()  # started while the pool was closing

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        with self._lock:
            ready, self._ready = list(self._ready), deque()
        for warm in ready:
            warm.remove()
