"""Controllers, advantages, PPO loss and the strategies (issues 5 and 18)."""

import random

import pytest
import torch

from mnas.search.controller import IndependentController, LSTMController, make_controller
from mnas.search.ppo import PPOConfig, ppo_loss, rank_advantages
from mnas.search.strategies import make_strategy
from mnas.space import MnasSpace, NB201Space


def test_lstm_controller_is_sized_from_the_decision_list():
    space = MnasSpace()
    c = LSTMController(space.decisions, seed=0)
    assert set(c.heads) == set(MnasSpace.DECISION_NAMES)
    assert c.heads["conv_op"].out_features == 4 and c.heads["skip"].out_features == 3
    assert c.lstm.hidden_size == 100
    for p in c.parameters():  # NASNet: uniform in +-0.1
        assert p.abs().max() <= 0.1


@pytest.mark.parametrize("kind", ["independent", "lstm"])
def test_sample_log_probs_match_evaluate_and_entropy_is_of_full_distribution(kind):
    space = MnasSpace()
    c = make_controller(kind, space.decisions, seed=0)
    s = c.sample(5, torch.Generator().manual_seed(1))
    assert s.tokens.shape == (5, 42)
    with torch.no_grad():
        logp, ent = c.evaluate(s.tokens)
    assert torch.allclose(logp, s.log_probs, atol=1e-5)
    # Zero logits (or +-0.1 LSTM weights) start (near) uniform: entropy ~ sum of log(#choices).
    uniform = sum(torch.tensor(len(d.choices)).log() for d in space.decisions)
    assert ent[0] == pytest.approx(float(uniform), rel=0.01)
    assert (ent <= uniform + 1e-4).all()
    if kind == "independent":
        assert torch.allclose(logp, torch.full((5,), -float(uniform)), atol=1e-5)


def test_independent_controller_pads_narrow_decisions_and_never_samples_the_padding():
    space = MnasSpace()
    c = IndependentController(space.decisions)
    widths = [len(d.choices) for d in space.decisions]
    assert c.logits.shape == (42, max(widths)) and min(widths) < max(widths)
    with torch.no_grad():
        c.logits.fill_(5.0)  # all real choices equally likely, padding still impossible
    tokens = c.sample(400, torch.Generator().manual_seed(0)).tokens
    assert (tokens < torch.tensor(widths)).all()
    for i, w in enumerate(widths):  # every real choice shows up
        assert set(tokens[:, i].tolist()) == set(range(w))


def test_independent_controller_learns_a_preferred_choice_by_gradient():
    space = NB201Space()
    c = IndependentController(space.decisions)
    opt = torch.optim.SGD(c.parameters(), lr=1.0)
    tokens = torch.tensor([[3] * 6])
    for _ in range(20):
        logp, _ = c.evaluate(tokens)
        opt.zero_grad()
        (-logp.sum()).backward()
        opt.step()
    # p(conv3x3) rises from 0.2 on every edge, the other ops fall equally
    p = c.log_policy().exp()
    assert (p[:, 3] > 0.9).all()
    assert torch.allclose(p[:, [0, 1, 2, 4]], p[:, [0, 0, 0, 0]])


def test_make_controller_rejects_unknown_kinds_and_lstm_settings_for_independent():
    space = NB201Space()
    with pytest.raises(ValueError, match="unknown controller kind 'gru'"):
        make_controller("gru", space.decisions)
    with pytest.raises(ValueError, match=r"no \['hidden_size'\].*controller.kind=lstm"):
        make_controller("independent", space.decisions, hidden_size=50)
    assert make_controller("lstm", space.decisions, hidden_size=50).lstm.hidden_size == 50


def test_rank_advantages_are_centred_unit_std_and_share_ties():
    a = rank_advantages(torch.tensor([0.3, 0.1, 0.3, 0.9]))
    assert a.tolist() == pytest.approx([0.0, -(2**0.5), 0.0, 2**0.5])
    r = torch.tensor([0.52, 0.50, 0.61, 0.47, 0.55])
    a = rank_advantages(r)
    assert float(a.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(a.std(unbiased=False)) == pytest.approx(1.0)
    # scale- and offset-free: a soft reward's spread of hundredths gives the same advantages
    assert torch.allclose(rank_advantages(100 * r - 7), a)
    assert rank_advantages(torch.full((4,), 0.7)).tolist() == [0.0] * 4
    assert rank_advantages(torch.tensor([0.5])).tolist() == [0.0]


def test_ppo_config_names_the_allowed_advantages():
    with pytest.raises(ValueError, match=r"advantages='z'; allowed: \['rank', 'baseline'\]"):
        PPOConfig(advantages="z")


def test_fixed_seed_samples_the_same_first_architectures():
    archs = make_strategy("ppo", MnasSpace(), seed=0).ask(3)
    assert [a.hash for a in archs] == ["6dfa6491c68a08df", "5c6b67bf6717f59d", "3e263620ae6b4a7a"]
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


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("ppo", {}),
        ("reinforce", {}),
        ("ppo", {"controller": "lstm", "lr": 0.02}),
        ("ppo", {"ppo": PPOConfig(advantages="baseline", normalize_advantages=True)}),
    ],
)
def test_controller_strategies_learn_a_simple_reward(name, kwargs):
    # reward: fraction of blocks whose conv_op is mbconv6; the policy must move towards it.
    space = MnasSpace()
    strategy = make_strategy(name, space, seed=0, **kwargs)

    def reward(a):
        return sum(a.tokens[i] == 3 for i in range(0, 42, 6)) / 7

    first = sum(reward(a) for a in strategy.ask(64)) / 64
    strategy._pending = None
    for _ in range(15):
        archs = strategy.ask(16)
        diag = strategy.tell(archs, [reward(a) for a in archs])
    last = sum(reward(a) for a in strategy.ask(64)) / 64
    assert first < 0.35 and last > first + 0.3, (first, last)
    assert {"policy_loss", "entropy", "reward_mean", "unique_proposed"} <= set(diag)


def test_ppo_never_proposes_an_architecture_twice_while_new_ones_are_likely():
    space = NB201Space()
    s = make_strategy("ppo", space, seed=0)
    with torch.no_grad():  # 0.9 on conv3x3 per edge: the mode has p = 0.53
        s.controller.logits[:, 3] = float(torch.tensor(0.9 * 4 / 0.1).log())
    keys = []
    for _ in range(5):
        archs = s.ask(10)
        keys += [a.key for a in archs]
        s.tell(archs, [0.5] * 10)  # equal rewards: zero advantages, the policy stays
    assert len(set(keys)) == 50
    # without resampling the same policy repeats itself
    s = make_strategy("ppo", space, seed=0, resample=0)
    with torch.no_grad():
        s.controller.logits[:, 3] = float(torch.tensor(0.9 * 4 / 0.1).log())
    keys = [a.key for a in s.ask(50)]
    assert len(set(keys)) < 30


def test_ppo_keeps_a_repeat_only_when_every_redraw_repeats():
    space = NB201Space()
    s = make_strategy("ppo", space, seed=0, resample=3)
    with torch.no_grad():  # a collapsed policy: one cell has p ~ 1
        s.controller.logits[:, 3] = 50.0
    archs = s.ask(3)
    assert len({a.key for a in archs}) == 1


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
        for _ in range(2):
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
