"""LSTM controller, PPO loss and the strategies (issue 5)."""

import random

import pytest
import torch

from mnas.search.controller import Controller
from mnas.search.ppo import PPOConfig, ppo_loss
from mnas.search.strategies import make_strategy
from mnas.space import MnasSpace


def test_controller_is_sized_from_the_decision_list():
    space = MnasSpace()
    c = Controller(space.decisions, seed=0)
    assert set(c.heads) == set(MnasSpace.DECISION_NAMES)
    assert c.heads["conv_op"].out_features == 4 and c.heads["skip"].out_features == 3
    assert c.lstm.hidden_size == 100
    for p in c.parameters():  # NASNet: uniform in +-0.1
        assert p.abs().max() <= 0.1


def test_sample_log_probs_match_evaluate_and_entropy_is_of_full_distribution():
    space = MnasSpace()
    c = Controller(space.decisions, seed=0)
    s = c.sample(5, torch.Generator().manual_seed(1))
    assert s.tokens.shape == (5, 42)
    with torch.no_grad():
        logp, ent = c.evaluate(s.tokens)
    assert torch.allclose(logp, s.log_probs, atol=1e-5)
    # With +-0.1 weights the policy is near uniform: entropy ~ sum of log(#choices).
    uniform = sum(torch.tensor(len(d.choices)).log() for d in space.decisions)
    assert ent[0] == pytest.approx(float(uniform), rel=0.01)
    assert (ent <= uniform + 1e-4).all()


def test_fixed_seed_samples_the_same_first_architectures():
    archs = make_strategy("ppo", MnasSpace(), seed=0).ask(3)
    assert [a.hash for a in archs] == ["5838652b6e99dd04", "96b344989e63fa11", "14686438d6068e0a"]
    archs = make_strategy("random", MnasSpace(), seed=0).ask(2)
    assert [a.hash for a in archs] == ["4bdd0974792bcea0", "2f95fba292c2e7ab"]


def test_ppo_loss_sign_and_clipping():
    old = torch.zeros(4)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    ent = torch.zeros(4)
    # unchanged policy: loss = -mean(A) = 0; gradient raises log-prob of positive advantages
    logp = torch.zeros(4, requires_grad=True)
    loss, diag = ppo_loss(logp, old, adv, ent, clip_eps=0.2, entropy_coef=0.0)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0)
    assert (logp.grad[:2] < 0).all() and (logp.grad[2:] > 0).all()  # descent raises/lowers
    assert diag["clip_fraction"] == 0.0 and diag["approx_kl"] == pytest.approx(0.0)
    # ratio 1.5 on a positive advantage is clipped to 1.2 and has no gradient
    logp = torch.log(torch.tensor([1.5, 1.0, 1.0, 0.5])).requires_grad_()
    loss, diag = ppo_loss(logp, old, adv, ent, clip_eps=0.2, entropy_coef=0.0)
    loss.backward()
    # surrogates: min(1.5, 1.2)=1.2, 1, min(-1, -1)=-1, min(-0.5, -0.8)=-0.8
    assert float(loss.detach()) == pytest.approx(-(1.2 + 1.0 - 1.0 - 0.8) / 4)
    # clipped terms (ratio above 1.2 with A > 0, below 0.8 with A < 0) get no gradient
    assert logp.grad[0] == 0.0 and logp.grad[3] == 0.0
    assert logp.grad[1] != 0.0 and logp.grad[2] != 0.0
    assert diag["clip_fraction"] == pytest.approx(0.5)


def test_entropy_bonus_lowers_the_loss():
    args = (torch.zeros(2), torch.zeros(2), torch.ones(2), torch.full((2,), 3.0))
    loss0, _ = ppo_loss(*args, clip_eps=0.2, entropy_coef=0.0)
    loss1, _ = ppo_loss(*args, clip_eps=0.2, entropy_coef=0.1)
    assert float(loss0 - loss1) == pytest.approx(0.3)


@pytest.mark.parametrize("name", ["ppo", "reinforce"])
def test_controller_strategies_learn_a_simple_reward(name):
    # reward: fraction of blocks whose conv_op is mbconv6; the policy must move towards it.
    space = MnasSpace()
    strategy = make_strategy(name, space, seed=0, lr=0.02, ppo=PPOConfig(normalize_advantages=True))

    def reward(a):
        return sum(a.tokens[i] == 3 for i in range(0, 42, 6)) / 7

    first = sum(reward(a) for a in strategy.ask(64)) / 64
    strategy._pending = None
    for _ in range(15):
        archs = strategy.ask(16)
        diag = strategy.tell(archs, [reward(a) for a in archs])
    last = sum(reward(a) for a in strategy.ask(64)) / 64
    assert first < 0.35 and last > first + 0.3, (first, last)
    assert {"policy_loss", "entropy", "baseline"} <= set(diag)


def test_evolution_mutates_one_decision_of_a_tournament_winner():
    space = MnasSpace()
    evo = make_strategy("evolution", space, seed=0, population=4, sample_size=2)
    archs = evo.ask(4)
    evo.tell(archs, [0.1, 0.2, 0.9, 0.3])
    child = evo.ask(1)[0]
    diffs = [min(sum(x != y for x, y in zip(child.tokens, a.tokens, strict=True)) for a in archs)]
    assert diffs == [1]


def test_strategy_state_round_trip_resamples_identically():
    space = MnasSpace()
    for name in ("ppo", "random", "evolution"):
        a = make_strategy(name, space, seed=3)
        archs = a.ask(4)
        a.tell(archs, [random.random() for _ in archs])
        state = a.state_dict()
        b = make_strategy(name, space, seed=99)
        b.load_state_dict(state)
        assert [x.hash for x in a.ask(3)] == [x.hash for x in b.ask(3)], name


def test_tell_checks_its_input():
    s = make_strategy("ppo", MnasSpace(), seed=0)
    with pytest.raises(ValueError, match="before ask"):
        s.tell([], [])
    archs = s.ask(2)
    with pytest.raises(ValueError, match="2 architectures and 1 rewards"):
        s.tell(archs, [0.5])
    with pytest.raises(ValueError, match="unknown strategy 'bayes'"):
        make_strategy("bayes", MnasSpace())
