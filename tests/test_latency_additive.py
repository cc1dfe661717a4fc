"""The ``additive`` latency model (issue 19): a learned factor per block, fitted to whole
networks' times alone. Timings are synthetic: a made-up machine whose blocks cost more once
their maps outgrow a cache, which a sum of per-operator costs cannot express."""

import json

import numpy as np
import pytest
from test_latency_predictor import (
    NET16,
    SPACE,
    FakeEvaluator,
    archs,
    setup_dict,
    synthetic,
    truth,
)

from mnas.latency import Predictor, fit_predictor, refit_predictor
from mnas.latency.additive import BlockMlp, fit_block_mlp
from mnas.latency.features import FEATURES, BlockFeatures
from mnas.latency.fit import fit_model, rank_models, scores, select_model
from mnas.space import Architecture, specs_of

_WRITES = np.array([f.endswith("_write") for f in FEATURES])


def block_cost(v: np.ndarray) -> float:
    """A block's time on the cache machine: :func:`truth` of its features, up to twice as
    dear per operator once the elements it writes pass ~4,000 (a smooth step)."""
    writes = float(v[_WRITES].sum())
    return truth(v) * (1 + 1 / (1 + np.exp(-3 * (np.log(writes) - np.log(0.004)))))


def cache_machine(n: int, seed: int, noise: float = 0.01):
    feats = BlockFeatures(NET16, SPACE)
    rng = np.random.default_rng(seed)
    a = archs(n, seed)
    y = np.array([sum(block_cost(feats.matrix[r]) for r in feats.rows(x)) for x in a])
    return a, (y * (1 + noise * rng.standard_normal(n))).tolist()


def test_additive_learns_a_per_block_effect_from_network_times_alone():
    a, y = cache_machine(150, 5)
    held, measured = cache_machine(100, 6)
    got = {}
    for kind in ("linear", "linear+trees", "additive"):
        pred = fit_predictor(setup_dict(), a, y, model=kind)  # no block times given
        assert pred.model.kind == kind
        got[kind] = scores([pred.predict(x) for x in held], measured)
    assert got["additive"]["mape"] < 0.85 * got["linear"]["mape"], got
    assert got["additive"]["mape"] < got["linear+trees"]["mape"], got
    assert got["additive"]["within_5"] >= 0.9, got
    # auto compares it with the network kinds (block vectors come with the space's networks)
    auto = fit_predictor(setup_dict(), a, y)
    assert set(auto.data["cross_validation"]) == {"linear", "linear+trees", "trees", "additive"}
    assert auto.data["training"]["block_ms"] is None


def test_additive_query_file_and_block_strings_agree():
    a, y = cache_machine(60, 5)
    pred = fit_predictor(setup_dict(), a, y, model="additive")
    held = archs(20, 9)
    # a query sums precomputed block values; the model from the block vectors gives the same
    feats = BlockFeatures(NET16, SPACE)
    direct = [pred.model.predict_blocks(feats.block_vectors(x)) for x in held]
    assert [pred.predict(x) for x in held] == pytest.approx(direct)
    # a network given by block strings (counted layer by layer) too
    by_blocks = [Architecture.from_blocks(specs_of(x)) for x in held[:5]]
    assert [pred.predict(x) for x in by_blocks] == pytest.approx(direct[:5])
    # saved and loaded: the same predictions
    again = Predictor(json.loads(json.dumps(pred.data)))
    assert [again.predict(x) for x in held] == pytest.approx([pred.predict(x) for x in held])


def test_additive_predictions_stay_positive_and_bounded_far_outside_training():
    a, y = cache_machine(40, 5)
    pred = fit_predictor(setup_dict(), a, y, model="additive")
    part = pred.model.blocks
    bound = float(np.abs(part.mlp.w2).sum() + abs(part.mlp.b2))
    small = SPACE.architecture([0, 0, 0, 0, 0, 0] * 7)
    large = SPACE.architecture([3, 1, 1, 2, 2, 2] * 7)
    feats = BlockFeatures(NET16, SPACE)
    for arch in (small, large):
        detail = pred.predict_detail(arch)
        assert detail.ms > 0 and not detail.in_range
        # every block's factor is within exp(+-bound) of its linear share
        bx = feats.block_vectors(arch)
        factor = part.multiplier(bx)
        assert np.all(factor <= np.exp(bound) * (1 + 1e-9))
        assert np.all(factor >= np.exp(-bound) * (1 - 1e-9))
    # absurd features (a block 1,000x the largest) still give a finite factor
    wild = 1000 * feats.block_vectors(large)
    assert np.all(np.isfinite(part.multiplier(wild)))
    assert np.all(part.multiplier(wild) <= np.exp(bound) * (1 + 1e-9))


