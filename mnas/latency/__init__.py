"""Latency of child networks: measured on ONNX Runtime, cached, or predicted.

Four evaluators share one protocol, :class:`LatencyEvaluator` (``measure(arch) ->
LatencyStats``), so the search does not care which it uses:

- :class:`OrtLatency` (``measured``): ONNX export in memory, ONNX Runtime CPU session,
  adaptive number of timed runs, median with spread; optional SQLite cache.
- :class:`LutLatency` (``lut``): per-layer lookup table summed and calibrated
  (``scripts/latency_table.py`` builds it for the user's own machine).
- :class:`PredictorLatency` (``predictor``): a model fitted to whole networks timed on the
  target (``scripts/latency_table.py --predictor``); :func:`load_predictor` gives the plain
  ``predict(arch) -> ms``.
- :class:`MacsLatency` (``macs``): millions of multiply-adds, a noise-free proxy.

One settings object, :class:`LatencySettings`, describes which one and how it times;
:func:`make_latency_evaluator` builds it. :func:`mnas.latency.eager.time_torch` times eager
PyTorch with the same stopping rule (for retrained models). See docs/latency.md.

Must not know about: data, training, the controller, the search.
"""

from __future__ import annotations

from mnas.latency.cache import DEFAULT_CACHE_PATH, LatencyCache, Nominal, cache_key
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
from mnas.latency.ort import OrtLatency
from mnas.latency.predictor import (
    Prediction,
    Predictor,
    PredictorLatency,
    build_predictor,
    fit_predictor,
    load_predictor,
)
from mnas.latency.recheck import recheck_predictor
from mnas.latency.references import reference_arch, reference_network
from mnas.latency.refit import refit_predictor
from mnas.latency.session import (
    export_onnx,
    machine_description,
    machine_fingerprint,
    make_session,
)
from mnas.latency.settings import (
    KINDS,
    LatencyEvaluator,
    LatencySettings,
    make_latency_evaluator,
    measured_ort_latency,
    resolve_auto_predictor,
)
from mnas.latency.stats import LatencyError, LatencyStats, median_ci_halfwidth, stats_from_samples
from mnas.latency.timed import time_networks
from mnas.latency.timing import TimingPlan, Timings, resolve_clock, time_runs

__all__ = [
    "DEFAULT_CACHE_PATH",
    "KINDS",
    "LatencyCache",
    "LatencyError",
    "LatencyEvaluator",
    "LatencySettings",
    "LatencyStats",
    "LayerConfig",
    "LutLatency",
    "MacsLatency",
    "Nominal",
    "OrtLatency",
    "Prediction",
    "Predictor",
    "PredictorLatency",
    "TimingPlan",
    "Timings",
    "build_table",
    "build_predictor",
    "cache_key",
    "export_onnx",
    "fit_predictor",
    "load_predictor",
    "machine_description",
    "machine_fingerprint",
    "make_latency_evaluator",
    "make_session",
    "median_ci_halfwidth",
    "network_layers",
    "measured_ort_latency",
    "recheck_predictor",
    "reference_arch",
    "reference_network",
    "refit_predictor",
    "register_cli",
    "resolve_auto_predictor",
    "resolve_clock",
    "save_table",
    "space_layer_configs",
    "stats_from_samples",
    "table_configs_for",
    "time_networks",
    "time_runs",
]
