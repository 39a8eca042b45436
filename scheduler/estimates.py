"""What the core learns from finished work: how long each tool takes (a moving
average per tool name) and how much a task's history grows per step (a high
quantile per agent, over a window of recent steps), how fast the engines prefill
(a least-squares fit over finished calls) and how fast the admission queue drains."""

from __future__ import annotations

import bisect
import math
from collections import deque


class ToolStats:
    __slots__ = ("_mean", "_alpha", "_default")

    def __init__(self, alpha: float, default_s: float) -> None:
        self._mean: dict[str, float] = {}
        self._alpha = alpha
        self._default = default_s

    def expected(self, tool: str, hint: float | None = None) -> float:
        mean = self._mean.get(tool)
        if mean is not None:
            return mean
        return hint if hint is not None else self._default

    def observe(self, tool: str, duration_s: float) -> None:
        mean = self._mean.get(tool)
        self._mean[tool] = duration_s if mean is None else mean + self._alpha * (duration_s - mean)


class GrowthStats:
    """Tokens a task's history grows from one call's prompt to the next's (its reply
    plus the observation), per agent. ``expected`` is the ``quantile`` of the last
    ``window`` steps seen, or ``prior`` before ``min_samples`` of them."""

    __slots__ = ("_recent", "_sorted", "quantile", "window", "prior", "min_samples")

    def __init__(
        self, quantile: float = 0.9, window: int = 256, prior: int = 1024, min_samples: int = 8
    ) -> None:
        if not 0.0 < quantile <= 1.0 or window < 1 or prior < 0 or min_samples < 1:
            raise ValueError("need 0 < quantile <= 1, window >= 1, prior >= 0, min_samples >= 1")
        self._recent: dict[str, deque[int]] = {}
        self._sorted: dict[str, list[int]] = {}
        self.quantile = quantile
        self.window = window
        self.prior = prior
        self.min_samples = min_samples

    def observe(self, agent: str, tokens: int) -> None:
        recent = self._recent.setdefault(agent, deque())
        ordered = self._sorted.setdefault(agent, [])
        tokens = max(tokens, 0)
        recent.append(tokens)
        bisect.insort(ordered, tokens)
        if len(recent) > self.window:
            old = recent.popleft()
            del ordered[bisect.bisect_left(ordered, old)]

    def expected(self, agent: str) -> int:
        ordered = self._sorted.get(agent)
        if not ordered or len(ordered) < self.min_samples:
            return self.prior
        return ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]


class PrefillSpeed:
    """The engines' prefill speed (tokens/s) as the calls show it: a least-squares
    fit, with exponential forgetting, of ``latency = a x prefilled + b x output + c``
    over finished calls (prefilled: prompt minus cached tokens). The speed is ``1/a``;
    ``prior`` until ``min_calls`` calls are seen or while the fit is degenerate (every
    call prefilled about the same: ``a`` cannot be told from ``c``)."""

    __slots__ = ("_s", "_v", "_n", "prior", "forget", "min_calls")

    def __init__(self, prior: float, forget: float = 0.995, min_calls: int = 8) -> None:
        if prior <= 0 or not 0.0 < forget <= 1.0 or min_calls < 1:
            raise ValueError("need prior > 0, 0 < forget <= 1, min_calls >= 1")
        self._s = [[0.0] * 3 for _ in range(3)]  # sum of w x x^T
        self._v = [0.0] * 3  # sum of w x y
        self._n = 0
        self.prior = prior
        self.forget = forget
        self.min_calls = min_calls

    def observe(self, prefilled: int, output: int, latency_s: float) -> None:
        x = (float(prefilled), float(output), 1.0)
        f = self.forget
        for i in range(3):
            self._v[i] = f * self._v[i] + x[i] * latency_s
            row = self._s[i]
            for j in range(3):
                row[j] = f * row[j] + x[i] * x[j]
        self._n += 1

    def tokens_per_s(self) -> float:
        if self._n < self.min_calls:
            return self.prior
        a = _solve3(self._s, self._v)
        if a is None or a[0] <= 0.0:
            return self.prior
        return 1.0 / a[0]

    def seconds(self, tokens: int) -> float:
        """Time to prefill ``tokens`` at the learned speed."""
        return tokens / self.tokens_per_s()


def _solve3(m: list[list[float]], v: list[float]) -> list[float] | None:
    """Solve the 3x3 system ``m x = v`` (Gaussian elimination, partial pivoting);
    None when it is (numerically) singular."""
    a = [row[:] + [v[i]] for i, row in enumerate(m)]
    scale = max(abs(a[i][i]) for i in range(3)) or 1.0
    for col in range(3):
        piv = max(range(col, 3), key=lambda r: abs(a[r][col]))
        if abs(a[piv][col]) <= 1e-12 * scale:
            return None
        a[col], a[piv] = a[piv], a[col]
        for r in range(col + 1, 3):
            k = a[r][col] / a[col][col]
            for c in range(col, 4):
                a[r][c] -= k * a[col][c]
    x = [0.0] * 3
    for r in (2, 1, 0):
        x[r] = (a[r][3] - sum(a[r][c] * x[c] for c in range(r + 1, 3))) / a[r][r]
    return x


class DrainRate:
    """How fast the admission queue drains: tasks placed from it per second of time
    during which tasks waited in it (the core counts new arrivals only), both counts
    decaying with time constant ``window_s`` (recent drains weigh most).
    ``expected_wait(k)`` is the time the k-th task in line should wait, or None
    before ``min_drains`` placements."""

    __slots__ = ("_drained", "_busy_s", "_t", "window_s", "min_drains")

    def __init__(self, window_s: float = 120.0, min_drains: float = 3.0) -> None:
        if window_s <= 0 or min_drains <= 0:
            raise ValueError("need window_s > 0 and min_drains > 0")
        self._drained = 0.0
        self._busy_s = 0.0
        self._t: float | None = None
        self.window_s = window_s
        self.min_drains = min_drains

    def advance(self, now: float, queue_was_busy: bool) -> None:
        """Time moved to ``now``; the queue was non-empty since the last call or not."""
        if self._t is not None and now > self._t:
            dt = now - self._t
            decay = math.exp(-dt / self.window_s)
            self._drained *= decay
            # the busy time, decayed continuously over the interval
            self._busy_s = self._busy_s * decay + (
                self.window_s * (1.0 - decay) if queue_was_busy else 0.0
            )
        self._t = now

    def drained(self, n: int = 1) -> None:
        self._drained += n

    def per_s(self) -> float | None:
        if self._drained < self.min_drains or self._busy_s <= 0.0:
            return None
        return self._drained / self._busy_s

    def expected_wait(self, position: int) -> float | None:
        rate = self.per_s()
        return None if rate is None else position / rate
