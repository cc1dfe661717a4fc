"""Latency records and the statistics behind them (no torch, no ONNX Runtime here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

SOURCES = ("measured", "cache", "lut", "predictor", "macs")
CLOCKS = ("cpu", "wall")


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
        nominal_ms: the reference network's nominal median that defines the scale of a
            drift-corrected figure; None for a raw one.
        clock: ``cpu`` (CPU time of the thread that runs the network: what a run costs
            with the core to itself) or ``wall`` (elapsed time).
        ci_rel: half-width of the 95% confidence interval of ``median_ms``, relative to
            it (with drift correction the reference's median's interval is included);
            None where there is none (too few runs, predictors).
        wall_median_ms: median elapsed time of the same runs, uncorrected (the rawest
            figure); None for predictors.
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
    nominal_ms: float | None = None
    clock: str = "wall"
    ci_rel: float | None = None
    wall_median_ms: float | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} not in {SOURCES}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock {self.clock!r} not in {CLOCKS}")

    @property
    def scale(self) -> str:
        """What the ``*_ms`` figures are: ``MMACs`` (millions of multiply-adds, not time),
        ``drift-corrected`` (ms at the machine speed of the nominal) or ``raw``."""
        if self.source == "macs":
            return "MMACs"
        return "raw" if self.nominal_ms is None else "drift-corrected"

    @property
    def raw_median_ms(self) -> float:
        """The median before drift correction (same runs, same clock)."""
        return self.median_ms / self.drift_factor

    def to_dict(self) -> dict:
        """All fields, plus ``scale`` and ``raw_median_ms`` for readers of the JSON."""
        return {**asdict(self), "scale": self.scale, "raw_median_ms": self.raw_median_ms}

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
    nominal_ms: float | None = None,
    clock: str = "wall",
    ci_rel: float | None = None,
    wall_median_ms: float | None = None,
) -> LatencyStats:
    """Summarise timed runs: median, p10/p90 (linear interpolation), mean, cv (ddof=1).
    ``ci_rel`` defaults to the median's own interval (:func:`median_ci_halfwidth`; None
    when there are too few runs for one); the other keywords are stored as given.

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
    if ci_rel is None:
        ci_rel = median_ci_halfwidth(x)
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
        nominal_ms=nominal_ms,
        clock=clock,
        ci_rel=float(ci_rel) if math.isfinite(ci_rel) else None,
        wall_median_ms=wall_median_ms,
    )


def median_ci_halfwidth(samples: Sequence[float], z: float = 1.96) -> float:
    """Relative half-width of a distribution-free confidence interval of the median.

    The interval is ``[x(r), x(n + 1 - r)]`` (1-based order statistics) with
    ``r = floor((n - z*sqrt(n)) / 2)``, the normal approximation to the binomial count of
    samples below the median; it needs no assumption on the shape of the timing
    distribution (they are skewed, with a long right tail). For n = 100 that is
    ``[x(40), x(61)]``. Returns ``inf`` when there are too few samples for it to exist.
    """
    n = len(samples)
    r = math.floor((n - z * math.sqrt(n)) / 2)
    if n < 3 or r < 1:
        return math.inf
    x = np.sort(np.asarray(samples, dtype=np.float64))
    median = float(np.median(x))
    if median <= 0:
        return math.inf
    return float(x[n - r] - x[r - 1]) / (2 * median)


def geometric_mean(values: Sequence[float]) -> float:
    """The geometric mean of positive ``values`` (the level of several reference
    networks' medians; a network's timings over passes)."""
    return math.exp(sum(math.log(v) for v in values) / len(values))
