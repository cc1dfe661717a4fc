"""Eager PyTorch CPU latency, with the same stopping rule, clocks and statistics as ONNX
Runtime's."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mnas.latency.stats import LatencyStats, stats_from_samples
from mnas.latency.timing import TimingPlan, time_runs


@torch.no_grad()
def time_torch(
    model: nn.Module,
    input_shape: tuple[int, ...],
    threads: int,
    plan: TimingPlan,
    clock: str = "wall",
) -> LatencyStats:
    """Eager PyTorch CPU latency of ``model`` in eval mode, raw (there is no drift
    correction for it): the same stopping rule and statistics as ONNX Runtime timing, on
    ``clock`` (``cpu`` needs ``threads=1``: torch then computes in the calling thread),
    with ``threads`` torch threads."""
    was_training = model.training
    before = torch.get_num_threads()
    model.eval()
    torch.set_num_threads(threads)
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    try:
        timings = time_runs(lambda: model(x), plan, clock=clock)
    finally:
        torch.set_num_threads(before)
        model.train(was_training)
    return stats_from_samples(
        timings.samples, clock=clock, wall_median_ms=float(np.median(timings.wall))
    )
