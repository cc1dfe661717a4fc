"""Timing a callable: warm-up, adaptive number of timed runs, optional interleaved
reference networks, CPU or elapsed clock (no torch here; see docs/latency.md)."""

from __future__ import annotations

import functools
import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from mnas.latency.stats import CLOCKS, geometric_mean, median_ci_halfwidth

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
        ref_samples: each reference's runs on the same clock, one list per reference
            (empty without one).
        wall: the candidate's runs in elapsed time, whatever the clock.
    """

    samples: list[float]
    ref_samples: list[list[float]]
    wall: list[float]

    def ref_median(self) -> float:
        """The references' level: the geometric mean of their medians (the median itself
        for one reference)."""
        if not self.ref_samples:
            raise ValueError("no reference was timed")
        return geometric_mean([float(np.median(runs)) for runs in self.ref_samples])

    def ci_rel(self, with_reference: bool) -> float:
        """Relative half-width of the 95% interval of ``median(samples)``, or, with
        references, of ``median(samples) / ref_median()`` (the candidate's interval and
        the geometric mean's — each reference's combined in quadrature and divided by
        their number — combined in quadrature, as for a ratio of independent estimates;
        the drift they share makes it conservative). ``inf`` while there are too few
        runs."""
        half = median_ci_halfwidth(self.samples)
        if with_reference and self.ref_samples:
            refs = [median_ci_halfwidth(runs) for runs in self.ref_samples]
            half = math.hypot(half, math.hypot(*refs) / len(refs))
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
    reference: Callable[[], None] | Sequence[Callable[[], None]] | None = None,
    clock: str = "wall",
) -> Timings:
    """Timed calls of ``run`` following ``plan``'s stopping rule.

    ``clock="cpu"`` times the CPU time of this thread (ONNX Runtime with one intra-op
    thread runs the graph in the calling thread): time the scheduler gave to other
    processes is left out, which is most of the noise on a shared machine. Elapsed time is
    recorded as well (:attr:`Timings.wall`). The time cap is always on elapsed time.

    With a ``reference`` (one callable or several), timing alternates between a block of
    ``REFERENCE_BLOCK`` timed calls of ``run`` and one such block of each reference in
    turn, each block (the first included: warm-up ends with the references) after
    ``REFERENCE_UNTIMED`` untimed calls, so that all see the same machine speed while each
    is still timed warm, back to back; the stopping rule then uses the interval of the
    ratio of the candidate's median to the references' (:meth:`Timings.ci_rel`).
    """
    if reference is None:
        refs: list[Callable[[], None]] = []
    elif callable(reference):
        refs = [reference]
    else:
        refs = list(reference)
    samples: list[float] = []
    ref_samples: list[list[float]] = [[] for _ in refs]
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

    def reference_blocks() -> None:
        for ref, out in zip(refs, ref_samples, strict=True):
            timed(ref, out, REFERENCE_UNTIMED, REFERENCE_BLOCK)

    timings = Timings(samples, ref_samples, wall)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(plan.warmup):
            run()
            for ref in refs:
                ref()
        start = time.perf_counter()
        while len(samples) < plan.max_runs:
            block_start = len(samples) % REFERENCE_BLOCK == 0
            if refs and samples and block_start:
                reference_blocks()
            untimed = REFERENCE_UNTIMED if refs and block_start else 0
            timed(run, samples, untimed, 1)
            n = len(samples)
            if n >= _MIN_RUNS_AT_CAP and time.perf_counter() - start > plan.time_cap_s:
                break
            if n >= plan.min_runs and (n - plan.min_runs) % _CHECK_EVERY == 0:
                if timings.ci_rel(bool(refs)) <= plan.rel_ci:
                    break
        if refs and len(ref_samples[0]) < len(samples):
            # close with reference blocks, so that they bracket the last candidate block
            reference_blocks()
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
