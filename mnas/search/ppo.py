"""Policy-gradient updates for the controller: PPO (clipped surrogate) and REINFORCE.

Symbols follow the PPO paper: ``r_t(theta) = pi_theta(a) / pi_theta_old(a)``.

Advantages (``PPOConfig.advantages``):

- ``rank`` (the default): centred ranks of the batch's rewards scaled to unit standard
  deviation, ties sharing their mean rank, as evolution strategies shape fitness. They do not
  depend on the reward's scale or offset, so the same learning rate works whatever the
  accuracy range, latency target or exponent (a soft reward's ``(LAT/T)**w`` factor spreads
  rewards by a few hundredths, a hard one by tenths).
- ``baseline``: NASNet's ``A = R - b`` with ``b`` an exponential moving average of rewards
  (optionally centred and divided by the batch's standard deviation, floored: see
  :func:`normalize_advantages`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mnas.search.controller import Controller

ADVANTAGES = ("rank", "baseline")


@dataclass(frozen=True)
class PPOConfig:
    """Settings of a policy update."""

    clip_eps: float = 0.2  # PPO clipping range epsilon
    epochs: int = 4  # optimisation passes over each batch (1 for REINFORCE)
    entropy_coef: float = 1e-5  # weight of the entropy bonus (NASNet: 1e-5)
    max_grad_norm: float = 1.0  # gradient clipping (<= 0 disables)
    advantages: str = "rank"  # rank | baseline (see the module docstring)
    baseline_decay: float = 0.95  # baseline advantages: EMA decay of the reward baseline
    normalize_advantages: bool = False  # baseline advantages: centre, divide by floored std

    def __post_init__(self) -> None:
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps={self.clip_eps} must lie in (0, 1)")
        if self.epochs < 1:
            raise ValueError(f"epochs={self.epochs} must be >= 1")
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef={self.entropy_coef} must be >= 0")
        if self.advantages not in ADVANTAGES:
            raise ValueError(f"advantages={self.advantages!r}; allowed: {list(ADVANTAGES)}")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"baseline_decay={self.baseline_decay} must lie in [0, 1)")


class EMABaseline:
    """Exponential moving average of rewards; starts at the first batch's mean."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.value: float | None = None

    def update(self, rewards: Tensor) -> float:
        mean = float(rewards.mean())
        self.value = (
            mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean
        )
        return self.value


# Rewards are accuracies scaled by a latency factor (order 0.1-1): a spread below this is
# noise, and dividing by it would turn noise into full-size updates.
ADVANTAGE_STD_FLOOR = 1e-3


def normalize_advantages(advantages: Tensor) -> Tensor:
    """``(A - mean A) / max(std A, floor)``.

    Centring first keeps a batch whose rewards are all equal (a whole batch failed; a
    collapsed controller sampling one architecture) from becoming huge same-sign
    advantages; the floor keeps a near-equal batch from being blown up to unit variance.
    Each result is at most ``sqrt(n - 1)`` in magnitude. A batch of one has no spread and
    is returned as it is.
    """
    if advantages.numel() < 2:
        return advantages
    centred = advantages - advantages.mean()
    return centred / centred.std().clamp_min(ADVANTAGE_STD_FLOOR)


def rank_advantages(rewards: Tensor) -> Tensor:
    """Centred ranks of ``rewards`` with unit standard deviation; equal rewards share their
    mean rank. All zeros when every reward is the same (nothing to prefer)."""
    r = rewards.double().reshape(-1)
    below = (r[None, :] < r[:, None]).sum(1)
    equal = (r[None, :] == r[:, None]).sum(1)
    centred = below + (equal - 1) / 2 - (len(r) - 1) / 2
    std = centred.std(unbiased=False)
    if std == 0:
        return torch.zeros(len(r))
    return (centred / std).float()


def ppo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    entropies: Tensor,
    clip_eps: float,
    entropy_coef: float,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate loss (to minimise) and its diagnostics."""
    ratio = torch.exp(log_probs - old_log_probs)
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)
    policy_loss = -surrogate.mean()
    entropy = entropies.mean()
    loss = policy_loss - entropy_coef * entropy
    with torch.no_grad():
        log_ratio = log_probs - old_log_probs
        diag = {
            "policy_loss": float(policy_loss.detach()),
            "entropy": float(entropy.detach()),
            "approx_kl": float(((ratio - 1) - log_ratio).mean()),
            "clip_fraction": float(((ratio - 1).abs() > clip_eps).float().mean()),
        }
    return loss, diag


def reinforce_loss(
    log_probs: Tensor, advantages: Tensor, entropies: Tensor, entropy_coef: float
) -> tuple[Tensor, dict[str, float]]:
    """REINFORCE loss ``-mean(log pi(a) * A) - c * H``."""
    policy_loss = -(log_probs * advantages).mean()
    entropy = entropies.mean()
    return policy_loss - entropy_coef * entropy, {
        "policy_loss": float(policy_loss.detach()),
        "entropy": float(entropy.detach()),
    }


def policy_update(
    controller: Controller,
    optimizer: torch.optim.Optimizer,
    tokens: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    config: PPOConfig,
    clipped: bool = True,
) -> dict[str, float]:
    """Run ``config.epochs`` passes of PPO (``clipped``) or one REINFORCE step.

    Returns the diagnostics of the last pass.
    """
    if config.advantages == "baseline" and config.normalize_advantages:
        advantages = normalize_advantages(advantages)
    diag: dict[str, float] = {}
    for _ in range(config.epochs if clipped else 1):
        log_probs, entropies = controller.evaluate(tokens)
        if clipped:
            loss, diag = ppo_loss(
                log_probs,
                old_log_probs,
                advantages,
                entropies,
                config.clip_eps,
                config.entropy_coef,
            )
        else:
            loss, diag = reinforce_loss(log_probs, advantages, entropies, config.entropy_coef)
        optimizer.zero_grad()
        loss.backward()
        if config.max_grad_norm > 0:
            diag["grad_norm"] = float(
                torch.nn.utils.clip_grad_norm_(controller.parameters(), config.max_grad_norm)
            )
        optimizer.step()
    return diag
