"""Latency records and the statistics behind them (no torch, no ONNX Runtime here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

SOURCES = ("measured", "cache", "lut", "macs")


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one network, with its spread.

    Attributes:
        median_ms: median of the timed runs (the figure the reward uses).
        p10_ms: 10th percentile of the timed runs.
        p90_ms: 90th percentile of the timed runs.
        mean_ms: mean of the timed runs.
        cv: coefficient of variation of the timed runs (sample std / mean).
        runs: number of timed runs (0 for predictors).
        export_seconds: ONNX export + session creation; 0 for cache hits and predictors.
        source: ``measured``, ``cache``, ``lut`` or ``macs``. For ``macs`` every ``*_ms``
            field holds millions of multiply-adds, not milliseconds.
        drift_factor: with reference timing, the factor every run was multiplied by (the
            reference network's nominal median over its median during this measurement);
            1.0 without.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    cv: float
    runs: int
    export_seconds: float
    source: str
    drift_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} not in {SOURCES}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LatencyStats:
        # Fields added later have defaults; records written before them still load.
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def point(cls, value: float, source: str) -> LatencyStats:
        """A predicted figure without spread (lookup table, MACs)."""
        return cls(value, value, value, value, 0.0, 0, 0.0, source)


class LatencyError(RuntimeError):
    """A network could not be exported, loaded or run; nothing was cached for it."""


def stats_from_samples(
    samples_ms: Sequence[float],
    export_seconds: float = 0.0,
    source: str = "measured",
    drift_factor: float = 1.0,
) -> LatencyStats:
    """Summarise timed runs: median, p10/p90 (linear interpolation), mean, cv (ddof=1).

    Raises:
        ValueError: if there are no samples or one is negative or not finite.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("need at least one timed run to compute latency statistics")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"latency samples must be finite and >= 0, got {x.tolist()}")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    p10, median, p90 = (float(v) for v in np.percentile(x, [10, 50, 90]))
    return LatencyStats(
        median_ms=median,
        p10_ms=p10,
        p90_ms=p90,
        mean_ms=mean,
        cv=std / mean if mean > 0 else 0.0,
        runs=int(x.size),
        export_seconds=float(export_seconds),
        source=source,
        drift_factor=float(drift_factor),
    )


def median_ci_halfwidth(samples: Sequence[float], z: float = 1.96) -> float:
    """Relative half-width of a distribution-free confidence interval of the median.

    Uses the order statistics ``x[j]`` and ``x[k]`` with ``j, k = n/2 -+ z*sqrt(n)/2``
    (normal approximation to the binomial), which needs no assumption on the shape of the
    timing distribution (they are skewed, with a long right tail). Returns ``inf`` when
    there are too few samples for the interval to exist.
    """
    n = len(samples)
    half = z * math.sqrt(n) / 2
    j = math.floor(n / 2 - half)
    k = math.ceil(n / 2 + half)
    if n < 3 or j < 0 or k > n - 1:
        return math.inf
    x = np.sort(np.asarray(samples, dtype=np.float64))
    median = float(np.median(x))
    if median <= 0:
        return math.inf
    return float(x[k] - x[j]) / (2 * median)
