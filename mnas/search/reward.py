"""The MnasNet objective (paper eq. 2), as pure functions.

``R(m) = ACC(m) * (LAT(m) / T) ** w`` with ``w = alpha`` if ``LAT(m) <= T`` else ``beta``.

Soft constraint: alpha = beta = -0.07 ("doubling latency costs about 5% relative accuracy",
-ln 1.05 / ln 2 = -0.0704). Hard constraint: alpha = 0, beta = -1.

A child that diverged or failed to build, export or train has no accuracy; it gets
:data:`FAILED_REWARD` (0.0), the lowest value the objective can take for accuracies in
[0, 1], so the controller learns to avoid it and no NaN ever reaches the policy update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FAILED_REWARD = 0.0

PRESETS: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0)}


@dataclass(frozen=True)
class RewardSpec:
    """Settings of the objective.

    Attributes:
        target_ms: target latency T (> 0), in the latency source's units.
        alpha: exponent when LAT <= T (<= 0).
        beta: exponent when LAT > T (<= 0).
    """

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        check_reward_params(self.target_ms, self.alpha, self.beta)


def check_reward_params(target_ms: float, alpha: float, beta: float) -> None:
    """Raise ValueError unless T > 0 (finite) and alpha, beta <= 0."""
    if not (isinstance(target_ms, int | float) and math.isfinite(target_ms) and target_ms > 0):
        raise ValueError(f"target latency T={target_ms!r} must be a finite number > 0 (ms)")
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not math.isfinite(value) or value > 0:
            raise ValueError(
                f"{name}={value} must be <= 0 (a slower model must never score higher); "
                "soft: alpha=beta=-0.07, hard: alpha=0, beta=-1"
            )


def preset(name: str) -> tuple[float, float]:
    """(alpha, beta) of a named preset: ``soft`` or ``hard``."""
    if name not in PRESETS:
        raise ValueError(f"unknown reward preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def latency_weight(latency: float, target: float, alpha: float, beta: float) -> float:
    """The exponent w: alpha when ``latency <= target``, else beta."""
    return alpha if latency <= target else beta


def mnas_reward(accuracy: float, latency: float, target: float, alpha: float, beta: float) -> float:
    """``accuracy * (latency / target) ** w``; :data:`FAILED_REWARD` for a non-finite or
    non-positive latency or a non-finite accuracy."""
    if not (math.isfinite(accuracy) and math.isfinite(latency)) or latency <= 0:
        return FAILED_REWARD
    w = latency_weight(latency, target, alpha, beta)
    return float(accuracy * (latency / target) ** w)
