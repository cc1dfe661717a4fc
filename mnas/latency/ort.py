"""Measured latency: ONNX export in memory, an ONNX Runtime CPU session, timed runs.

How a figure is produced (see docs/latency.md):

1. the network is exported to ONNX in memory (TorchScript exporter, eval mode, batch-norm
   folded) with torch limited to one thread, so export does not fight the timing or other
   processes for cores;
2. a ``CPUExecutionProvider`` session is created with ``threads`` intra-op threads, one
   inter-op thread, sequential execution and full graph optimisation;
3. after ``warmup`` untimed runs, runs are timed one by one (input and output bound once,
   so Python overhead is one call) until the 95% confidence interval of the median is
   within ``rel_ci`` of it, ``max_runs`` is reached, or ``time_cap_s`` has passed;
4. the median, p10, p90, mean and coefficient of variation of the timed runs are returned.

With ``reference=True`` timing alternates between blocks of runs of the candidate and of a
fixed reference network (the space's MobileNetV2 at the same setup; :func:`time_runs`), and
all of the candidate's timings are multiplied by
``nominal / median(reference runs)``, where ``nominal`` is the reference's median measured
once (and kept in the cache, so every run on this machine shares it). On a shared or
virtual machine the speed drifts by several percent within seconds, and it drifts for
every network alike; the correction cancels that common factor, which makes repeated
measurements and rankings far more repeatable (figures in docs/latency.md).

Timing must not overlap training: the search runs a separate latency phase in which
children are timed one at a time while nothing trains. ``pin_cpu`` additionally pins the
timing thread (and ONNX Runtime's pool, created after pinning) to fixed cores.
"""

from __future__ import annotations

import functools
import gc
import io
import json
import logging
import os
import platform
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from mnas.latency.cache import LatencyCache, cache_key
from mnas.latency.stats import LatencyError, LatencyStats, median_ci_halfwidth, stats_from_samples
from mnas.nn import build_model
from mnas.space import Architecture, MnasSpace

log = logging.getLogger(__name__)

OPSET = 17
# The network timed in blocks alternating with the candidate's when drift correction is on.
REFERENCE_NAME = "mobilenetv2"
REFERENCE_SECONDS = 2.0
# Timed runs per block when candidate and reference alternate, each block after this many
# untimed runs (the other network has just used the caches).
REFERENCE_BLOCK = 8
REFERENCE_UNTIMED = 1
# Bump when export settings change the graph, so old cache entries stop matching.
EXPORT_FORMAT = 1
T = TypeVar("T")


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    # Tracing runs a real forward pass; with torch's default pool on a busy machine that
    # pass is several times slower than the whole ONNX measurement.
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def export_onnx(model: nn.Module, input_size: int, in_channels: int, batch_size: int = 1) -> bytes:
    """Export ``model`` (in eval mode) to ONNX bytes for a square ``input_size`` image batch.

    The input is named ``input`` and the output ``output``; shapes are static. The model's
    train/eval mode is restored afterwards.

    Raises:
        ValueError: on a non-positive size, channel count or batch.
        Exception: whatever ``torch.onnx.export`` raises for a model it cannot export.
    """
    positive_int("input_size", input_size)
    positive_int("in_channels", in_channels)
    positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    x = torch.zeros(batch_size, in_channels, input_size, input_size)
    buf = io.BytesIO()
    try:
        with torch_threads(1), torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter announces its deprecation on every call.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (x,),
                buf,
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["output"],
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    return buf.getvalue()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Hardware", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_description() -> dict:
    """What the fingerprint is made of: OS, architecture, CPU model, logical CPU count."""
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
    }


@functools.cache
def machine_fingerprint() -> str:
    """12 hex digits identifying the kind of machine (not the host): two machines with the
    same OS, architecture, CPU model and CPU count share cached latencies."""
    text = json.dumps(machine_description(), sort_keys=True)
    return cache_key({"machine": text})[:12]


def make_session(onnx_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, all graph optimisations."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class TimingPlan:
    """When to stop timing.

    Attributes:
        warmup: untimed runs first (allocations, caches, CPU frequency).
        min_runs: timed runs before the stopping rule is consulted.
        max_runs: timed runs at most.
        rel_ci: stop once the 95% CI half-width of the median is within this fraction of it
            (checked every 5 runs from ``min_runs`` on; the interval needs 8 runs to exist).
        time_cap_s: stop after this many seconds of timed runs (once 5 runs are in).
    """

    warmup: int = 5
    min_runs: int = 15
    max_runs: int = 300
    rel_ci: float = 0.01
    time_cap_s: float = 0.6

    def __post_init__(self) -> None:
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup={self.warmup!r} must be an integer >= 0")
        positive_int("min_runs", self.min_runs)
        positive_int("max_runs", self.max_runs)
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs={self.max_runs} must be >= min_runs={self.min_runs}")
        if not self.rel_ci > 0:
            raise ValueError(f"rel_ci={self.rel_ci} must be > 0")
        if not self.time_cap_s > 0:
            raise ValueError(f"time_cap_s={self.time_cap_s} must be > 0")


_CHECK_EVERY = 5
_MIN_RUNS_AT_CAP = 5


def bound_runner(session: ort.InferenceSession, input_shape: tuple[int, ...]) -> Callable[[], None]:
    """One run of ``session`` on a fixed random input, with input and output bound once so
    that a timed call costs one Python call on top of the graph."""
    x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, x)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cpu")
    return functools.partial(session.run_with_iobinding, binding)


