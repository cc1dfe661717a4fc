"""Eager PyTorch CPU latency, with the same stopping rule and statistics as ONNX Runtime's."""

from __future__ import annotations

import gc
import time

import torch
from torch import nn

from mnas.latency.ort import TimingPlan
from mnas.latency.stats import LatencyStats, median_ci_halfwidth, stats_from_samples


@torch.no_grad()
def time_torch(
    model: nn.Module, input_shape: tuple[int, ...], threads: int, plan: TimingPlan
) -> LatencyStats:
    """Eager PyTorch CPU latency of ``model`` in eval mode: the same stopping rule and
    statistics as ONNX Runtime timing, with ``threads`` torch threads."""
    was_training = model.training
    before = torch.get_num_threads()
    model.eval()
    torch.set_num_threads(threads)
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(plan.warmup):
            model(x)
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < plan.max_runs:
            t0 = time.perf_counter_ns()
            model(x)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            n = len(samples)
            if n >= 5 and time.perf_counter() - start > plan.time_cap_s:
                break
            if n >= plan.min_runs and (n - plan.min_runs) % 5 == 0:
                if median_ci_halfwidth(samples) <= plan.rel_ci:
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
        torch.set_num_threads(before)
        model.train(was_training)
    return stats_from_samples(samples, 0.0, "measured")
