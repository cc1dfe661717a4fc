"""The one description of how latency is obtained, and the evaluator it describes.

:class:`LatencySettings` is what the search, the latency table, retraining and
``python -m mnas latency`` all pass around (``conf/latency/*.yaml`` becomes one through
:func:`mnas.conf.arguments.latency_settings`); :func:`make_latency_evaluator` turns it,
with the network setup it applies to, into a :class:`LatencyEvaluator`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from mnas.latency.cache import DEFAULT_CACHE_PATH, cache_key
from mnas.latency.lut import LutLatency
from mnas.latency.macs import MacsLatency
from mnas.latency.ort import OrtLatency
from mnas.latency.predictor import (
    OUT_OF_RANGE,
    Predictor,
    PredictorLatency,
    build_predictor,
    timing_setup,
)
from mnas.latency.recheck import (
    RECHECK_AFTER_HOURS,
    RECHECK_NETWORKS,
    last_timed,
    recheck_predictor,
)
from mnas.latency.references import DEFAULT_REFERENCES, check_references
from mnas.latency.session import check_graph_optimization
from mnas.latency.stats import LatencyError, LatencyStats
from mnas.latency.timing import TimingPlan, resolve_clock
from mnas.space import Architecture, MnasSpace

log = logging.getLogger(__name__)

KINDS = ("measured", "lut", "predictor", "macs")
AUTO = "auto"
"""``predictor_path=auto``: the predictor of this machine and set-up, built on first use
(:func:`resolve_auto_predictor`) and kept beside the latency cache."""
AUTO_NETWORKS = 2000
"""Random whole networks a predictor is fitted to at most by default (``auto``, and
``scripts/latency_table.py --predictor``); the time budget below decides how many are
timed at every size tried (docs/results/latency-notebook.md, "Networks until the
budget": the ``additive`` model's cross-validated error still fell at 480 networks at
16x16, where 600 used only 9 of the 15 minutes)."""
AUTO_MAX_SECONDS = 900.0
"""Timing stops after this long even if fewer networks were timed (at least 10 are needed);
the first pass stops where the later ones can still re-time every network it reached."""


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
        reference: interleave reference networks and correct the machine's drift.
        references: which reference networks, each timed in a block of its own: ``auto``
            (the default: ``space:7`` and ``space:11`` up to 32x32 input, ``mobilenetv2``
            above), or names, ``mobilenetv2`` or ``space:SEED``
            (:mod:`mnas.latency.references`).
        cache: SQLite file of cached measurements (``~`` expanded by the process that
            times); None: no cache.
        lut_path: the table of ``kind=lut`` (built by ``scripts/latency_table.py``).
        predictor_path: the predictor of ``kind=predictor`` (built by
            ``scripts/latency_table.py --predictor``), or ``auto``: the one of this machine
            and set-up, built on first use and kept beside ``cache``
            (:func:`resolve_auto_predictor`).
        out_of_range: ``warn`` or ``refuse`` a network outside the predictor's fitted range.
        graph_optimization: ONNX Runtime's graph optimisation level (``all``, ``extended``,
            ``basic``, ``disabled``); ``measured`` and ``predictor`` only (a table is built
            with all optimisations).
        remeasure_front: time the search's final Pareto front on ONNX Runtime with these
            settings (``measured_latency_ms`` beside the predicted ``latency_ms``); None: on
            for the predicting kinds (``lut``, ``predictor``), off otherwise.
        repeats: time every measured network this many times, each in a new ONNX Runtime
            session under the whole timing plan, and report the median of all the corrected
            runs (less noise, ``repeats`` times the timing cost; not part of the cache key).
        predictor_recheck: ``predictor_path=auto``: when the predictor it finds was last
            timed more than :data:`mnas.latency.recheck.RECHECK_AFTER_HOURS` ago, re-time
            this many of its training networks and re-calibrate it if that predicts them
            better (:func:`mnas.latency.recheck.recheck_predictor`); 0: never.

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
    references: tuple[str, ...] = DEFAULT_REFERENCES
    cache: str | None = DEFAULT_CACHE_PATH
    lut_path: str | None = None
    predictor_path: str | None = None
    out_of_range: str = "warn"
    remeasure_front: bool | None = None
    graph_optimization: str = "all"
    repeats: int = 1
    predictor_recheck: int = RECHECK_NETWORKS

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
        if self.kind == "predictor" and self.predictor_path == AUTO and not self.cache:
            raise ValueError(
                "latency.predictor_path=auto keeps the predictor beside the latency cache (and "
                "keys it by the cache's nominal); set latency.cache, or give a predictor_path"
            )
        try:
            check_graph_optimization(self.graph_optimization)
        except ValueError as e:
            raise ValueError(f"latency.{e}") from None
        if self.graph_optimization != "all" and self.kind == "lut":
            raise ValueError(
                f"latency.graph_optimization={self.graph_optimization!r} with latency=lut: a "
                "table is built and calibrated with all optimisations; use measured or predictor"
            )
        if self.out_of_range not in OUT_OF_RANGE:
            raise ValueError(
                f"latency.out_of_range={self.out_of_range!r}; allowed: {', '.join(OUT_OF_RANGE)}"
            )
        for key in ("threads", "batch_size", "repeats"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"latency.{key}={value!r} must be a positive integer")
        r = self.predictor_recheck
        if isinstance(r, bool) or not isinstance(r, int) or (r != 0 and r < 5):
            raise ValueError(f"latency.predictor_recheck={r!r}; allowed: 0 (never) or >= 5")
        self.plan  # noqa: B018 - validates the timing plan now, before any work
        try:
            object.__setattr__(self, "references", check_references(self.references))
        except ValueError as e:
            raise ValueError(f"latency.{e}") from None
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
            _existing("lut_path", settings.lut_path, "scripts/latency_table.py"),
            threads=settings.threads,
            batch_size=settings.batch_size,
            **net,
        )
    if settings.kind == "predictor":
        if settings.predictor_path == AUTO:
            raise ValueError(
                "latency.predictor_path=auto must be resolved first (resolve_auto_predictor)"
            )
        return PredictorLatency(
            _existing(
                "predictor_path",
                settings.predictor_path,
                "scripts/latency_table.py --predictor, or use latency.predictor_path=auto",
            ),
            out_of_range=settings.out_of_range,
            graph_optimization=settings.graph_optimization,
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
        references=settings.references,
        graph_optimization=settings.graph_optimization,
        repeats=settings.repeats,
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


def _digest(setup: dict) -> str:
    return cache_key(setup)[:16]


def _existing(key: str, path: str, how: str) -> str:
    """``path`` with ``~`` expanded, if it is a file.

    Raises:
        FileNotFoundError: naming ``latency.<key>``, the path and how to make one.
    """
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"latency.{key}={path!r}: no such file (build one with {how})")
    return full


def auto_predictor_path(evaluator: OrtLatency, cache: str) -> str:
    """Where ``predictor_path=auto`` keeps the predictor of ``evaluator``'s timing set-up
    (machine, ONNX Runtime, threads, clock, input shape, network set-up and the nominal in
    the latency cache ``cache``): ``predictors/predictor-<digest>.json`` beside the cache."""
    digest = _digest(timing_setup(evaluator))
    folder = os.path.join(os.path.dirname(os.path.expanduser(cache)), "predictors")
    return os.path.join(folder, f"predictor-{digest}.json")


def resolve_auto_predictor(
    settings: LatencySettings,
    net: dict,
    progress: Callable[[int, int, float], None] | None = None,
    networks: int = AUTO_NETWORKS,
    max_seconds: float = AUTO_MAX_SECONDS,
) -> LatencySettings:
    """``settings`` with ``predictor_path=auto`` replaced by a real path: the predictor of
    this machine and set-up (``net``: as :func:`make_latency_evaluator` takes it) if one was
    built before, else one built now from ``networks`` random networks of the MnasNet space
    timed with ``settings`` (minutes: see docs/latency.md). Other settings come back as they
    are."""
    if settings.kind != "predictor" or settings.predictor_path != AUTO:
        return settings
    evaluator = OrtLatency(**net, batch_size=settings.batch_size, **_timing_kwargs(settings))
    path = auto_predictor_path(evaluator, settings.cache)  # times the nominal if not cached
    if os.path.exists(path):
        try:
            found = Predictor.load(path)
            same = _digest(found.setup) == _digest(timing_setup(evaluator))
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            same = False
            log.warning("latency predictor %s cannot be read (%s)", path, e)
        if same:
            log.info("latency predictor for this machine and set-up: %s", path)
            _recheck_if_old(found, evaluator, settings.predictor_recheck)
            return replace(settings, predictor_path=path)
        log.warning("latency predictor %s is of another set-up; building it again", path)
    log.info(
        "building a latency predictor for this machine and set-up: %d random networks "
        "(at most %.0f s) -> %s",
        networks,
        max_seconds,
        path,
    )
    rng = random.Random(0)
    archs = [MnasSpace().sample(rng) for _ in range(networks)]
    try:
        predictor = build_predictor(evaluator, archs, max_seconds, progress)
    except LatencyError as e:
        raise ValueError(f"latency.predictor_path=auto: building the predictor failed: {e}") from e
    predictor.save(path)
    d = predictor.data
    cv = d["cross_validation"][d["model"]["kind"]]
    log.info(
        "latency predictor built in %.0f s from %d networks: cross-validated within +-10%% "
        "%.0f%%, MAPE %.1f%%",
        d["build_seconds"],
        len(d["training"]["archs"]),
        100 * cv["within_10"],
        cv["mape"],
    )
    return replace(settings, predictor_path=path)


def _recheck_if_old(predictor: Predictor, evaluator: OrtLatency, networks: int) -> None:
    """Re-check (:func:`recheck_predictor`) and save ``predictor`` if ``networks`` > 0 and
    it was last timed over :data:`RECHECK_AFTER_HOURS` ago (or does not say when). A
    network that cannot be timed leaves the predictor as it was, with a warning."""
    when = last_timed(predictor)
    if not networks or (when is not None and time.time() - when < RECHECK_AFTER_HOURS * 3600):
        return
    total = len(predictor.data["training"]["tokens"])
    try:
        checked = recheck_predictor(predictor, evaluator, min(networks, total))
    except (LatencyError, ValueError) as e:
        log.warning("latency predictor %s: re-check failed (%s); used as it is", predictor.path, e)
        return
    checked.save(predictor.path)
