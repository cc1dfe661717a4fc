"""The MnasNet objective on hand-worked numbers (paper eq. 2)."""

import math

import pytest

from mnas.search.reward import FAILED_REWARD, RewardSpec, latency_weight, mnas_reward, preset


def test_soft_reward_below_and_above_target():
    # LAT = T/2 with alpha = -0.07: 0.8 * 0.5 ** -0.07 = 0.8 * 1.049717 = 0.839773
    assert mnas_reward(0.8, 37.5, 75.0, -0.07, -0.07) == pytest.approx(0.8 * 2**0.07)
    assert mnas_reward(0.8, 37.5, 75.0, -0.07, -0.07) == pytest.approx(0.839773, abs=1e-6)
    # LAT = 2T: 0.8 * 2 ** -0.07 = 0.8 * 0.952638 = 0.762110
    assert mnas_reward(0.8, 150.0, 75.0, -0.07, -0.07) == pytest.approx(0.762110, abs=1e-6)
    # at the target the factor is exactly 1
    assert mnas_reward(0.8, 75.0, 75.0, -0.07, -0.07) == 0.8


def test_doubling_latency_costs_about_five_percent_relative():
    ratio = mnas_reward(0.8, 150.0, 75.0, -0.07, -0.07) / mnas_reward(0.8, 75.0, 75.0, -0.07, -0.07)
    assert ratio == pytest.approx(1 / 1.05, abs=0.002)
    assert -math.log(1.05) / math.log(2) == pytest.approx(-0.07, abs=0.001)


def test_hard_reward():
    alpha, beta = preset("hard")
    assert (alpha, beta) == (0.0, -1.0)
    assert mnas_reward(0.7, 50.0, 75.0, alpha, beta) == 0.7  # no bonus for being faster
    assert mnas_reward(0.7, 150.0, 75.0, alpha, beta) == pytest.approx(0.35)  # 0.7 * (2) ** -1
    assert latency_weight(75.0, 75.0, alpha, beta) == 0.0
    assert latency_weight(75.01, 75.0, alpha, beta) == -1.0


def test_failed_children_get_a_defined_reward():
    assert mnas_reward(math.nan, 10.0, 75.0, -0.07, -0.07) == FAILED_REWARD == 0.0
    assert mnas_reward(0.9, math.nan, 75.0, -0.07, -0.07) == FAILED_REWARD
    assert mnas_reward(0.9, 0.0, 75.0, -0.07, -0.07) == FAILED_REWARD


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"target_ms": 0}, "T=0 must be"),
        ({"target_ms": -5.0}, "T=-5.0 must be"),
        ({"target_ms": 75, "alpha": 0.1}, "alpha=0.1 must be <= 0"),
        ({"target_ms": 75, "beta": 2.0}, "beta=2.0 must be <= 0"),
    ],
)
def test_bad_reward_settings(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        RewardSpec(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown reward preset 'medium'"):
        preset("medium")
