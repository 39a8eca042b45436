"""What the core learns from finished work: how long each tool takes (a moving
average per tool name) and how much a task's history grows per step (a high
quantile per agent, over a window of recent steps)."""

from __future__ import annotations

import bisect
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

    def __init__(self, quantile: float = 0.9, window: int = 256, prior: int = 1024,
                 min_samples: int = 8) -> None:  # fmt: skip
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
