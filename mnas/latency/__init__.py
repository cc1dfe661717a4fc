"""Latency of child networks: measured on ONNX Runtime, cached, or predicted.

Three evaluators share one protocol, :class:`LatencyEvaluator` (``measure(arch) ->
LatencyStats``), so the search does not care which it uses:

- :class:`OrtLatency` (``measured``): ONNX export in memory, ONNX Runtime CPU session,
  adaptive number of timed runs, median with spread; optional SQLite cache.
- :class:`LutLatency` (``lut``): per-layer lookup table summed and calibrated
  (``scripts/latency_table.py`` builds it for the user's own machine).
- :class:`MacsLatency` (``macs``): millions of multiply-adds, a noise-free proxy.

See docs/latency.md.
"""

from __future__ import annotations

from typing import Protocol

from mnas.latency.cache import LatencyCache, cache_key
from mnas.latency.command import register_cli
from mnas.latency.lut import (
    LayerConfig,
    LutLatency,
    build_table,
    network_layers,
    save_table,
    space_layer_configs,
    table_configs_for,
)
from mnas.latency.macs import MacsLatency
from mnas.latency.ort import (
    OrtLatency,
    TimingPlan,
    export_onnx,
    machine_description,
    machine_fingerprint,
    make_session,
)
from mnas.latency.stats import LatencyError, LatencyStats, median_ci_halfwidth, stats_from_samples
from mnas.space import Architecture


class LatencyEvaluator(Protocol):
    """Anything that gives a latency figure for an architecture."""

    def measure(self, arch: Architecture) -> LatencyStats: ...


EVALUATORS = {"measured": OrtLatency, "lut": LutLatency, "macs": MacsLatency}


def make_latency_evaluator(kind: str, **kwargs) -> LatencyEvaluator:
    """An evaluator by name: ``measured`` (:class:`OrtLatency`), ``lut`` (:class:`LutLatency`,
    needs ``path``) or ``macs`` (:class:`MacsLatency`); keyword arguments go to its constructor.

    Raises:
        ValueError: for an unknown kind.
    """
    if kind not in EVALUATORS:
        raise ValueError(f"unknown latency evaluator {kind!r}; known: {sorted(EVALUATORS)}")
    return EVALUATORS[kind](**kwargs)


__all__ = [
    "EVALUATORS",
    "LatencyCache",
    "LatencyError",
    "LatencyEvaluator",
    "LatencyStats",
    "LayerConfig",
    "LutLatency",
    "MacsLatency",
    "OrtLatency",
    "TimingPlan",
    "build_table",
    "cache_key",
    "export_onnx",
    "machine_description",
    "machine_fingerprint",
    "make_latency_evaluator",
    "make_session",
    "median_ci_halfwidth",
    "network_layers",
    "register_cli",
    "save_table",
    "space_layer_configs",
    "stats_from_samples",
    "table_configs_for",
]
