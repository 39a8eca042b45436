"""Expected tool durations: an exponentially weighted moving average per tool name."""

from __future__ import annotations


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