def test_additive_needs_networks_of_the_space():
    a, y = synthetic(20, 3)
    strings = [Architecture.from_blocks(specs_of(x)) for x in a]
    with pytest.raises(ValueError, match="model='additive' is fitted to networks of the MnasNet"):
        fit_predictor(setup_dict(), strings, y, model="additive")
    # auto without block vectors fits the network kinds only
    pred = fit_predictor(setup_dict(), strings, y)
    assert set(pred.data["cross_validation"]) == {"linear", "linear+trees", "trees"}
    with pytest.raises(ValueError, match="needs the networks' block vectors"):
        fit_model("additive", np.zeros((3, len(FEATURES))), np.ones(3))
    with pytest.raises(ValueError, match="need profiled block times or the networks' block"):
        select_model(np.zeros((12, len(FEATURES))), np.ones(12), kinds=("additive",))


def test_block_mlp_refuses_mismatched_shapes_and_starts_from_the_linear_model():
    rng = np.random.default_rng(0)
    bx = rng.uniform(0, 1, (20, 7, 5))
    lin = bx.sum(axis=2)
    with pytest.raises(ValueError, match=r"block_x \(20, 7, 5\), lin \(20, 6\)"):
        fit_block_mlp(bx, lin[:, :6], lin.sum(axis=1), 0.1)
    with pytest.raises(ValueError, match="must be > 0"):
        fit_block_mlp(bx, lin, -lin.sum(axis=1), 0.1)
    # times that are exactly the linear shares plus a constant: fitted, with g near 0
    y = 0.3 + lin.sum(axis=1)
    mlp, a = fit_block_mlp(bx, lin, y, 0.1)
    g = mlp(bx.reshape(-1, 5), np.tile(np.arange(7), 20), lin.reshape(-1)).reshape(20, 7)
    assert np.abs(g).max() < 0.05
    assert a + (lin * np.exp(g)).sum(axis=1) == pytest.approx(y, rel=0.005)
    again = BlockMlp.from_dict(json.loads(json.dumps(mlp.to_dict())))
    assert again(bx[0], np.arange(7), lin[0]) == pytest.approx(mlp(bx[0], np.arange(7), lin[0]))


def test_additive_base_refits_to_another_setting_from_ten_networks():
    # a base of the synthetic machine, re-fitted to a set-up 1.3x slower with depthwise
    # work 2x dearer, from ten newly timed networks (with their block profiles)
    a, y = synthetic(80, 5)
    base = fit_predictor(setup_dict(), a, y, model="additive")
    dear = {"dw3": 2.0, "dw5": 2.0}
    held = archs(60, 9)
    measured = [FakeEvaluator(NET16, 1.3, dear).measure_afresh(x).median_ms for x in held]
    refit = refit_predictor(base, FakeEvaluator(NET16, 1.3, dear), archs(10, 8))
    assert refit.model.kind == "additive"
    assert refit.data["calibration"]["kind"] == "kind_scales"
    # each kind scaled apart; the learnt block factors kept
    assert np.array_equal(refit.model.blocks.mlp.w1, base.model.blocks.mlp.w1)
    got = scores([refit.predict(x) for x in held], measured)
    before = scores([base.predict(x) for x in held], measured)
    assert got["within_10"] >= 0.9 and got["mape"] < 0.2 * before["mape"], (got, before)
    assert min(refit.predict(x) for x in held) > 0
    again = Predictor(json.loads(json.dumps(refit.data)))
    assert again.predict(held[0]) == pytest.approx(refit.predict(held[0]))


def test_kinds_within_a_standard_error_of_the_best_share_are_ranked_by_mape():
    # 600 networks at ~98.5% within +-5%: one standard error is ~0.5 points
    cv = {
        "linear": {"n": 600, "within_5": 0.943, "mape": 1.91},
        "linear+trees": {"n": 600, "within_5": 0.9867, "mape": 1.62},
        "additive": {"n": 600, "within_5": 0.985, "mape": 1.45},
        "trees": {"n": 600, "within_5": 0.9617, "mape": 1.89},
    }
    assert rank_models(cv) == ["additive", "linear+trees", "trees", "linear"]
    # without a count, the strict order (most within +-5%, then MAPE)
    plain = {k: {"within_5": v["within_5"], "mape": v["mape"]} for k, v in cv.items()}
    assert rank_models(plain) == ["linear+trees", "additive", "trees", "linear"]
    # a larger gap is not the draw: the most within +-5% first
    cv["additive"]["within_5"] = 0.975
    assert rank_models(cv)[:2] == ["linear+trees", "additive"]
