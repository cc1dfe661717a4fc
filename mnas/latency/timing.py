"""Timing a callable: warm-up, adaptive number of timed runs, optional interleaved
reference, CPU or elapsed clock (no torch here; see docs/latency.md)."""

from __future__ import annotations

import functools
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from mnas.latency.stats import CLOCKS, median_ci_halfwidth

# Timed runs per block when candidate and reference alternate, each block after this many
# untimed runs (the other network has just used the caches).
REFERENCE_BLOCK = 8
REFERENCE_UNTIMED = 1


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


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


@dataclass(frozen=True)
class Timings:
    """What :func:`time_runs` measured, in milliseconds.

    Attributes:
        samples: the candidate's runs on the plan's clock.
        ref_samples: the reference's runs on the same clock (empty without one).
        wall: the candidate's runs in elapsed time, whatever the clock.
    """

    samples: list[float]
    ref_samples: list[float]
    wall: list[float]

    def ci_rel(self, with_reference: bool) -> float:
        """Relative half-width of the 95% interval of ``median(samples)``, or, with the
        reference, of ``median(samples) / median(ref_samples)`` (the two intervals
        combined in quadrature, as for a ratio of independent estimates; the drift the
        two share makes it conservative). ``inf`` while there are too few runs."""
        half = median_ci_halfwidth(self.samples)
        if with_reference:
            half = math.hypot(half, median_ci_halfwidth(self.ref_samples))
        return half


def resolve_clock(clock: str, threads: int) -> str:
    """``cpu`` or ``wall`` for a requested ``clock`` (``auto``: ``cpu`` with one thread
    where the thread CPU clock has sub-microsecond resolution, else ``wall``).

    Raises:
        ValueError: for an unknown clock, or ``cpu`` with more than one thread.
    """
    if clock == "auto":
        fine = time.get_clock_info("thread_time").resolution <= 1e-6
        return "cpu" if threads == 1 and fine else "wall"
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}; allowed: 'auto', {', '.join(map(repr, CLOCKS))}")
    if clock == "cpu" and threads != 1:
        raise ValueError(
            f"clock='cpu' with threads={threads}: the CPU clock sees only the calling "
            "thread, not ONNX Runtime's pool; use clock='wall'"
        )
    return clock


def time_runs(
    run: Callable[[], None],
    plan: TimingPlan,
    reference: Callable[[], None] | None = None,
    clock: str = "wall",
) -> Timings:
    """Timed calls of ``run`` following ``plan``'s stopping rule.

    ``clock="cpu"`` times the CPU time of this thread (ONNX Runtime with one intra-op
    thread runs the graph in the calling thread): time the scheduler gave to other
    processes is left out, which is most of the noise on a shared machine. Elapsed time is
    recorded as well (:attr:`Timings.wall`). The time cap is always on elapsed time.

    With a ``reference``, timing alternates between blocks of ``REFERENCE_BLOCK`` timed
    calls of ``run`` and of ``reference``, each block (the first included: warm-up ends
    with the reference) after ``REFERENCE_UNTIMED`` untimed calls, so that both see the
    same machine speed while each is still timed warm, back to back; the stopping rule
    then uses the interval of the ratio of the two medians (:meth:`Timings.ci_rel`).
    """
    samples: list[float] = []
    ref_samples: list[float] = []
    wall: list[float] = []
    read = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns

    def timed(fn: Callable[[], None], out: list[float], untimed: int, count: int) -> None:
        for _ in range(untimed):
            fn()
        for _ in range(count):
            w0 = time.perf_counter_ns()
            t0 = read()
            fn()
            t1 = read()
            w1 = time.perf_counter_ns()
            out.append((t1 - t0) / 1e6)
            if out is samples:
                wall.append((w1 - w0) / 1e6)

    timings = Timings(samples, ref_samples, wall)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(plan.warmup):
            run()
            if reference is not None:
                reference()
        start = time.perf_counter()
        while len(samples) < plan.max_runs:
            block_start = len(samples) % REFERENCE_BLOCK == 0
            switch = reference is not None and bool(samples) and block_start
            if switch:
                timed(reference, ref_samples, REFERENCE_UNTIMED, REFERENCE_BLOCK)
            untimed = REFERENCE_UNTIMED if reference is not None and block_start else 0
            timed(run, samples, untimed, 1)
            n = len(samples)
            if n >= _MIN_RUNS_AT_CAP and time.perf_counter() - start > plan.time_cap_s:
                break
            if n >= plan.min_runs and (n - plan.min_runs) % _CHECK_EVERY == 0:
                if timings.ci_rel(reference is not None) <= plan.rel_ci:
                    break
        if reference is not None and len(ref_samples) < len(samples):
            # close with a reference block, so that it brackets the last candidate block
            timed(reference, ref_samples, REFERENCE_UNTIMED, REFERENCE_BLOCK)
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def time_session(
    session: ort.InferenceSession, input_shape: tuple[int, ...], plan: TimingPlan
) -> list[float]:
    """Timed runs of ``session`` in milliseconds (elapsed), following ``plan``'s stopping
    rule."""
    return time_runs(bound_runner(session, input_shape), plan).samples