def time_runs(
    run: Callable[[], None], plan: TimingPlan, reference: Callable[[], None] | None = None
) -> tuple[list[float], list[float]]:
    """Timed calls of ``run`` (ms) following ``plan``'s stopping rule.

    With a ``reference``, timing alternates between blocks of ``REFERENCE_BLOCK`` timed
    calls of ``run`` and of ``reference``, each block after ``REFERENCE_UNTIMED`` untimed
    calls (the other network has just used the caches), so that both see the same machine
    speed while each is still timed warm, back to back. Returns the two lists of timings
    (the second empty without a reference).
    """
    samples: list[float] = []
    ref_samples: list[float] = []

    def timed(fn: Callable[[], None], out: list[float], untimed: int, count: int) -> None:
        for _ in range(untimed):
            fn()
        for _ in range(count):
            t0 = time.perf_counter_ns()
            fn()
            out.append((time.perf_counter_ns() - t0) / 1e6)

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(plan.warmup):
            run()
            if reference is not None:
                reference()
        start = time.perf_counter()
        while len(samples) < plan.max_runs:
            switch = reference is not None and bool(samples) and len(samples) % REFERENCE_BLOCK == 0
            if switch:
                timed(reference, ref_samples, REFERENCE_UNTIMED, REFERENCE_BLOCK)
            timed(run, samples, REFERENCE_UNTIMED if switch else 0, 1)
            n = len(samples)
            if n >= _MIN_RUNS_AT_CAP and time.perf_counter() - start > plan.time_cap_s:
                break
            if n >= plan.min_runs and (n - plan.min_runs) % _CHECK_EVERY == 0:
                if median_ci_halfwidth(samples) <= plan.rel_ci:
                    break
        if reference is not None and len(ref_samples) < len(samples):
            # close with a reference block, so that it brackets the last candidate block
            timed(reference, ref_samples, REFERENCE_UNTIMED, REFERENCE_BLOCK)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, ref_samples


def time_session(
    session: ort.InferenceSession, input_shape: tuple[int, ...], plan: TimingPlan
) -> list[float]:
    """Timed runs of ``session`` in milliseconds, following ``plan``'s stopping rule."""
    return time_runs(bound_runner(session, input_shape), plan)[0]


