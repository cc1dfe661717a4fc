"""Timing the networks a latency predictor is fitted to, in passes (issue 19).

One timing of a network on a shared machine scatters by a few percent even after the
drift correction, and the scatter has a slow part: networks timed minutes apart disagree
more than networks timed back to back (docs/results/latency-notebook.md, "An hour
later"). A predictor fitted to single timings learns that scatter as if it were the
network's cost, so :func:`time_networks` times every network in ``passes`` passes over the
whole set — the second in reverse order, so that a network timed early in one pass is
timed late in the next — and fits to each network's geometric mean. The first pass also
profiles each network (its blocks' times, :mod:`mnas.latency.profile`); the profile gives
the split between the blocks, which one pass tells well enough.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mnas.latency.ort import OrtLatency
from mnas.latency.profile import block_times
from mnas.latency.stats import geometric_mean
from mnas.space import Architecture, specs_of

log = logging.getLogger(__name__)

TIMING_PASSES = 2
"""Passes over the networks a predictor is built from (or re-fitted or re-checked with)."""
LATER_MARGIN = 1.05
"""How much longer than the first pass's mean (profiles left out) :func:`first_pass_full`
plans a later timing to take: in the first two builds by that rule (16x16 and 32x32,
2026-11-28) the second pass ran 2% slower than that estimate, and 2-3% of the networks
kept one timing."""


def time_network(
    evaluator: OrtLatency, arch: Architecture, profile_runs: int = 0
) -> tuple[float, list[float] | None, float]:
    """``arch`` timed afresh (ms), with ``profile_runs`` > 0 its time per block (ms) from
    ONNX Runtime's profile of the same export (None without), and the seconds the profile
    took (0 without)."""
    if not profile_runs:
        return evaluator.measure_afresh(arch).median_ms, None, 0.0
    stats, profile = evaluator.measure_profiled(arch, profile_runs)
    repeats = [s.repeats for s in specs_of(arch)]
    return stats.median_ms, [us / 1000 for us in block_times(profile, repeats)], profile.seconds


@dataclass(frozen=True)
class TimedNetworks:
    """Networks timed by :func:`time_networks`: ``ms`` is each network's geometric mean
    over its passes (``passes_ms``, in the order they were taken), ``block_ms`` its
    profiled block times (None without profiles)."""

    archs: list[Architecture]
    ms: list[float]
    passes_ms: list[list[float]]
    block_ms: list[list[float]] | None
    seconds: float


def first_pass_full(
    elapsed: float, networks: int, profile_seconds: float, passes: int, max_seconds: float
) -> bool:
    """Whether a first pass that has timed ``networks`` networks in ``elapsed`` seconds
    (``profile_seconds`` of them profiling, which later passes do not repeat) should stop
    rather than take one more: when one more first-pass network, plus ``passes - 1``
    later timings of every network, at this pass's mean costs (a later timing's with
    :data:`LATER_MARGIN`), would run past ``max_seconds``. Never before the first
    network."""
    if networks == 0:
        return False
    first = elapsed / networks
    later = LATER_MARGIN * max(elapsed - profile_seconds, 0.0) / networks
    return elapsed + first + (passes - 1) * later * (networks + 1) > max_seconds


def time_networks(
    evaluator: OrtLatency,
    archs: Sequence[Architecture],
    profile_runs: int = 0,
    passes: int = TIMING_PASSES,
    max_seconds: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TimedNetworks:
    """``archs`` timed in ``passes`` passes with ``evaluator`` (the first also profiled
    over ``profile_runs`` runs, if > 0). With ``max_seconds``, the first pass stops before
    a network that would leave too little of it for the later passes to re-time every
    network it has (:func:`first_pass_full`; the networks timed so far are the set), and
    the later passes stop at ``max_seconds``; a network a later pass did not reach keeps
    the timings it has. ``progress(done, total, seconds)`` is called after every timing
    (``total``: the timings planned).

    Raises:
        LatencyError: if a network cannot be timed or profiled.
        ValueError: for ``passes`` < 1 or ``profile_runs`` < 0.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes={passes!r}; allowed: an integer >= 1")
    if profile_runs < 0:
        raise ValueError(f"profile_runs={profile_runs}; allowed: >= 0 (0: no profiles)")
    t0 = time.perf_counter()
    total = len(archs) * passes
    done = 0
    timed: list[Architecture] = []
    timings: list[list[float]] = []
    blocks: list[list[float]] = []

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, time.perf_counter() - t0)

    profile_seconds = 0.0
    for i, arch in enumerate(archs):
        elapsed = time.perf_counter() - t0
        if max_seconds is not None and first_pass_full(
            elapsed, i, profile_seconds, passes, max_seconds
        ):
            log.info(
                "timing: first pass stopped after %d networks (%.0f s), leaving the later "
                "passes %.0f s of the %.0f s",
                i,
                elapsed,
                max_seconds - elapsed,
                max_seconds,
            )
            total = i * passes
            break
        ms, block_ms, seconds = time_network(evaluator, arch, profile_runs)
        profile_seconds += seconds
        timed.append(arch)
        timings.append([ms])
        if block_ms is not None:
            blocks.append(block_ms)
        tick()
    later = [
        (p, i)
        for p in range(1, passes)
        for i in (range(len(timed) - 1, -1, -1) if p % 2 else range(len(timed)))
    ]
    for p, i in later:
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            log.info("timing: pass %d stopped at the budget of %.0f s", p + 1, max_seconds)
            break
        timings[i].append(evaluator.measure_afresh(timed[i]).median_ms)
        tick()
    return TimedNetworks(
        archs=timed,
        ms=[geometric_mean(t) for t in timings],
        passes_ms=timings,
        block_ms=blocks or None,
        seconds=time.perf_counter() - t0,
    )
