"""The one description of how latency is obtained, and the evaluator it describes.

:class:`LatencySettings` is what the search, the latency table, retraining and
``python -m mnas latency`` all pass around (``conf/latency/*.yaml`` becomes one through
:func:`mnas.conf.arguments.latency_settings`); :func:`make_latency_evaluator` turns it,
with the network setup it applies to, into a :class:`LatencyEvaluator`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from mnas.latency.cache import DEFAULT_CACHE_PATH
from mnas.latency.lut import LutLatency
from mnas.latency.macs import MacsLatency
from mnas.latency.ort import OrtLatency
from mnas.latency.predictor import OUT_OF_RANGE, PredictorLatency
from mnas.latency.stats import LatencyStats
from mnas.latency.timing import TimingPlan, resolve_clock
from mnas.space import Architecture

KINDS = ("measured", "lut", "predictor", "macs")


class LatencyEvaluator(Protocol):
    """Anything that gives a latency figure for an architecture."""

    def measure(self, arch: Architecture) -> LatencyStats: ...


@dataclass(frozen=True)
class LatencySettings:
    """How children are timed (``measured``), predicted (``lut``, ``predictor``) or counted
    (``macs``).

    Attributes:
        kind: ``measured`` (ONNX Runtime), ``lut`` (lookup table), ``predictor`` (a model
            fitted to whole networks timed on the target, :mod:`mnas.latency.predictor`)
            or ``macs``.
        threads: ONNX Runtime intra-op threads (the paper: one big core).
        batch_size: images per timed run.
        warmup, min_runs, max_runs, rel_ci, time_cap_s: the stopping rule
            (:class:`mnas.latency.ort.TimingPlan`).
        clock: ``cpu`` (the timing thread's CPU time; one thread), ``wall`` (elapsed) or
            ``auto`` (``cpu`` with one thread); :func:`mnas.latency.timing.resolve_clock`.
        pin_cpu: pin timing to this CPU (Linux); None: no pinning.
        reference: interleave a reference network and correct the machine's drift.
        cache: SQLite file of cached measurements (``~`` expanded by the process that
            times); None: no cache.
        lut_path: the table of ``kind=lut`` (built by ``scripts/latency_table.py``).
        predictor_path: the predictor of ``kind=predictor`` (built by
            ``scripts/latency_table.py --predictor``).
        out_of_range: ``warn`` or ``refuse`` a network outside the predictor's fitted range.
        remeasure_front: time the search's final Pareto front on ONNX Runtime with these
            settings (``measured_latency_ms`` beside the predicted ``latency_ms``); None: on
            for the predicting kinds (``lut``, ``predictor``), off otherwise.

    Raises:
        ValueError: naming the first bad value.
    """

    kind: str = "measured"
    threads: int = 1
    batch_size: int = 1
    warmup: int = 5
    min_runs: int = 15
    max_runs: int = 300
    rel_ci: float = 0.01
    time_cap_s: float = 0.6
    clock: str = "auto"
    pin_cpu: int | None = None
    reference: bool = True
    cache: str | None = DEFAULT_CACHE_PATH
    lut_path: str | None = None
    predictor_path: str | None = None
    out_of_range: str = "warn"
    remeasure_front: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"latency.kind={self.kind!r}; allowed: {', '.join(KINDS)}")
        if self.kind == "lut" and not self.lut_path:
            raise ValueError("latency.kind=lut needs latency.lut_path (scripts/latency_table.py)")
        if self.kind == "predictor" and not self.predictor_path:
            raise ValueError(
                "latency.kind=predictor needs latency.predictor_path "
                "(scripts/latency_table.py --predictor)"
            )
        if self.out_of_range not in OUT_OF_RANGE:
            raise ValueError(
                f"latency.out_of_range={self.out_of_range!r}; allowed: {', '.join(OUT_OF_RANGE)}"
            )
        for key in ("threads", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"latency.{key}={value!r} must be a positive integer")
        self.plan  # noqa: B018 - validates the timing plan now, before any work
        try:
            resolve_clock(self.clock, self.threads)
        except ValueError as e:
            raise ValueError(f"latency.{e}") from None

    @property
    def remeasures_front(self) -> bool:
        """Whether the search times its final front on ONNX Runtime (:attr:`remeasure_front`)."""
        if self.remeasure_front is None:
            return self.kind in ("lut", "predictor")
        return bool(self.remeasure_front)

    @property
    def plan(self) -> TimingPlan:
        return TimingPlan(self.warmup, self.min_runs, self.max_runs, self.rel_ci, self.time_cap_s)


def make_latency_evaluator(
    settings: LatencySettings,
    input_size: int = 224,
    in_channels: int = 3,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem_stride: int = 2,
) -> LatencyEvaluator:
    """The evaluator ``settings`` describe, for networks of this setup (image size, channels,
    classes, width and stem stride, as :func:`mnas.nn.build_model` takes them)."""
    net = dict(
        input_size=input_size,
        in_channels=in_channels,
        num_classes=num_classes,
        width_mult=width_mult,
        stem_stride=stem_stride,
    )
    if settings.kind == "macs":
        return MacsLatency(**net)
    if settings.kind == "lut":
        return LutLatency(
            os.path.expanduser(settings.lut_path),
            threads=settings.threads,
            batch_size=settings.batch_size,
            **net,
        )
    if settings.kind == "predictor":
        return PredictorLatency(
            os.path.expanduser(settings.predictor_path),
            out_of_range=settings.out_of_range,
            threads=settings.threads,
            batch_size=settings.batch_size,
            clock=resolve_clock(settings.clock, settings.threads),
            **net,
        )
    return OrtLatency(**net, batch_size=settings.batch_size, **_timing_kwargs(settings))


def _timing_kwargs(settings: LatencySettings) -> dict:
    """The :class:`OrtLatency` arguments that ``settings`` decides, whatever the network."""
    return dict(
        threads=settings.threads,
        warmup=settings.warmup,
        min_runs=settings.min_runs,
        max_runs=settings.max_runs,
        rel_ci=settings.rel_ci,
        time_cap_s=settings.time_cap_s,
        clock=settings.clock,
        pin_cpu=settings.pin_cpu,
        reference=settings.reference,
        # "~" is expanded, and the file opened, where children are timed (maybe a latency
        # device with another home folder), not here
        cache_path=settings.cache or None,
    )


def measured_ort_latency(
    settings: LatencySettings,
    input_size: int,
    in_channels: int,
    batch_size: int | None = None,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem_stride: int = 2,
) -> OrtLatency:
    """ONNX Runtime timing of an already built model (:meth:`OrtLatency.measure_model`)
    under ``settings``, whatever its ``kind``: on the search's scale (drift-corrected
    against the nominal in ``settings.cache`` unless ``reference`` is off), with the
    reference network built from ``num_classes``, ``width_mult`` and ``stem_stride`` as the
    search built it."""
    return OrtLatency(
        input_size=input_size,
        in_channels=in_channels,
        num_classes=num_classes,
        width_mult=width_mult,
        stem_stride=stem_stride,
        batch_size=batch_size or settings.batch_size,
        **_timing_kwargs(settings),
    )
