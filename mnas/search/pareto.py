"""Accuracy-latency Pareto fronts and their hypervolume (2-D, exact).

Points are ``(latency, accuracy)``: latency is minimised, accuracy maximised. The helpers at
the end work on whole tables of rows (numpy columns), as the NAS-Bench-201 benchmark needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, sorted by latency (ascending).

    A point is dominated when another is no slower and no less accurate and strictly
    better in one of the two. Of exact duplicates only the first is kept. Points with a
    non-finite coordinate are ignored.
    """
    order = sorted(
        (i for i, (lat, acc) in enumerate(points) if math.isfinite(lat) and math.isfinite(acc)),
        key=lambda i: (points[i][0], -points[i][1], i),
    )
    front: list[int] = []
    best_acc = -math.inf
    for i in order:
        if points[i][1] > best_acc:
            front.append(i)
            best_acc = points[i][1]
    return front


def hypervolume(
    points: Sequence[tuple[float, float]], ref_latency: float, ref_accuracy: float
) -> float:
    """Area dominated by ``points`` and bounded by the reference point.

    The reference is a (slow, inaccurate) corner: only the parts of points with
    ``latency < ref_latency`` and ``accuracy > ref_accuracy`` count.
    """
    inside = [(lat, acc) for lat, acc in points if lat < ref_latency and acc > ref_accuracy]
    if not inside:
        return 0.0
    front = [inside[i] for i in pareto_indices(inside)]
    area = 0.0
    for k, (lat, acc) in enumerate(front):
        next_lat = front[k + 1][0] if k + 1 < len(front) else ref_latency
        area += (next_lat - lat) * (acc - ref_accuracy)
    return area


def true_front(latencies: np.ndarray, accuracies: np.ndarray) -> list[int]:
    """Rows of the accuracy-latency Pareto front of a whole table, by latency ascending."""
    return pareto_indices(list(zip(latencies.tolist(), accuracies.tolist(), strict=True)))


def median_reference(
    latencies: np.ndarray, accuracies: np.ndarray, connected: np.ndarray
) -> tuple[float, float]:
    """The hypervolume reference point ``(median latency, median accuracy)`` over connected
    cells (the disconnected ones have chance accuracy and near-zero latencies on some devices)."""
    return float(np.median(latencies[connected])), float(np.median(accuracies[connected]))


def hypervolume_of_rows(
    rows: Sequence[int],
    latencies: np.ndarray,
    accuracies: np.ndarray,
    ref_latency: float,
    ref_accuracy: float,
) -> float:
    """Hypervolume of the points ``(latencies[r], accuracies[r])`` for ``r`` in ``rows``."""
    points = [(float(latencies[r]), float(accuracies[r])) for r in rows]
    return hypervolume(points, ref_latency, ref_accuracy)


def best_under(latencies: np.ndarray, accuracies: np.ndarray, target_ms: float) -> float:
    """Best accuracy among rows with latency <= ``target_ms`` (-inf if there is none)."""
    ok = latencies <= target_ms
    return float(accuracies[ok].max()) if ok.any() else -math.inf
