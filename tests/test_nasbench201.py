"""NAS-Bench-201 space, tabular evaluator and benchmark helpers (issue 8).

``data/nb201_tiny.csv`` is hand-made: eight real cell strings with round numbers. CIFAR-10
200-epoch test accuracy (%) and pixel3 latency (ms) of its rows:

    all conv3x3 90 @ 4     all skip 70 @ 1     all conv1x1 85 @ 2    all pool 80 @ 3
    all none    10 @ 0.01  index 6111 94 @ 5   conv3x3 0->1, 2->3 (disconnected) 10 @ 0.05
    skip 0->1->3 60 @ 1.5
"""

import os
import random
from pathlib import Path

import numpy as np
import pytest

from mnas.evaluate.tabular import NB201Table, TabularEvaluator
from mnas.search.pareto import best_under, hypervolume_of_rows, median_reference, true_front
from mnas.search.strategies import STRATEGIES, make_strategy
from mnas.space import make_space
from mnas.space.nasbench201 import NB201Space, is_connected, parse_cell

TINY = Path(__file__).parent / "data" / "nb201_tiny.csv"
BEST = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
)
ALL_SKIP = (
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|"
    "+|skip_connect~0|skip_connect~1|skip_connect~2|"
)


@pytest.fixture(scope="module")
def table():
    return NB201Table(TINY)


def test_space_size_decisions_and_token_order():
    space = make_space("nasbench201")
    assert isinstance(space, NB201Space)
    assert space.size() == 15_625
    assert len(space.decisions) == 6
    assert {d.name for d in space.decisions} == {"op"}  # one controller head for all edges
    # edges in string order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2
    arch = space.architecture([3, 3, 3, 1, 3, 2])
    assert arch.key == BEST
    assert arch.blocks == (BEST,)
    assert space.from_string(BEST).tokens == (3, 3, 3, 1, 3, 2)


def test_tokens_round_trip_through_the_cell_string():
    space = NB201Space()
    rng = random.Random(0)
    keys = set()
    for _ in range(200):
        arch = space.sample(rng)
        assert parse_cell(arch.key) == arch.tokens
        assert space.from_string(arch.key) == arch
        keys.add(arch.key)
    assert len(keys) > 190  # 200 uniform draws from 15,625 cells rarely repeat


@pytest.mark.parametrize(
    ("tokens", "message"),
    [([0, 0, 0, 0, 0, 5], r"token 5 .* is 5; allowed 0\.\.4"), ([0] * 5, "needs 6 tokens")],
)
def test_bad_tokens_are_rejected(tokens, message):
    with pytest.raises(ValueError, match=message):
        NB201Space().architecture(tokens)


@pytest.mark.parametrize(
    "text",
    ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", BEST.replace("~2", "~1"), "conv"],
)
def test_bad_cell_strings_are_rejected(text):
    with pytest.raises(ValueError, match="cell string"):
        parse_cell(text)


def test_connectivity():
    assert is_connected(parse_cell(BEST))
    assert not is_connected([0] * 6)
    # conv3x3 on 0->1 and 2->3 only: node 2 is never reached
    assert not is_connected([3, 0, 0, 0, 0, 3])
    assert is_connected([1, 0, 0, 0, 1, 0])  # skip 0->1->3


def test_lookup(table):
    ev = TabularEvaluator(table)  # cifar10, 12-epoch validation, pixel3
    res = ev.evaluate(NB201Space().from_string(BEST))
    assert res.accuracy == pytest.approx(0.85)
    assert res.latency_ms == pytest.approx(5.0)
    assert res.report_accuracy == pytest.approx(0.94)
    assert ev.accuracy(ALL_SKIP) == pytest.approx(0.60)
    raspi = TabularEvaluator(TINY, dataset="cifar100", metric="test_acc_200ep", device="raspi4")
    assert raspi.latency(ALL_SKIP) == pytest.approx(4.0)
    assert raspi.accuracy(ALL_SKIP) == pytest.approx(0.50)


def test_unknown_arch_is_named(table):
    ev = TabularEvaluator(table)
    missing = NB201Space().architecture([4, 4, 4, 4, 4, 3])
    with pytest.raises(ValueError, match=r"avg_pool_3x3~1\|nor_conv_3x3~2\|' is not in the table"):
        ev.evaluate(missing)


def test_bad_column_and_device_list_the_allowed_ones(table):
    with pytest.raises(ValueError, match=r"no accuracy column 'cifar10_valid_acc_200ep'.*allowed"):
        TabularEvaluator(table, metric="valid_acc_200ep")
    with pytest.raises(ValueError, match=r"unknown latency device 'pixel1'.*'pixel3'"):
        TabularEvaluator(table, device="pixel1")
    with pytest.raises(ValueError, match="does not exist"):
        NB201Table(TINY.with_name("missing.csv"))