def describe_arch(arch: Architecture) -> str:
    return f"architecture {arch.hash} ({arch.key})"


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
        pin_cpu: if set, pin timing to CPUs ``pin_cpu .. pin_cpu + threads - 1`` with
            ``os.sched_setaffinity`` (Linux); ignored with a warning where unavailable.
        cache_path: SQLite file of cached measurements and nominals (``~`` allowed); opened
            lazily by the process that times, and a file that cannot be used is a miss
            with a warning. None disables caching.
        reference: time a reference network in blocks alternating with the candidate's and
            correct for the machine's speed drift (see the module docstring).
        reference_ms: the reference's nominal median; None: from the cache, or timed on
            first use (give it to make several evaluators share one scale).

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
        pin_cpu: int | None = None,
        cache_path: str | os.PathLike | None = None,
        reference: bool = False,
        reference_ms: float | None = None,
    ) -> None:
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
        self.pin_cpus = self._pin_set(pin_cpu)
        self.cache = LatencyCache(cache_path) if cache_path is not None else None
        self.reference = bool(reference)
        if reference_ms is not None and not reference_ms > 0:
            raise ValueError(f"reference_ms={reference_ms} must be > 0 (or None)")
        self.reference_ms = reference_ms
        self._ref: tuple[Callable[[], None], float] | None = None
        self._cache_broken = False
        self.exports = 0
        self.cache_hits = 0

    def __getstate__(self) -> dict:
        # ONNX Runtime sessions do not pickle, and the cache's health belongs to the
        # machine that times: a copy in another process finds its own.
        return {**self.__dict__, "_ref": None, "_cache_broken": False}

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
        """Everything besides the architecture that changes a measurement's meaning."""
        setup = self._base_setup()
        if self.reference:
            setup["reference"] = REFERENCE_NAME
        return setup

    def _base_setup(self) -> dict:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "width_mult": self.width_mult,
            "stem_stride": self.stem_stride,
            "threads": self.threads,
            "onnxruntime": ort.__version__,
            "machine": machine_fingerprint(),
            "opset": OPSET,
            "export_format": EXPORT_FORMAT,
        }

    def _build(self, arch: Architecture) -> nn.Module:
        return build_model(
            arch,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            width_mult=self.width_mult,
            stem_stride=self.stem_stride,
        )

    def reference_runner(self) -> tuple[Callable[[], None], float]:
        """The reference network's bound run and its nominal median (ms), made on first use.

        The nominal is ``reference_ms`` if given, else the cache's for this setup, else
        timed alone for up to ``REFERENCE_SECONDS`` (or 4 time caps, if less) and stored
        in the cache.
        """
        if self._ref is None:
            space = MnasSpace()
            arch = space.architecture(space.baseline_tokens())
            try:
                onnx_bytes = export_onnx(
                    self._build(arch), self.input_size, self.in_channels, self.batch_size
                )
                with self._pinned():
                    run = bound_runner(make_session(onnx_bytes, self.threads), self.input_shape)
            except Exception as e:
                raise LatencyError(f"cannot time the reference network: {e}") from e
            key = cache_key({"reference_nominal": REFERENCE_NAME, **self._base_setup()})
            nominal = self.reference_ms
            if nominal is None:
                nominal = self._cached("read the nominal", lambda c: c.get_reference(key), None)
            if nominal is None:
                # as precise as a few measurements together, at most REFERENCE_SECONDS
                plan = TimingPlan(
                    warmup=10,
                    min_runs=50,
                    max_runs=100_000,
                    rel_ci=0.002,
                    time_cap_s=min(REFERENCE_SECONDS, 4 * self.plan.time_cap_s),
                )
                with self._pinned():
                    samples, _ = time_runs(run, plan)
                timed = float(np.median(samples))
                nominal = self._cached(
                    "store the nominal", lambda c: c.put_reference(key, timed), timed
                )
                log.info("reference %s: nominal %.4f ms", REFERENCE_NAME, nominal)
            self._ref = (run, nominal)
        return self._ref

    def cache_key(self, arch: Architecture) -> str:
        return cache_key({"arch": arch.hash, **self.setup()})

    def measure(self, arch: Architecture) -> LatencyStats:
        """Latency of ``arch``, from the cache when this setup has timed it before.

        Raises:
            LatencyError: naming the architecture if it cannot be built, exported or run;
                nothing is cached then.
        """
        key = self.cache_key(arch) if self.cache is not None else ""
        if self.cache is not None:
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

    def measure_model(self, model: nn.Module, name: str) -> LatencyStats:
        """Latency of an already built model (not cached): for retraining and export.

        Raises:
            LatencyError: naming ``name`` if the model cannot be exported or run.
        """
        return self._measure(lambda: model, name)

    def time_onnx(self, onnx_bytes: bytes, input_shape: tuple[int, ...]) -> list[float]:
        """Timed runs (ms) of an ONNX graph under this evaluator's threads, pinning, plan
        and drift correction."""
        ref = self.reference_runner() if self.reference else None
        with self._pinned():
            run = bound_runner(make_session(onnx_bytes, self.threads), input_shape)
            samples, _ = self._timed(run, ref)
        return samples

    def _timed(
        self, run: Callable[[], None], ref: tuple[Callable[[], None], float] | None
    ) -> tuple[list[float], float]:
        """Timed runs, corrected by the reference's drift factor when there is one."""
        if ref is None:
            return time_runs(run, self.plan)[0], 1.0
        samples, ref_samples = time_runs(run, self.plan, ref[0])
        factor = ref[1] / float(np.median(ref_samples))
        return [t * factor for t in samples], factor

    def _measure(self, make_model: Callable[[], nn.Module], name: str) -> LatencyStats:
        ref = self.reference_runner() if self.reference else None
        t0 = time.perf_counter()
        try:
            model = make_model()
            self.exports += 1
            onnx_bytes = export_onnx(model, self.input_size, self.in_channels, self.batch_size)
            with self._pinned():
                run = bound_runner(make_session(onnx_bytes, self.threads), self.input_shape)
                export_seconds = time.perf_counter() - t0
                samples, factor = self._timed(run, ref)
        except Exception as e:
            raise LatencyError(f"cannot time {name}: {type(e).__name__}: {e}") from e
        stats = stats_from_samples(samples, export_seconds, "measured", factor)
        log.debug(
            "%s: median %.3f ms (p10 %.3f, p90 %.3f, cv %.3f, %d runs, export %.2f s)",
            name,
            stats.median_ms,
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
