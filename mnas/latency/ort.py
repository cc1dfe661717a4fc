"""Measured latency: ONNX export in memory, an ONNX Runtime CPU session, timed runs.

How a figure is produced (see docs/latency.md):

1. the network is exported to ONNX in memory (TorchScript exporter, eval mode, batch-norm
   folded) with torch limited to one thread, so export does not fight the timing or other
   processes for cores;
2. a ``CPUExecutionProvider`` session is created with ``threads`` intra-op threads, one
   inter-op thread, sequential execution and full graph optimisation;
3. after ``warmup`` untimed runs, runs are timed one by one (input and output bound once,
   so Python overhead is one call; :mod:`mnas.latency.timing`) until the 95% confidence
   interval of the median is within ``rel_ci`` of it, ``max_runs`` is reached, or
   ``time_cap_s`` has passed. With one thread the clock is the thread's CPU time, so
   time the scheduler gives to other processes is not counted;
4. the median, p10, p90, mean and coefficient of variation of the timed runs are returned.

With ``reference=True`` timing alternates between blocks of runs of the candidate and of
fixed reference networks (``references``: by default two networks of the space up to
32x32 input and the space's MobileNetV2 above, built for the same setup;
:mod:`mnas.latency.references`), and all of the candidate's timings are multiplied
by ``nominal / level``, where ``level`` is the geometric mean of the references' medians
during this timing and ``nominal`` the same timed alone once, kept in the cache under a key
of everything that changes it (the reference networks, input shape, threads, clock,
ONNX Runtime version, machine), so every process on this kind of machine shares it. On a
shared or virtual machine the speed drifts by several percent within seconds, for every
network alike; the correction cancels that common factor. The nominal is part of every
cached figure's key, so re-timing it (:meth:`OrtLatency.remeasure_nominal`,
``python -m mnas latency-nominal``) never mixes two scales.

Timing must not overlap training: the search runs a separate latency phase in which
children are timed one at a time while nothing trains. ``pin_cpu`` additionally pins the
timing thread (and ONNX Runtime's pool, created after pinning) to fixed cores.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TypeVar

import numpy as np
import onnxruntime as ort
from torch import nn

from mnas.latency.cache import LatencyCache, Nominal, cache_key
from mnas.latency.profile import Profile, profile_session
from mnas.latency.references import (
    DEFAULT_REFERENCES,
    reference_network,
    references_id,
    resolve_references,
)
from mnas.latency.session import (
    EXPORT_FORMAT,
    OPSET,
    check_graph_optimization,
    export_onnx,
    machine_fingerprint,
    make_session,
    session_options,
)
from mnas.latency.stats import LatencyError, LatencyStats, geometric_mean, stats_from_samples
from mnas.latency.timing import (
    TimingPlan,
    Timings,
    bound_runner,
    positive_int,
    resolve_clock,
    time_runs,
)
from mnas.nn import build_model
from mnas.space import Architecture

log = logging.getLogger(__name__)

# How long the references' nominal is timed alone (all of them together).
REFERENCE_SECONDS = 2.0
T = TypeVar("T")


def describe_arch(arch: Architecture) -> str:
    return f"architecture {arch.hash} ({arch.key})"


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


class OrtLatency:
    """Latency measured on ONNX Runtime's CPU execution provider, with an optional cache.

    Args:
        input_size: image height and width.
        in_channels: image channels.
        num_classes: classifier outputs.
        width_mult: width multiplier passed to the builder.
        stem_stride: stem stride passed to the builder.
        batch_size: images per run.
        threads: ONNX Runtime intra-op threads (1 = the paper's single core).
        warmup, min_runs, max_runs, rel_ci, time_cap_s: see :class:`TimingPlan`.
        clock: ``cpu`` (the timing thread's CPU time; one thread only), ``wall`` (elapsed
            time) or ``auto`` (``cpu`` with one thread); see :func:`resolve_clock`.
        pin_cpu: if set, pin timing to CPUs ``pin_cpu .. pin_cpu + threads - 1`` with
            ``os.sched_setaffinity`` (Linux); ignored with a warning where unavailable.
        cache_path: SQLite file of cached measurements and nominals (``~`` allowed); opened
            lazily by the process that times, and a file that cannot be used is a miss
            with a warning. None disables caching.
        reference: time reference networks in blocks alternating with the candidate's and
            correct for the machine's speed drift (see the module docstring).
        references: which (:mod:`mnas.latency.references`): ``auto`` (the default:
            ``space:7`` and ``space:11`` up to 32x32, ``mobilenetv2`` above), or names,
            ``mobilenetv2`` or ``space:SEED``, one or several, each timed in a block of its
            own; the drift factor is the nominal over the geometric mean of their medians.
            :attr:`references` holds the resolved names.
        reference_ms: the references' nominal (the geometric mean of their medians timed
            alone); None: from the cache, or timed on first use (give it to make several
            evaluators share one scale).
        graph_optimization: ONNX Runtime's graph optimisation level (:data:`GRAPH_OPTIMIZATION`);
            a level other than ``all`` is part of the set-up (cache key, nominal, predictor).
        repeats: time a network this many times, each in a new session under the full
            timing plan (and drift correction), and report the median of all the corrected
            runs: the moment-to-moment noise averages out at ``repeats`` times the cost (the
            same quantity, so not part of the cache key).

    Attributes:
        exports: ONNX exports attempted so far (a cache hit does not export).
        cache_hits: measurements answered from the cache.
    """

    def __init__(
        self,
        input_size: int = 224,
        in_channels: int = 3,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        stem_stride: int = 2,
        batch_size: int = 1,
        threads: int = 1,
        warmup: int = 5,
        min_runs: int = 15,
        max_runs: int = 300,
        rel_ci: float = 0.01,
        time_cap_s: float = 0.6,
        clock: str = "auto",
        pin_cpu: int | None = None,
        cache_path: str | os.PathLike | None = None,
        reference: bool = False,
        reference_ms: float | None = None,
        graph_optimization: str = "all",
        repeats: int = 1,
        references: Sequence[str] = DEFAULT_REFERENCES,
    ) -> None:
        self.graph_optimization = check_graph_optimization(graph_optimization)
        self.repeats = positive_int("repeats", repeats)
        self.input_size = positive_int("input_size", input_size)
        self.in_channels = positive_int("in_channels", in_channels)
        self.num_classes = positive_int("num_classes", num_classes)
        self.stem_stride = positive_int("stem_stride", stem_stride)
        self.batch_size = positive_int("batch_size", batch_size)
        self.threads = positive_int("threads", threads)
        if not width_mult > 0:
            raise ValueError(f"width_mult={width_mult} must be > 0")
        self.width_mult = float(width_mult)
        self.plan = TimingPlan(warmup, min_runs, max_runs, rel_ci, time_cap_s)
        self.clock = resolve_clock(clock, self.threads)
        self.pin_cpus = self._pin_set(pin_cpu)
        self.cache = LatencyCache(cache_path) if cache_path is not None else None
        self.reference = bool(reference)
        self.references = resolve_references(references, self.input_size)
        # what set-ups and keys record (resolved once: cache keys are made per lookup)
        self.reference_id = references_id(self.references)
        if reference_ms is not None and not reference_ms > 0:
            raise ValueError(f"reference_ms={reference_ms} must be > 0 (or None)")
        self.reference_ms = reference_ms
        self._ref_runs: list[Callable[[], None]] | None = None
        self._nominal: Nominal | None = None
        self._cache_broken = False
        self.exports = 0
        self.cache_hits = 0

    def __getstate__(self) -> dict:
        # ONNX Runtime sessions do not pickle, and the nominal and the cache's health belong
        # to the machine that times: a copy in another process finds its own.
        return {**self.__dict__, "_ref_runs": None, "_nominal": None, "_cache_broken": False}

    def _pin_set(self, pin_cpu: int | None) -> frozenset[int] | None:
        if pin_cpu is None:
            return None
        if not hasattr(os, "sched_setaffinity"):
            log.warning("pin_cpu=%s ignored: os.sched_setaffinity is not available", pin_cpu)
            return None
        wanted = frozenset(range(pin_cpu, pin_cpu + self.threads))
        allowed = os.sched_getaffinity(0)
        if pin_cpu < 0 or not wanted <= allowed:
            raise ValueError(
                f"pin_cpu={pin_cpu} with threads={self.threads} needs CPUs {sorted(wanted)}; "
                f"this process may use {sorted(allowed)}"
            )
        return wanted

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch_size, self.in_channels, self.input_size, self.input_size)

    def setup(self) -> dict:
        """Everything besides the architecture that changes a measurement's meaning
        (with drift correction: the reference networks and their nominal, the scale)."""
        setup = self._base_setup()
        if self.reference:
            setup["reference"] = self.reference_id
            setup["nominal_ms"] = self.nominal().ms
        return setup

    def _base_setup(self) -> dict:
        setup = {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "width_mult": self.width_mult,
            "stem_stride": self.stem_stride,
            "threads": self.threads,
            "clock": self.clock,
            "onnxruntime": ort.__version__,
            "machine": machine_fingerprint(),
            "opset": OPSET,
            "export_format": EXPORT_FORMAT,
        }
        if self.graph_optimization != "all":  # ("all": the keys cached before it was a setting)
            setup["graph_optimization"] = self.graph_optimization
        return setup

    def _build(self, arch: Architecture) -> nn.Module:
        return build_model(
            arch,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            width_mult=self.width_mult,
            stem_stride=self.stem_stride,
        )

    def _cached(self, what: str, op: Callable[[LatencyCache], T], default: T) -> T:
        """``op(cache)``, or ``default`` without a usable cache: a cache that fails once
        (unreadable, not a database, locked past the timeout) is left alone from then on,
        with one warning, so that it costs a miss and never a measurement."""
        if self.cache is None or self._cache_broken:
            return default
        try:
            return op(self.cache)
        except (sqlite3.Error, OSError) as e:
            self._cache_broken = True
            log.warning(
                "latency cache %s cannot be used (%s while trying to %s: %s); "
                "timing without it from now on",
                self.cache.file,
                type(e).__name__,
                what,
                e,
            )
            return default

    def reference_runners(self) -> list[Callable[[], None]]:
        """Bound runs of the reference networks (``references``), made on first use.

        Raises:
            LatencyError: if a reference cannot be exported or loaded.
        """
        if self._ref_runs is None:
            runs = []
            for name in self.references:
                try:
                    onnx_bytes = export_onnx(
                        self._build(reference_network(name)),
                        self.input_size,
                        self.in_channels,
                        self.batch_size,
                    )
                    with self._pinned():
                        session = make_session(onnx_bytes, self.threads, self.graph_optimization)
                        runs.append(bound_runner(session, self.input_shape))
                except Exception as e:
                    raise LatencyError(f"cannot time the reference network {name}: {e}") from e
            self._ref_runs = runs
        return self._ref_runs

    def nominal_key(self) -> str:
        """Cache key of the nominal: the reference networks themselves and everything that
        changes their timing (input shape, classes, width, threads, clock, ONNX Runtime,
        opset, export format, machine)."""
        return cache_key({"reference_nominal": self.reference_id, **self._base_setup()})

    def nominal(self) -> Nominal:
        """The references' nominal, which sets the drift-corrected scale: ``reference_ms``
        if given, else the cache's for :meth:`nominal_key`, else timed alone now for up to
        ``REFERENCE_SECONDS`` (or 4 time caps, if less) and stored, unless another process
        stored one first."""
        if self._nominal is None:
            if self.reference_ms is not None:
                self._nominal = Nominal(float(self.reference_ms), None)
                return self._nominal
            key = self.nominal_key()
            stored = self._cached("read the nominal", lambda c: c.get_nominal(key), None)
            if stored is None:
                timed = self._time_nominal(min(REFERENCE_SECONDS, 4 * self.plan.time_cap_s))
                stored = self._cached(
                    "store the nominal", lambda c: c.put_nominal(key, timed), timed
                )
                log.info("references %s: nominal %.4f ms", ",".join(self.references), stored.ms)
            self._nominal = stored
        return self._nominal

    def _time_nominal(self, seconds: float) -> Nominal:
        """Each reference timed alone for its share of ``seconds``; the geometric mean of
        their medians."""
        plan = TimingPlan(
            warmup=10,
            min_runs=50,
            max_runs=10_000_000,
            rel_ci=0.002,
            time_cap_s=seconds / len(self.references),
        )
        with self._pinned():
            medians = [
                float(np.median(time_runs(run, plan, clock=self.clock).samples))
                for run in self.reference_runners()
            ]
        return Nominal(geometric_mean(medians), time.time(), _load_average())

    def remeasure_nominal(self, seconds: float = 10.0) -> tuple[Nominal | None, Nominal]:
        """Time the references alone for up to ``seconds`` and store it as the nominal in
        place of the one stored (a first nominal taken on a busy machine biases every
        later figure). Figures cached on the old scale stop matching (the nominal is in
        their key). Returns (the previous nominal or None, the new one).

        Raises:
            ValueError: without a cache, or for ``seconds <= 0``.
            sqlite3.Error, OSError: if the cache cannot be used.
        """
        if self.cache is None:
            raise ValueError("no cache_path: there is no stored nominal to replace")
        if not seconds > 0:
            raise ValueError(f"seconds={seconds} must be > 0")
        key = self.nominal_key()
        previous = self.cache.get_nominal(key)
        self._nominal = self.cache.put_nominal(key, self._time_nominal(seconds), replace=True)
        return previous, self._nominal

    def cache_key(self, arch: Architecture) -> str:
        return cache_key({"arch": arch.hash, **self.setup()})

    def measure(self, arch: Architecture) -> LatencyStats:
        """Latency of ``arch``, from the cache when this setup has timed it before.

        Raises:
            LatencyError: naming the architecture if it cannot be built, exported or run;
                nothing is cached then.
        """
        key = ""
        if self.cache is not None:
            key = self.cache_key(arch)
            hit = self._cached("read a measurement", lambda c: c.get(key), None)
            if hit is not None:
                self.cache_hits += 1
                return replace(hit, source="cache", export_seconds=0.0)

        stats = self._measure(lambda: self._build(arch), describe_arch(arch))
        if self.cache is not None:
            setup = self.setup()
            self._cached(
                "store a measurement", lambda c: c.put(key, arch.hash, arch.key, setup, stats), None
            )
        return stats

    def measure_afresh(self, arch: Architecture) -> LatencyStats:
        """Latency of ``arch`` measured now, never from the cache (with drift correction the
        cache still gives the nominal): what fits and checks a latency predictor, and the
        re-measurement of a search's front.

        Raises:
            LatencyError: naming the architecture if it cannot be built, exported or run.
        """
        return self._measure(lambda: self._build(arch), describe_arch(arch))

    def measure_model(self, model: nn.Module, name: str) -> LatencyStats:
        """Latency of an already built model, measured now (never from the cache; with
        drift correction the cache still gives the nominal): for retraining, export and
        ``python -m mnas latency``.

        Raises:
            LatencyError: naming ``name`` if the model cannot be exported or run.
        """
        return self._measure(lambda: model, name)

    def measure_profiled(self, arch: Architecture, runs: int = 20) -> tuple[LatencyStats, Profile]:
        """:meth:`measure_afresh`, and ONNX Runtime's per-node profile of the same export over
        ``runs`` runs (:mod:`mnas.latency.profile`; same threads, optimisation level and
        pinning, not drift-corrected).

        Raises:
            LatencyError: naming the architecture if it cannot be built, exported or run.
        """
        profiles: list[Profile] = []
        stats = self._measure(lambda: self._build(arch), describe_arch(arch), profiles, runs)
        return stats, profiles[0]

    def time_onnx(self, onnx_bytes: bytes, input_shape: tuple[int, ...]) -> list[float]:
        """Timed runs (ms) of an ONNX graph under this evaluator's threads, pinning, plan,
        clock and drift correction."""
        with self._pinned():
            run = bound_runner(
                make_session(onnx_bytes, self.threads, self.graph_optimization), input_shape
            )
            timings, factor = self._timed(run)
        return [t * factor for t in timings.samples]

    def _timed(self, run: Callable[[], None]) -> tuple[Timings, float]:
        """Timed runs and the drift factor (1.0 without the reference)."""
        if not self.reference:
            return time_runs(run, self.plan, clock=self.clock), 1.0
        nominal = self.nominal().ms
        timings = time_runs(run, self.plan, self.reference_runners(), self.clock)
        return timings, nominal / timings.ref_median()

    def _measure(
        self,
        make_model: Callable[[], nn.Module],
        name: str,
        profiles: list[Profile] | None = None,
        profile_runs: int = 0,
    ) -> LatencyStats:
        if self.reference:
            # before the clock starts: the references' exports are not this network's
            self.nominal()
            self.reference_runners()
        t0 = time.perf_counter()
        try:
            model = make_model()
            self.exports += 1
            onnx_bytes = export_onnx(model, self.input_size, self.in_channels, self.batch_size)
            samples: list[float] = []
            wall: list[float] = []
            factors: list[float] = []
            with self._pinned():
                for k in range(self.repeats):
                    run = bound_runner(
                        make_session(onnx_bytes, self.threads, self.graph_optimization),
                        self.input_shape,
                    )
                    if k == 0:
                        export_seconds = time.perf_counter() - t0
                    timings, factor = self._timed(run)
                    samples.extend(t * factor for t in timings.samples)
                    wall.extend(timings.wall)
                    factors.append(factor)
                if profiles is not None:  # after the timing, on the same export
                    so = session_options(self.threads, self.graph_optimization)
                    profiles.append(profile_session(so, onnx_bytes, self.input_shape, profile_runs))
        except Exception as e:
            raise LatencyError(f"cannot time {name}: {type(e).__name__}: {e}") from e
        factor = float(np.median(factors))
        stats = stats_from_samples(
            samples,
            export_seconds,
            "measured",
            factor,
            nominal_ms=self.nominal().ms if self.reference else None,
            clock=self.clock,
            # one timing: its interval (with the reference's); repeated: the pooled runs'
            ci_rel=timings.ci_rel(self.reference) if self.repeats == 1 else None,
            wall_median_ms=float(np.median(wall)),
        )
        log.debug(
            "%s: median %.3f ms (%s, %s clock; p10 %.3f, p90 %.3f, cv %.3f, %d runs, "
            "export %.2f s)",
            name,
            stats.median_ms,
            stats.scale,
            stats.clock,
            stats.p10_ms,
            stats.p90_ms,
            stats.cv,
            stats.runs,
            stats.export_seconds,
        )
        return stats

    @contextmanager
    def _pinned(self) -> Iterator[None]:
        if self.pin_cpus is None:
            yield
            return
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.pin_cpus)
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)