def test_true_front_and_hypervolume_exact(table):
    lat = table.latency_column("pixel3")
    acc = table.accuracy_column("cifar10", "test_acc_200ep")
    front = [table.archs[i] for i in true_front(lat, acc)]
    # none (0.01, .10), skip (1, .70), conv1x1 (2, .85), conv3x3 (4, .90), 6111 (5, .94);
    # pool (3, .80) is dominated by conv1x1, the skip path (1.5, .60) by all-skip
    assert [table.row(a) for a in front] == [4, 1, 2, 0, 5]
    # reference (6 ms, 50%): 1*(.70-.5) + 2*(.85-.5) + 1*(.90-.5) + 1*(.94-.5) = 1.74
    assert hypervolume_of_rows(true_front(lat, acc), lat, acc, 6.0, 0.5) == pytest.approx(1.74)
    # a dominated row adds nothing
    assert hypervolume_of_rows(range(len(table)), lat, acc, 6.0, 0.5) == pytest.approx(1.74)
    # found only skip and conv3x3: (4-1)*(.70-.5) + (6-4)*(.90-.5) = 1.4, a fraction 1.4 / 1.74
    found = hypervolume_of_rows([1, 0], lat, acc, 6.0, 0.5) / 1.74
    assert found == pytest.approx(1.4 / 1.74)


def test_median_reference_drops_disconnected_cells(table):
    lat = table.latency_column("pixel3")
    acc = table.accuracy_column("cifar10", "test_acc_200ep")
    assert table.connected.tolist() == [True, True, True, True, False, True, False, True]
    # connected latencies 1, 1.5, 2, 3, 4, 5 and accuracies .60 .70 .80 .85 .90 .94
    ref_lat, ref_acc = median_reference(lat, acc, table.connected)
    assert (ref_lat, ref_acc) == pytest.approx((2.5, 0.825))
    # only conv1x1 (2, .85) lies inside: (2.5 - 2) * (.85 - .825)
    assert hypervolume_of_rows(true_front(lat, acc), lat, acc, ref_lat, ref_acc) == pytest.approx(
        0.0125
    )


def test_best_under_target(table):
    lat = table.latency_column("pixel3")
    acc = table.accuracy_column("cifar10", "test_acc_200ep")
    assert best_under(lat, acc, 3.0) == pytest.approx(0.85)
    assert best_under(lat, acc, 0.5) == pytest.approx(0.10)
    assert best_under(lat, acc, 0.001) == -np.inf


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategies_run_on_the_space(name):
    space = NB201Space()
    strat = make_strategy(name, space, seed=0)
    for _ in range(3):
        archs = strat.ask(4)
        assert all(parse_cell(a.key) == a.tokens and a.space == "nasbench201" for a in archs)
        strat.tell(archs, [a.tokens.count(3) / 6 for a in archs])


def test_ppo_learns_a_simple_reward_on_the_space():
    # reward: fraction of conv3x3 edges; uniform sampling averages 0.2. The default ppo
    # climbs towards all-conv3x3 while never proposing a cell twice.
    space = NB201Space()
    strat = make_strategy("ppo", space, seed=0)
    means, keys = [], []
    for _ in range(20):
        archs = strat.ask(10)
        rewards = [a.tokens.count(3) / 6 for a in archs]
        strat.tell(archs, rewards)
        means.append(np.mean(rewards))
        keys += [a.key for a in archs]
    assert np.mean(means[:2]) < 0.35
    assert np.mean(means[-3:]) > 0.6
    assert len(set(keys)) == 200
    assert space.architecture([3] * 6).key in keys


@pytest.mark.data
def test_real_table():
    data = os.environ.get("MNAS_DATA")
    path = Path(data or ".") / "nasbench201" / "nb201_acc_latency.csv"
    if not data or not path.is_file():
        pytest.skip("set MNAS_DATA to the shared datasets folder to run this test")
    table = NB201Table(path)
    assert len(table) == 15_625
    acc = table.columns["cifar10_test_acc_200ep"]
    best = int(np.argmax(acc))
    assert best == 6111 and table.columns["index"][best] == 6111
    assert acc[best] == pytest.approx(94.37, abs=0.005)
    assert table.archs[best] == BEST
    assert int((~table.connected).sum()) == 341  # datasets/README.md
    assert np.all(table.columns["cifar10_valid_acc_12ep"][~table.connected] < 10)
    space = NB201Space()
    assert all(space.from_string(a).key == a for a in table.archs[:500])
