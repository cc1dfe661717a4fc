"""The latency predictor (issue 19): features, fitting, never <= 0, range flag, set-up
refusal, few-shot re-fit, the query path and the search's re-measured front. Timings are
synthetic except for one tiny real build."""

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mnas.latency import (
    LatencyError,
    LatencySettings,
    OrtLatency,
    Predictor,
    PredictorLatency,
    build_predictor,
    fit_predictor,
    load_predictor,
    make_latency_evaluator,
    refit_predictor,
)
from mnas.latency.calibration import fit_calibration
from mnas.latency.features import FEATURES, BlockFeatures, NetSetup, network_features
from mnas.latency.fit import (
    MODEL_KINDS,
    LatencyModel,
    fit_forest,
    fit_linear,
    fit_model,
    rank_models,
    scaled_to_networks,
    scores,
)
from mnas.latency.predictor import query_us
from mnas.latency.profile import NodeTime, Profile
from mnas.latency.refit import choose_refit, covered, fit_split
from mnas.latency.session import machine_fingerprint
from mnas.space import Architecture, MnasSpace, specs_of

SPACE = MnasSpace()
NET16 = NetSetup(16, 1, 10, 0.5, 1)


@pytest.fixture(autouse=True)
def _no_layout_rewrite(monkeypatch):
    """The synthetic machine of these tests has no NCHWc rewrite: set-ups this machine's
    evaluators record say so, like the synthetic predictors' own (tests/test_latency_layout.py
    covers the rewrite)."""
    monkeypatch.setattr("mnas.latency.predictor.nchwc_block", lambda: 0)


def setup_dict(net: NetSetup = NET16, **extra) -> dict:
    return {
        "input_shape": [1, net.in_channels, net.input_size, net.input_size],
        "num_classes": net.num_classes,
        "width_mult": net.width_mult,
        "stem_stride": net.stem_stride,
        "threads": 1,
        "clock": "cpu",
        "graph_optimization": "all",
        "opset": 17,
        "export_format": 1,
        "onnxruntime": "test",
        "machine": machine_fingerprint(),
        "nominal_ms": 0.2,
        **extra,
    }


def archs(n: int, seed: int = 0) -> list[Architecture]:
    rng = random.Random(seed)
    return [SPACE.sample(rng) for _ in range(n)]


# A made-up machine: ms per operator, per million multiply-adds and elements written, with
# a mild non-linearity the linear model does not have.
def truth(x: np.ndarray) -> float:
    f = dict(zip(FEATURES, x, strict=True))
    nodes = sum(v for k, v in f.items() if k.endswith("_nodes"))
    macs = sum(v for k, v in f.items() if k.endswith("_macs"))
    writes = sum(v for k, v in f.items() if k.endswith("_write"))
    dw = f["dw3_macs"] + f["dw5_macs"]
    return 0.02 + 0.004 * nodes + 0.03 * macs + 0.2 * dw + 0.05 * writes + 0.002 * macs**1.2


def synthetic(n: int, seed: int, net: NetSetup = NET16, noise: float = 0.0, scale: float = 1.0):
    feats = BlockFeatures(net, SPACE)
    rng = np.random.default_rng(seed)
    a = archs(n, seed)
    y = [scale * truth(feats(x)) * (1 + noise * rng.standard_normal()) for x in a]
    return a, y


def test_block_features_are_the_sum_over_the_network_layers():
    feats = BlockFeatures(NET16, SPACE)
    for arch in archs(20, 3):
        whole = network_features(NET16.layers(SPACE.decode(arch.tokens)))
        assert np.allclose(feats(arch), whole)
    # a network outside the token space (block strings) is counted layer by layer
    arch = Architecture.from_blocks("ds_r1_k3_s1_c16,ir_r2_k5_s2_e6_c24_se0.25")
    x = feats(arch)
    assert x[FEATURES.index("se_nodes")] == 2 and x[FEATURES.index("dw5_nodes")] == 2


@pytest.mark.parametrize("depth", [3, 4])
def test_forest_arrays_reproduce_scikit_learn(depth, monkeypatch):
    # depth 3 (the default) packs a tree's seven decisions into one byte; depth 4 takes
    # the general path
    from sklearn.ensemble import GradientBoostingRegressor

    from mnas.latency import fit
    from mnas.latency.fit import TREES

    monkeypatch.setitem(fit.TREES, "max_depth", depth)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(80, 4))
    y = np.sin(4 * x[:, 0]) + x[:, 1] ** 2
    forest = fit_forest(x, y)
    sk = GradientBoostingRegressor(**TREES).fit(x, y)
    test = rng.uniform(size=(30, 4))
    assert np.allclose([forest(r) for r in test], sk.predict(test), atol=1e-9)
    # inputs on and next to the thresholds (the decisions are made in float32): every split
    # goes the way scikit-learn's does
    thr = forest.threshold[np.isfinite(forest.threshold)]
    feat = forest.feature[np.isfinite(forest.threshold)]
    edge = np.tile(test[:1], (3 * len(thr), 1))
    for k, (f, t) in enumerate(zip(feat, thr, strict=True)):
        t32 = np.float32(t)
        for j, v in enumerate(
            (t32, np.nextafter(t32, np.float32(-1)), np.nextafter(t32, np.float32(2)))
        ):
            edge[3 * k + j, f] = v
    assert np.allclose([forest(r) for r in edge], sk.predict(edge), atol=1e-9)
    assert forest.feature.shape == (TREES["n_estimators"], 2**depth - 1)
    # float32 inputs (what LatencyModel hands it) decide the same way
    assert np.allclose([forest(r.astype(np.float32)) for r in edge], sk.predict(edge), atol=1e-9)


def test_fit_predicts_held_out_networks_of_a_synthetic_machine():
    a, y = synthetic(100, 0, noise=0.01)
    pred = fit_predictor(setup_dict(), a, y)
    held, measured = synthetic(60, 1)
    s = scores([pred.predict(x) for x in held], measured)
    assert s["within_10"] >= 0.95 and s["kendall_tau"] >= 0.9, s
    assert set(pred.data["cross_validation"]) == {"linear", "linear+trees", "trees", "additive"}
    # the saved file predicts the same
    again = Predictor(json.loads(json.dumps(pred.data)))
    assert [again.predict(x) for x in held] == pytest.approx([pred.predict(x) for x in held])


def test_predictions_are_never_at_or_below_zero():
    # the linear fit keeps weights >= 0 and a positive intercept, even when the best
    # unconstrained line would go negative
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    intercept, w = fit_linear(x, np.array([0.5, 1.5, 2.5, 3.5]))
    assert intercept > 0 and np.all(w >= 0)
    zero = np.zeros(len(FEATURES))
    for kind in ("linear", "linear+trees", "trees"):
        a, y = synthetic(30, 2)
        feats = BlockFeatures(NET16, SPACE)
        model = fit_model(kind, np.array([feats(v) for v in a]), np.array(y))
        assert model(zero) > 0
    # a hand-edited model that would predict <= 0 is an error naming the network
    a, y = synthetic(30, 2)
    data = fit_predictor(setup_dict(), a, y).data
    bad = LatencyModel("linear", -100.0, np.zeros(len(FEATURES))).to_dict()
    with pytest.raises(LatencyError, match=a[0].hash):
        Predictor({**data, "model": bad}).predict(a[0])


def _small_and_large():
    """Networks with every block at its smallest (width x0.75, one layer fewer) and the
    largest network of the space."""
    small = SPACE.architecture([0, 0, 0, 0, 0, 0] * 7)
    large = SPACE.architecture([3, 1, 1, 2, 2, 2] * 7)
    return small, large


def test_out_of_range_is_flagged_warned_or_refused(tmp_path, caplog):
    a, y = synthetic(40, 4)
    pred = fit_predictor(setup_dict(), a, y)
    small, large = _small_and_large()
    assert pred.predict_detail(large).in_range is False
    assert pred.predict_detail(small).in_range is False
    assert all(pred.predict_detail(x).in_range for x in a)
    path = tmp_path / "p.json"
    pred.save(path)
    ev = PredictorLatency(path)
    with caplog.at_level(logging.WARNING):
        stats = ev.measure(large)
    assert stats.median_ms > 0 and ev.out_of_range_count == 1
    assert "outside the range" in caplog.text and large.hash in caplog.text
    with pytest.raises(LatencyError, match="outside the range"):
        PredictorLatency(path, out_of_range="refuse").measure(large)
    with pytest.raises(ValueError, match="out_of_range='maybe'"):
        PredictorLatency(path, out_of_range="maybe")


def test_a_predictor_for_another_timing_setup_is_refused_but_not_another_host(tmp_path):
    a, y = synthetic(20, 5)
    path = tmp_path / "p.json"
    fit_predictor(setup_dict(machine="another-cpu"), a, y).save(path)
    with pytest.raises(ValueError, match=r"input_size=32 \(predictor: 16\)"):
        load_predictor(path, input_size=32)
    with pytest.raises(ValueError, match=r"threads=2 \(predictor: 1\)"):
        PredictorLatency(path, threads=2, input_size=16)
    with pytest.raises(ValueError, match="stem_stride=2"):
        load_predictor(path, stem_stride=2, width_mult=0.5)
    # a query from another machine (a GPU host searching for this CPU) is fine
    p = load_predictor(path, input_size=16, in_channels=1, num_classes=10, threads=1, clock="cpu")
    assert p.predict(a[0]) > 0
    # ... but re-measuring on it is not
    with pytest.raises(ValueError, match="another-cpu"):
        refit_predictor(p, FakeEvaluator(NET16, 1.0), archs(5, 6))


@dataclass
class _Stats:
    median_ms: float


class FakeEvaluator:
    """Times a network on the synthetic machine, ``factor`` times slower (and the features
    of one operator kind ``kind_factor[kind]`` times dearer); its profile shares the
    network's time among its blocks as :func:`truth` of their own features, each in the
    block's first layer."""

    def __init__(self, net: NetSetup, factor: float, kind_factor: dict | None = None) -> None:
        self.net = net
        self.factor = factor
        self.feats = BlockFeatures(net, SPACE)
        self.timed = 0
        self.profiled = 0
        self.distort = np.array(
            [(kind_factor or {}).get(f.rsplit("_", 1)[0], 1.0) for f in FEATURES]
        )

    def measure_afresh(self, arch):
        self.timed += 1
        return _Stats(self.factor * truth(self.distort * self.feats(arch)))

    def measure_profiled(self, arch, runs):
        return self.measure_afresh(arch), self._profile(arch)

    def _profile(self, arch):
        self.profiled += 1
        repeats = [s.repeats for s in specs_of(arch)]
        first = [0, *np.cumsum(repeats)[:-1] + 1]
        share = np.array([truth(self.distort * v) for v in self.feats.block_vectors(arch)])
        ms = self.factor * truth(self.distort * self.feats(arch)) * share / share.sum()
        nodes = [
            NodeTime(f"/features/features.{layer}/Conv", "Conv", int(layer), 1000 * t)
            for layer, t in zip(first, ms, strict=True)
        ]
        return Profile(nodes, sum(n.us for n in nodes))

    def setup(self):
        return setup_dict(self.net)

    reference = True
    references = ("mobilenetv2",)
    graph_optimization = "all"


def test_the_model_kind_can_be_asked_for_and_a_wrong_one_is_refused_before_timing():
    a, y = synthetic(40, 3, noise=0.01)
    pred = fit_predictor(setup_dict(), a, y, model="linear")
    assert pred.model.kind == "linear" and set(pred.data["cross_validation"]) == {"linear"}
    forest = fit_predictor(setup_dict(), a, y, model="linear+trees")
    assert forest.model.kind == "linear+trees"
    assert forest.predict(a[0]) != pred.predict(a[0])
    ev = FakeEvaluator(NET16, 1.0)
    with pytest.raises(ValueError, match=r"model='ridge'; allowed: auto, linear, linear\+trees"):
        build_predictor(ev, archs(12, 4), model="ridge")
    assert ev.timed == 0


def test_auto_keeps_the_best_model_whose_query_fits_the_budget(monkeypatch):
    a, y = synthetic(40, 3, noise=0.01)
    free = fit_predictor(setup_dict(), a, y, query_budget_us=None)
    ranked = rank_models(free.data["cross_validation"])
    assert free.model.kind == ranked[0] and free.data["selection"]["by"] == "cross_validation"
    # the favourite's query made slow: the next best is kept, and the choice recorded
    cost = {ranked[0]: 80.0}
    monkeypatch.setattr(
        "mnas.latency.predictor.query_us", lambda p, archs: cost.get(p.model.kind, 10.0)
    )
    kept = fit_predictor(setup_dict(), a, y)
    assert kept.model.kind == ranked[1]
    sel = kept.data["selection"]
    assert sel["by"] == "query budget" and sel["query_budget_us"] == 50.0
    assert sel["query_us"] == {ranked[0]: 80.0, ranked[1]: 10.0}
    assert kept.predict(a[0]) > 0
    # every kind over the budget: the fastest
    cost = {k: 100.0 + i for i, k in enumerate(ranked[::-1])}
    assert fit_predictor(setup_dict(), a, y).model.kind == ranked[-1]
    # a kind asked for is kept whatever its query costs
    assert fit_predictor(setup_dict(), a, y, model=ranked[0]).model.kind == ranked[0]


def test_query_time_is_measured_per_architecture():
    a, y = synthetic(20, 3)
    us = query_us(fit_predictor(setup_dict(), a, y, model="linear"), a)
    assert 0 < us < 10_000


def test_few_shot_refit_to_another_input_size_from_ten_networks():
    a, y = synthetic(80, 7)
    base = fit_predictor(setup_dict(), a, y)
    net28 = NetSetup(28, 1, 10, 0.5, 1)
    ev = FakeEvaluator(net28, 1.4)  # another size, and a slower setting on top
    refit = refit_predictor(base, ev, archs(10, 8))
    assert ev.timed == 20  # two passes
    assert refit.setup["input_shape"] == [1, 1, 28, 28]
    held = archs(60, 9)
    measured = [1.4 * truth(BlockFeatures(net28, SPACE)(x)) for x in held]
    s = scores([refit.predict(x) for x in held], measured)
    assert s["within_10"] >= 0.9, s
    unrefit = scores([base.predict(x) for x in held], measured)
    assert s["mape"] < unrefit["mape"]
    with pytest.raises(ValueError, match="at least 3"):
        refit_predictor(base, ev, archs(2, 8))


def test_refit_with_profiles_scales_each_operator_kind_apart():
    # on the new set-up depthwise convolutions cost 3x what the base model learned, the
    # rest 1.2x: one scale (or a node/work split) cannot follow that, a scale per kind can
    a, y = synthetic(80, 7)
    base = fit_predictor(setup_dict(), a, y, model="linear")
    net28 = NetSetup(28, 1, 10, 0.5, 1)
    dear = {"dw3": 3.0, "dw5": 3.0}
    held = archs(60, 9)
    ev = FakeEvaluator(net28, 1.2, dear)
    measured = [ev.measure_afresh(x).median_ms for x in held]
    ev = FakeEvaluator(net28, 1.2, dear)
    refit = refit_predictor(base, ev, archs(10, 8))
    assert ev.timed == 20 and ev.profiled == 10  # two passes, one profile
    cal = refit.data["calibration"]
    assert cal["kind"] == "kind_scales"
    assert {"calibration", "split", "kind_scales_0.0"} <= set(cal["leave_one_out_mape"])
    # noise-free block times: the least shrinkage wins, and finds the dearer kinds
    assert cal["prior"] == 0.0
    assert cal["scales"]["dw3"] > 2 * cal["scales"]["pw"]
    assert len(cal["block_ms"]) == 10
    got = scores([refit.predict(x) for x in held], measured)
    ev0 = FakeEvaluator(net28, 1.2, dear)
    plain = refit_predictor(base, ev0, archs(10, 8), profile_runs=0)
    assert ev0.profiled == 0 and plain.data["calibration"]["kind"] != "kind_scales"
    before = scores([plain.predict(x) for x in held], measured)
    assert got["within_10"] >= 0.9 and got["mape"] < 0.5 * before["mape"], (got, before)
    # the re-fitted predictor is a linear model, saved and loaded as it predicts
    again = Predictor(json.loads(json.dumps(refit.data)))
    assert again.model.kind == "linear"
    assert again.predict(held[0]) == pytest.approx(refit.predict(held[0]))
    with pytest.raises(ValueError, match="profile_runs=-1"):
        refit_predictor(base, ev, archs(10, 8), profile_runs=-1)


def split_truth(x: np.ndarray, node_factor: float, work_factor: float) -> float:
    """The synthetic machine with its per-operator cost and its work cost changed apart."""
    f = dict(zip(FEATURES, x, strict=True))
    nodes = 0.02 + 0.004 * sum(v for k, v in f.items() if k.endswith("_nodes"))
    return node_factor * nodes + work_factor * (truth(x) - nodes)


class SplitEvaluator(FakeEvaluator):
    def __init__(self, net: NetSetup, node_factor: float, work_factor: float) -> None:
        super().__init__(net, 1.0)
        self.factors = (node_factor, work_factor)

    def measure_afresh(self, arch):
        self.timed += 1
        return _Stats(split_truth(self.feats(arch), *self.factors))


def test_split_refit_scales_the_per_operator_and_the_work_parts_apart():
    # like a second thread: the work takes 0.55x as long, every operator's overhead 1.6x
    a, y = synthetic(120, 7)
    base = fit_predictor(setup_dict(), a, y)
    ev = SplitEvaluator(NET16, 1.6, 0.55)
    refit = refit_predictor(base, ev, archs(10, 8))
    cal = refit.data["calibration"]
    assert cal["kind"] == "split"
    assert cal["leave_one_out_mape"]["split"] < cal["leave_one_out_mape"]["calibration"]
    assert 1.2 < cal["node_scale"] < 2.0 and 0.4 < cal["work_scale"] < 0.7
    held = archs(60, 9)
    measured = [split_truth(ev.feats(x), 1.6, 0.55) for x in held]
    s = scores([refit.predict(x) for x in held], measured)
    assert s["within_10"] >= 0.9, s
    # the query's summed rows and the layer-by-layer path agree, and so does a reload
    x = held[0]
    node, work = base.parts(x)
    assert refit.predict(x) == pytest.approx(cal["node_scale"] * node + cal["work_scale"] * work)
    assert Predictor(json.loads(json.dumps(refit.data))).predict(x) == pytest.approx(
        refit.predict(x)
    )
    # one scale for the whole prediction does worse on the same networks
    fit = archs(10, 8)
    timed = [ev.measure_afresh(x).median_ms for x in fit]
    cal = fit_calibration([sum(base.parts(x)) for x in fit], timed)
    whole = [cal.predict(sum(base.parts(x))) for x in held]
    assert scores(whole, measured)["mape"] > 2 * s["mape"]


def test_refit_from_several_bases_keeps_the_one_that_predicts_left_out_networks():
    net28 = NetSetup(28, 1, 10, 0.5, 1)
    a, y = synthetic(120, 7)
    base16 = fit_predictor(setup_dict(), a, y)
    a28, y28 = synthetic(120, 7, net=net28)
    base28 = fit_predictor(setup_dict(net28), a28, y28)  # built at the new size itself
    ev = FakeEvaluator(net28, 1.4)
    refit = refit_predictor([base16, base28], ev, archs(10, 8))
    assert ev.timed == 20  # timed (in two passes) once for both bases
    cal = refit.data["calibration"]
    assert cal["from_setup"]["input_shape"] == [1, 1, 28, 28]
    loo = [min(b["leave_one_out_mape"].values()) for b in cal["bases"]]
    assert [b["input_shape"] for b in cal["bases"]] == [[1, 1, 16, 16], [1, 1, 28, 28]]
    assert loo[1] < loo[0] and [b["chosen"] for b in cal["bases"]] == [False, True]
    held = archs(60, 9)
    measured = [1.4 * truth(ev.feats(x)) for x in held]
    best = scores([refit.predict(x) for x in held], measured)
    alone = refit_predictor(base16, FakeEvaluator(net28, 1.4), archs(10, 8))
    assert best["mape"] < scores([alone.predict(x) for x in held], measured)["mape"]
    with pytest.raises(ValueError, match="at least one base"):
        refit_predictor([], ev, archs(10, 8))


def test_refit_from_several_bases_keeps_a_base_whose_range_holds_the_networks():
    # a 2-thread-like change at 16x16: the 16x16 base's range holds the timed networks, a
    # 64x64 base's does not (it would extrapolate), whatever ten networks' leave-one-out says
    # (here the 16x16 base was fitted to noisy timings, and re-fits worse on them)
    a, y = synthetic(80, 7, noise=0.08)
    base16 = fit_predictor(setup_dict(), a, y)
    net64 = NetSetup(64, 1, 10, 0.5, 1)
    a64, y64 = synthetic(80, 7, net=net64)
    base64 = fit_predictor(setup_dict(net64), a64, y64)
    fit = archs(10, 8)
    refit = refit_predictor([base64, base16], FakeEvaluator(NET16, 1.3), fit)
    bases = refit.data["calibration"]["bases"]
    moved16 = Predictor({**base16.data, "setup": setup_dict(), "calibration": None})
    inside = covered(moved16, fit)
    assert inside >= 8 and bases[0]["timed_in_range"] == 0
    assert [b["timed_in_range"] for b in bases] == [0, inside]
    loo = [min(b["leave_one_out_mape"].values()) for b in bases]
    assert loo[0] < loo[1]
    assert [b["chosen"] for b in bases] == [False, True]
    assert refit.data["calibration"]["from_setup"]["input_shape"] == [1, 1, 16, 16]


def test_choose_refit_falls_back_to_a_calibration():
    parts = np.array([[0.1, 0.5], [0.2, 0.4], [0.3, 0.9]])
    # three networks: too few for two scales
    r = choose_refit(parts, parts.sum(1) * 1.3, None)
    assert r.split is None and r.calibration.kind in ("scale", "affine")
    assert set(r.loo_mape) == {"calibration"}
    # a part that explains nothing (its scale would be 0) is no split
    parts = np.array([[0.1, 0.5], [0.2, 0.4], [0.3, 0.9], [0.4, 0.2], [0.5, 0.7]])
    y = 2.0 * parts[:, 1]
    assert fit_split(parts, y) is None  # the node part explains nothing: scale 0
    assert choose_refit(parts, y, None).split is None


def test_refit_to_a_larger_input_keeps_its_networks_in_range():
    a, y = synthetic(120, 7)
    base = fit_predictor(setup_dict(), a, y)
    net28 = NetSetup(28, 1, 10, 0.5, 1)
    refit = refit_predictor(base, FakeEvaluator(net28, 1.4), archs(10, 8))
    held = archs(100, 9)
    # the old set-up's range: every 28x28 network has more multiply-adds than any 16x16 one
    moved = Predictor({**base.data, "setup": refit.setup})
    assert sum(moved.predict_detail(x).in_range for x in held) < 20
    # at the new set-up as many are in range as the base predictor has at its own
    own = sum(base.predict_detail(x).in_range for x in held)
    assert own >= 75 and sum(refit.predict_detail(x).in_range for x in held) >= own - 5
    assert "re-fit" in refit.data["range"]["networks"]


def test_predictor_is_a_latency_kind_of_the_search(tmp_path):
    a, y = synthetic(20, 10)
    path = tmp_path / "p.json"
    fit_predictor(setup_dict(), a, y).save(path)
    settings = LatencySettings(kind="predictor", predictor_path=str(path))
    assert settings.remeasures_front
    assert not LatencySettings().remeasures_front
    assert not LatencySettings(
        kind="predictor", predictor_path="x", remeasure_front=False
    ).remeasures_front
    ev = make_latency_evaluator(
        settings, input_size=16, in_channels=1, num_classes=10, width_mult=0.5, stem_stride=1
    )
    stats = ev.measure(a[0])
    assert stats.source == "predictor" and stats.scale == "drift-corrected"
    assert stats.nominal_ms == 0.2 and stats.median_ms == pytest.approx(
        load_predictor(path).predict(a[0])
    )
    with pytest.raises(ValueError, match="input_size=32"):
        make_latency_evaluator(settings, input_size=32, in_channels=1, num_classes=10)
    with pytest.raises(ValueError, match="predictor_path"):
        LatencySettings(kind="predictor")
    missing = {"predictor_path": str(tmp_path / "none.json"), "lut_path": "~/none-lut.json"}
    for key, path in missing.items():
        kind = key.split("_")[0]
        with pytest.raises(FileNotFoundError, match=f"latency.{key}=.*none.*no such file"):
            make_latency_evaluator(LatencySettings(kind=kind, **{key: path}), input_size=16)
    with pytest.raises(ValueError, match="out_of_range"):
        LatencySettings(out_of_range="ignore")


def test_cli_predicts_from_a_predictor_file(tmp_path, capsys):
    from mnas import cli

    a, y = synthetic(40, 10)
    path = tmp_path / "p.json"
    pred = fit_predictor(setup_dict(), a, y)
    pred.save(path)
    net = ["--input-size", "16", "--in-channels", "1", "--num-classes", "10"]
    net += ["--width-mult", "0.5", "--stem-stride", "1", "--kind", "predictor"]
    assert cli.main(["latency", a[0].key, *net, "--table", str(path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["source"] == "predictor" and r["runs"] == 0 and r["in_range"] is True
    assert r["median_ms"] == pytest.approx(pred.predict(a[0]))
    assert cli.main(["latency", a[0].key, *net, "--table", str(path)]) == 0
    assert "predicted, drift-corrected scale of the predictor" in capsys.readouterr().out
    assert cli.main(["latency", a[0].key, *net]) == 2  # a usage error
    assert "--kind predictor needs --table" in capsys.readouterr().err
    # another set-up is refused by name, not predicted
    assert cli.main(["latency", a[0].key, *net[2:], "--table", str(path)]) == 2
    assert "input_size=224 (predictor: 16)" in capsys.readouterr().err


def test_build_on_real_onnx_runtime_timings(tmp_path):
    ev = OrtLatency(
        input_size=8,
        in_channels=1,
        num_classes=10,
        width_mult=0.25,
        stem_stride=1,
        warmup=1,
        min_runs=5,
        max_runs=20,
        time_cap_s=0.03,
    )
    pred = build_predictor(ev, archs(10, 11))
    assert pred.data["setup"]["input_shape"] == [1, 1, 8, 8]
    assert pred.data["setup"]["graph_optimization"] == "all"
    assert len(pred.data["training"]["measured_ms"]) == 10
    assert all(m > 0 for m in pred.data["training"]["measured_ms"])
    ms = pred.predict(archs(1, 12)[0])
    assert ms > 0 and math.isfinite(ms)
    path = Path(tmp_path) / "p.json"
    pred.save(path)
    assert load_predictor(path, input_size=8, width_mult=0.25).predict(archs(1, 12)[0]) == ms


def test_search_with_a_predictor_re_measures_its_front(tmp_path):
    from test_search import make_cfg

    from mnas.conf.runner import build_search

    net = NetSetup(8, 1, 10, 0.25, 1)
    a, y = synthetic(20, 13, net=net)
    path = tmp_path / "p.json"
    fit_predictor(setup_dict(net), a, y).save(path)
    cfg = make_cfg("steps=1", "batch_size=2", "latency=predictor", f"latency.predictor_path={path}")
    run = tmp_path / "run"
    summary = build_search(cfg, run, tensorboard=True).run()
    pareto = json.loads((run / "pareto.json").read_text())
    assert pareto["points"] and len(pareto["points"]) == len(summary.front)
    for p in pareto["points"]:
        assert p["latency"]["source"] == "predictor"
        assert p["measured_latency_ms"] > 0
        assert p["measured_latency"]["source"] == "measured"
        assert p["latency_ms"] != p["measured_latency_ms"]
    # TensorBoard's text tab shows both figures of every front point
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0}).Reload()
    (event,) = board.Tensors("front_measured/text_summary")
    table = event.tensor_proto.string_val[0].decode()
    assert "measured on ONNX Runtime (ms)" in table
    for p in pareto["points"]:
        assert f"| {p['latency_ms']:.4g} | {p['measured_latency_ms']:.4g} |" in table


def test_auto_predictor_is_built_once_per_setup(tmp_path, monkeypatch):
    from mnas.latency import resolve_auto_predictor
    from mnas.latency import settings as latency_settings_module

    cache = str(tmp_path / "cache" / "latency.sqlite")
    settings = LatencySettings(
        kind="predictor",
        predictor_path="auto",
        cache=cache,
        warmup=1,
        min_runs=5,
        max_runs=20,
        time_cap_s=0.03,
    )
    net = dict(input_size=8, in_channels=1, num_classes=10, width_mult=0.25, stem_stride=1)
    with pytest.raises(ValueError, match="resolve_auto_predictor"):
        make_latency_evaluator(settings, **net)
    built = resolve_auto_predictor(settings, net, networks=12)
    path = Path(built.predictor_path)
    assert path.parent == tmp_path / "cache" / "predictors" and path.exists()
    assert len(json.loads(path.read_text())["training"]["measured_ms"]) == 12
    ms = make_latency_evaluator(built, **net).measure(archs(1, 3)[0]).median_ms
    assert ms > 0

    def no_build(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(latency_settings_module, "build_predictor", no_build)
    assert resolve_auto_predictor(settings, net, networks=12) == built  # found, not built
    with pytest.raises(AssertionError, match="built again"):  # another set-up: its own file
        resolve_auto_predictor(settings, {**net, "width_mult": 0.5}, networks=12)
    path.write_text("{not json")  # a torn file is rebuilt, not trusted
    with pytest.raises(AssertionError, match="built again"):
        resolve_auto_predictor(settings, net, networks=12)
    measured = LatencySettings(cache=cache)
    assert resolve_auto_predictor(measured, net) is measured
    with pytest.raises(ValueError, match="latency.cache"):
        LatencySettings(kind="predictor", predictor_path="auto", cache=None)


def test_weight_sharing_search_predicts_latency_by_default():
    from hydra import compose, initialize_config_dir

    from mnas.conf import register_configs

    register_configs()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        for overrides, kind in [
            ([], "measured"),
            (["evaluator=supernet"], "predictor"),
            (["experiment=fashion_mnist_supernet"], "predictor"),
            (["evaluator=supernet", "latency=measured"], "measured"),
        ]:
            cfg = compose("search", overrides=overrides)
            assert cfg.latency.kind == kind, overrides
            if kind == "predictor":
                assert cfg.latency.predictor_path == "auto" and cfg.latency.remeasure_front


def test_graph_optimization_level_is_a_timing_setting(tmp_path):
    import onnxruntime as ort
    import torch

    from mnas.latency.session import export_onnx, make_session
    from mnas.nn.builder import build_model

    net = dict(input_size=8, in_channels=1, num_classes=10, width_mult=0.25, stem_stride=1)
    plain = OrtLatency(**net)
    basic = OrtLatency(**net, graph_optimization="basic")
    assert "graph_optimization" not in plain.setup()  # the keys cached before it existed
    assert basic.setup()["graph_optimization"] == "basic"
    assert basic.nominal_key() != plain.nominal_key()
    with pytest.raises(ValueError, match="graph_optimization='O3'; allowed: all, extended"):
        OrtLatency(**net, graph_optimization="O3")
    with pytest.raises(ValueError, match="latency.graph_optimization='O3'"):
        LatencySettings(graph_optimization="O3")
    with pytest.raises(ValueError, match="latency=lut"):
        LatencySettings(kind="lut", lut_path="t.json", graph_optimization="basic")

    model = build_model(archs(1, 4)[0], 10, 1, 0.25, 1).eval()
    x = torch.randn(1, 1, 8, 8)
    onnx_bytes = export_onnx(model, 8, 1)
    outs = {}
    for level in ("all", "disabled"):
        session = make_session(onnx_bytes, 1, level)
        assert session.get_session_options().graph_optimization_level == (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if level == "all"
            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        outs[level] = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(outs["disabled"], outs["all"], rtol=1e-4, atol=1e-5)

    a, y = synthetic(20, 10, net=NetSetup(8, 1, 10, 0.25, 1))
    path = tmp_path / "p.json"
    fit_predictor(setup_dict(NetSetup(8, 1, 10, 0.25, 1)), a, y).save(path)
    settings = LatencySettings(kind="predictor", predictor_path=str(path))
    make_latency_evaluator(settings, **net)  # built at "all": fine
    with pytest.raises(ValueError, match="graph_optimization"):
        make_latency_evaluator(
            LatencySettings(kind="predictor", predictor_path=str(path), graph_optimization="basic"),
            **net,
        )


def _latency_table_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "latency_table.py"
    spec = importlib.util.spec_from_file_location("script_latency_table_refit", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_latency_table_script_refits_a_predictor_to_the_configs_set_up(tmp_path, capsys):
    script = _latency_table_script()
    a, y = synthetic(40, 7)
    base = tmp_path / "base16.json"
    fit_predictor(setup_dict(), a, y).save(base)
    out = tmp_path / "refit8.json"
    quick = [
        "data.image_size=8",
        "model.width_mult=0.25",
        "latency.warmup=1",
        "latency.min_runs=5",
        "latency.max_runs=20",
        "latency.time_cap_s=0.03",
        f"latency.cache={tmp_path / 'cache.sqlite'}",
    ]
    # two bases: timed once, each base's leave-one-out error printed, the better one kept
    other = tmp_path / "base8.json"
    net8 = NetSetup(8, 1, 10, 0.25, 1)
    fit_predictor(setup_dict(net8), *synthetic(40, 7, net=net8)).save(other)
    args = ["--predictor", "--refit", str(base), str(other), "--networks", "4", "--out", str(out)]
    rc = script.main(args + quick)
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "re-fitted from 4 networks" in text
    assert f"base {base}:" in text and f"base {other}:" in text
    refit = load_predictor(out, input_size=8, width_mult=0.25)
    cal = refit.data["calibration"]
    assert len(cal["archs"]) == 4 and all(m > 0 for m in cal["measured_ms"])
    assert "calibration" in cal["leave_one_out_mape"] and len(cal["bases"]) == 2
    assert refit.predict(archs(1, 12)[0]) > 0
    # bad input: a clear error before anything is timed
    assert script.main(["--predictor", "--refit", str(tmp_path / "none.json")] + quick) == 2
    assert "--refit=" in capsys.readouterr().err
    rc = script.main(["--predictor", "--refit", str(base), "--networks", "2"] + quick)
    assert rc == 2 and "at least 3" in capsys.readouterr().err
    rc = script.main(["--predictor", "--refit", str(base), "--out", str(base)] + quick)
    assert rc == 2 and "overwrite" in capsys.readouterr().err
    rc = script.main(["--predictor", "--refit", str(base), "--model", "linear"] + quick)
    assert rc == 2 and "--model=linear: a re-fit keeps its base's model" in capsys.readouterr().err
    rc = script.main(["--predictor", "--query-budget-us", "-5"] + quick)
    assert rc == 2 and "--query-budget-us=-5.0; allowed: >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        script.main(["--predictor", "--model", "ridge"] + quick)
    assert "invalid choice: 'ridge'" in capsys.readouterr().err
    # building with the model asked for
    built = tmp_path / "linear8.json"
    rc = script.main(
        ["--predictor", "--networks", "10", "--model", "linear", "--out", str(built)] + quick
    )
    assert rc == 0
    assert load_predictor(built, input_size=8, width_mult=0.25).model.kind == "linear"
    # re-checking it on this machine now: 5 of its networks re-timed, written to --out
    rechecked = tmp_path / "rechecked8.json"
    rc = script.main(
        ["--predictor", "--recheck", str(built), "--networks", "5", "--out", str(rechecked)] + quick
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "re-timed 5 of its networks" in text and f"wrote {rechecked}" in text
    r = load_predictor(rechecked, input_size=8, width_mult=0.25).data["recheck"]
    assert r["networks"] == 5 and len(r["measured_ms"]) == 5 and r["median_ratio"] > 0
    rc = script.main(["--predictor", "--recheck", str(built), "--networks", "3"] + quick)
    assert rc == 2 and "--networks=3; allowed with --recheck: 5 .. 10" in capsys.readouterr().err
    rc = script.main(["--recheck", str(built), "--networks", "3"] + quick)  # implies --predictor
    assert rc == 2 and "--networks=3; allowed with --recheck" in capsys.readouterr().err
    rc = script.main(["--predictor", "--passes", "0"] + quick)
    assert rc == 2 and "--passes=0; allowed: >= 1" in capsys.readouterr().err
    for minutes in ("-1", "0", "nan"):  # refused before any network is timed
        rc = script.main(["--predictor", "--max-minutes", minutes] + quick)
        assert rc == 2 and f"--max-minutes={minutes}; allowed: > 0" in capsys.readouterr().err


def block_synthetic(n: int, seed: int, noise: float = 0.03):
    """A made-up machine timed per block (as ONNX Runtime's profile gives it) and per
    network: every block costs :func:`truth` of its own features; the whole run adds 8%
    and 0.02 ms the profile does not see, and each timing its own noise."""
    feats = BlockFeatures(NET16, SPACE)
    rng = np.random.default_rng(seed)
    a = archs(n, seed)
    blocks = np.array([[truth(feats.matrix[r]) for r in feats.rows(x)] for x in a])
    blocks *= 1 + noise * rng.standard_normal(blocks.shape)
    y = (0.02 + 1.08 * blocks.sum(axis=1)) * (1 + 0.01 * rng.standard_normal(n))
    return a, y.tolist(), blocks.tolist()


def test_block_models_learn_from_every_block_of_few_networks():
    a, y, blocks = block_synthetic(12, 5)
    held, measured, _ = block_synthetic(80, 6)
    got = {}
    for kind in ("linear", "blocks"):
        pred = fit_predictor(setup_dict(), a, y, model=kind, block_ms=blocks)
        assert pred.model.kind == kind
        got[kind] = scores([pred.predict(x) for x in held], measured)
    # 84 block samples where the network model has 12
    assert got["blocks"]["within_10"] >= 0.9, got
    assert got["blocks"]["mape"] < 0.5 * got["linear"]["mape"], got
    # auto compares every kind, and the file keeps the block times
    pred = fit_predictor(setup_dict(), a, y, block_ms=blocks)
    assert set(pred.data["cross_validation"]) == set(MODEL_KINDS)
    assert np.allclose(pred.data["training"]["block_ms"], blocks)
    # a block model's query sums precomputed block times: the same as from its blocks'
    # features (as a network given by block strings is predicted), and as saved
    blk = fit_predictor(setup_dict(), a, y, model="blocks", block_ms=blocks)
    by_blocks = [Architecture.from_blocks(specs_of(x)) for x in held[:5]]
    assert [blk.predict(x) for x in by_blocks] == pytest.approx([blk.predict(x) for x in held[:5]])
    again = Predictor(json.loads(json.dumps(blk.data)))
    assert again.predict(held[0]) == pytest.approx(blk.predict(held[0]))
    assert min(blk.predict(x) for x in held) > 0


def test_block_times_are_scaled_to_their_network_before_fitting():
    # the profile is another run than the timing: each network's block times carry a
    # scale of their own (here 0.75-1.25x), which the blocks model must not learn
    a, y, blocks = block_synthetic(40, 5)
    rng = np.random.default_rng(3)
    off = np.asarray(blocks) * rng.uniform(0.75, 1.25, size=(len(a), 1))
    scaled = scaled_to_networks(off, np.asarray(y))
    assert scaled.sum(axis=1) == pytest.approx(y)
    assert scaled / scaled.sum(axis=1, keepdims=True) == pytest.approx(
        off / off.sum(axis=1, keepdims=True)
    )
    held, measured, _ = block_synthetic(80, 6)
    pred = fit_predictor(setup_dict(), a, y, model="blocks", block_ms=off.tolist())
    got = scores([pred.predict(x) for x in held], measured)
    assert got["within_10"] >= 0.95 and got["mape"] < 4, got
    bad = np.ones((2, 7))
    bad[1] = 0
    with pytest.raises(ValueError, match="network 1's profiled block times sum to 0"):
        scaled_to_networks(bad, np.ones(2))


def test_a_blocks_predictor_refitted_with_profiles_keeps_its_forest():
    # a blocks base re-fitted to a set-up where depthwise work costs 3x: each kind's part
    # of the block linear form is scaled, the forest's factor on every block kept
    a, y, blocks = block_synthetic(40, 5)
    base = fit_predictor(setup_dict(), a, y, model="blocks", block_ms=blocks)
    dear = {"dw3": 3.0, "dw5": 3.0}
    held = archs(60, 9)
    measured = [FakeEvaluator(NET16, 1.2, dear).measure_afresh(x).median_ms for x in held]
    ev = FakeEvaluator(NET16, 1.2, dear)
    refit = refit_predictor(base, ev, archs(10, 8))
    cal = refit.data["calibration"]
    assert cal["kind"] == "kind_scales" and cal["from_model"] == "blocks"
    assert cal["scales"]["dw3"] > 2 * cal["scales"]["pw"]
    assert refit.model.kind == "blocks" and refit.model.blocks.scaled is not None
    assert np.array_equal(refit.model.blocks.forest.leaf, base.model.blocks.forest.leaf)
    got = scores([refit.predict(x) for x in held], measured)
    plain = refit_predictor(base, FakeEvaluator(NET16, 1.2, dear), archs(10, 8), profile_runs=0)
    before = scores([plain.predict(x) for x in held], measured)
    assert got["within_10"] >= 0.9 and got["mape"] < 0.5 * before["mape"], (got, before)
    # saved and loaded, it predicts the same; never <= 0
    again = Predictor(json.loads(json.dumps(refit.data)))
    first = held[:5]
    assert [again.predict(x) for x in first] == pytest.approx([refit.predict(x) for x in first])
    assert min(refit.predict(x) for x in held) > 0


def test_predictor_bench_scores_every_kind_on_the_same_networks():
    from bench_modules import load_bench

    a, y, blocks = block_synthetic(15, 5)
    held, measured, _ = block_synthetic(40, 6)
    pred = fit_predictor(setup_dict(), a, y, model="blocks", block_ms=blocks)
    pred.data["cross_validation"] = {"linear": {}, "blocks": {}}  # the kinds to refit
    got = load_bench("predictor").by_kind(pred, held, measured)
    assert set(got) == {"linear", "blocks"}
    assert got["blocks"] == scores([pred.predict(x) for x in held], measured)
    assert got["blocks"]["mape"] < got["linear"]["mape"]
    # bench/predictor_query.py times each kind fitted to the file's networks (and blocks)
    query = load_bench("predictor_query")
    linear = query.with_model(pred, "linear")
    assert linear.model.kind == "linear" and linear.predict(held[0]) > 0
    refitted = query.with_model(linear, "blocks")
    assert refitted.predict(held[0]) == pytest.approx(pred.predict(held[0]))


def test_predictor_bench_refuses_counts_before_timing(tmp_path, capsys):
    from bench_modules import load_bench

    bench = load_bench("predictor")
    for flag, value, low in (
        ("--n-heldout", "0", 10),
        ("--networks", "5", 10),
        ("--few-shot", "2", 3),
    ):
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--out", str(tmp_path), flag, value])
        assert exit_.value.code == 2
        assert f"{flag}={value}; allowed: >= {low}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing timed, nothing written


def test_predictor_bench_refits_to_fewer_of_its_training_networks():
    # what the default's extra networks give, on the same timings: the first 200 of a
    # build's networks re-fitted and scored on the held-out networks (no 400: too few)
    from bench_modules import load_bench

    a, y = synthetic(230, 11, noise=0.03)
    held, measured = synthetic(40, 12)
    pred = fit_predictor(setup_dict(), a, y, model="linear")
    got = load_bench("predictor").fewer_networks(pred, held, measured)
    assert list(got) == ["200"]
    alone = fit_predictor(setup_dict(), a[:200], y[:200])
    assert got["200"]["model"] == alone.model.kind
    assert got["200"]["heldout"] == scores([alone.predict(x) for x in held], measured)
    assert got["200"]["cross_validation"]["n"] == 200
    assert "heldout_vs_mean" not in got["200"]
    mean = [1.01 * m for m in measured[:30]]
    with_mean = load_bench("predictor").fewer_networks(pred, held, measured, mean)
    assert with_mean["200"]["heldout_vs_mean"] == scores(
        [alone.predict(x) for x in held[:30]], mean
    )
    assert load_bench("predictor").fewer_networks(alone, held, measured) == {}


def test_predictor_curve_bench_cross_validates_subsets_of_the_training_networks():
    from bench_modules import load_bench

    from mnas.latency import fit

    bench = load_bench("predictor_curve")
    a, y = synthetic(40, 13, noise=0.02)
    pred = fit_predictor(setup_dict(), a, y, model="linear")
    x, yy, blocks = load_bench("predictor").training_data(pred)
    assert blocks[1] is None and yy.tolist() == pytest.approx(y)  # no block times
    assert blocks[0].sum(axis=1) == pytest.approx(x)  # the block vectors
    rows = bench.curve(x, yy, blocks, [20, 40], draws=2)
    kinds = ["linear", "linear+trees", "trees", "additive"]
    assert [(r["networks"], r["kind"]) for r in rows] == [(n, k) for n in (20, 40) for k in kinds]
    assert [r["draws"] for r in rows] == [2] * 4 + [1] * 4  # all 40: one subset
    whole = fit.cross_validate("linear", x, yy)  # the same networks, another order: close
    assert rows[4]["mape"] == pytest.approx(whole["mape"], rel=0.5)
    assert rows[0]["mape"] > rows[4]["mape"]  # fewer networks, larger error
    with pytest.raises(ValueError, match="--networks 41"):
        bench.curve(x, yy, blocks, [41], draws=1)
    before = dict(fit.TREES)
    (got,) = bench.forest_settings(x, yy, ["20:2:0.1"])
    assert fit.TREES == before and set(got) == {"setting", "linear+trees", "trees"}
    assert got["setting"] == "20:2:0.1" and got["linear+trees"]["n"] == 40


def test_block_models_need_block_times():
    a, y, blocks = block_synthetic(12, 5)
    with pytest.raises(ValueError, match="model='blocks' is fitted to profiled block times"):
        fit_predictor(setup_dict(), a, y, model="blocks")
    with pytest.raises(ValueError, match=r"7 block times for each of the 12 .* shape \(12, 6\)"):
        fit_predictor(setup_dict(), a, y, block_ms=[b[:6] for b in blocks])
    with pytest.raises(ValueError, match="needs profiled block times"):
        fit_model("blocks", np.zeros((3, len(FEATURES))), np.ones(3))
    # without block times, auto fits every kind but the block-time ones
    pred = fit_predictor(setup_dict(), a, y)
    assert set(pred.data["cross_validation"]) == {"linear", "linear+trees", "trees", "additive"}
    ev = FakeEvaluator(NET16, 1.0)
    with pytest.raises(ValueError, match="profile_runs=0 has none"):
        build_predictor(ev, archs(12, 4), model="blocks", profile_runs=0)
    assert ev.timed == 0


def test_predictor_blocks_bench_compares_kinds_and_refits(tmp_path, capsys):
    from bench_modules import load_bench

    bench = load_bench("predictor_blocks")
    a, y, blocks = block_synthetic(24, 5)
    setup = {"input_size": 16, "in_channels": 1, "num_classes": 10}
    data = {
        "setup": {**setup, "width_mult": 0.5, "stem_stride": 1},
        "records": [
            {"tokens": list(x.tokens), "median_ms": m, "blocks_us": [1000 * t for t in b]}
            for x, m, b in zip(a, y, blocks, strict=True)
        ],
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    got = bench.compare(path, train=14, reps=1)
    assert set(got["kinds"]) == {*MODEL_KINDS, "own profile, scaled"}
    assert got["kinds"]["blocks"]["within_10"] >= 0.9
    assert "blocks" in capsys.readouterr().out
    base_a, base_y = synthetic(40, 7)
    base = tmp_path / "base.json"
    fit_predictor(setup_dict(), base_a, base_y, model="linear").save(base)
    r = bench.refit(path, base, reps=2)
    assert set(r["results"]) == {"without profiles", "with profiles"}
    assert sum(r["results"]["with profiles"]["chosen"].values()) == 2


def test_predictor_bench_scores_a_later_timing_and_the_mean_of_both():
    from bench_modules import load_bench

    drift_row = load_bench("predictor").drift_row
    pass1 = [{"median_ms": 1.0, "t": 0.0} for _ in range(10)]
    later = [{"median_ms": 1.2, "t": 7200.0} for _ in range(8)]  # 20% slower, 2 h on
    row = drift_row([1.1] * 10, pass1, later)
    assert row["n"] == 8 and row["hours_after_pass1"] == pytest.approx(2.0)
    assert row["median_ratio"] == pytest.approx(1.2)
    assert row["median_diff_pct"] == pytest.approx(20.0)
    assert row["vs_pass1"]["within_10"] == 0.0
    assert row["predictor_vs_drift_pass"]["within_10"] == 1.0  # 1.1 / 1.2: 8.3% under
    assert row["predictor_vs_drift_pass"]["within_5"] == 0.0
    mean = row["predictor_vs_mean_of_pass1_and_drift"]  # the mean of 1.0 and 1.2
    assert mean["n"] == 8 and mean["within_5"] == 1.0 and mean["mape"] == pytest.approx(0.0)


def test_predictor_bench_estimates_what_a_noise_free_predictor_reaches_against_one_timing():
    from bench_modules import load_bench
    from scipy.stats import kendalltau, norm

    bench = load_bench("predictor")
    rng = np.random.default_rng(0)
    sigma = 0.05  # each timing off its network's latency by exp(N(0, 0.05^2))
    true = np.exp(rng.uniform(-1.0, 1.0, 20000))
    first = true * np.exp(sigma * rng.standard_normal(true.size))
    second = true * np.exp(sigma * rng.standard_normal(true.size))
    c = bench.timing_ceiling(first.tolist(), second.tolist())
    # the exact predictor against one timing, counted directly, and the normal model's value
    rel = np.abs(true / first - 1)
    assert c["n"] == 20000
    assert c["within_10"] == pytest.approx(np.mean(rel <= 0.10), abs=0.01)
    assert c["within_10"] == pytest.approx(
        norm.cdf(np.log(1.1) / sigma) - norm.cdf(np.log(0.9) / sigma), abs=0.01
    )
    assert c["within_5"] == pytest.approx(np.mean(rel <= 0.05), abs=0.01)
    assert c["kendall_tau"] == pytest.approx(kendalltau(true, first).statistic, abs=0.01)
    # the two timings agree less with each other than the exact predictor with either
    assert bench.scores(first, second)["within_10"] < c["within_10"] - 0.05


def test_predictor_bench_scores_against_the_mean_of_all_timing_passes():
    from bench_modules import load_bench

    bench = load_bench("predictor")
    passes = {
        "pass1": [{"median_ms": v} for v in (1.0, 2.0, 3.0, 4.0)],
        "pass2": [{"median_ms": v} for v in (1.1, 2.2, 3.3)],
        "drift": [{"median_ms": v} for v in (0.9, 1.8, 2.7, 3.6)],
    }
    rows = bench.passes_rows([1.0, 2.0, 3.0, 4.0], passes)
    c = rows["ceiling"]
    assert set(c) == {"pass1-pass2", "pass1-drift", "pass2-drift"}
    assert c["pass1-pass2"]["n"] == 3 and c["pass1-drift"]["n"] == 4
    # timings 10% / 11% apart: a noise-free predictor would be off each by ~7%
    for pair in ("pass1-pass2", "pass1-drift"):
        assert c[pair]["within_10"] == 1.0 and c[pair]["within_5"] == 0.0
    assert c["pass2-drift"]["within_10"] == 0.0  # 22% apart: ~15% off
    assert c["pass1-drift"]["kendall_tau"] == pytest.approx(1.0)
    mean = rows["predictor_vs_mean_of_all_passes"]  # (1 + 1.1 + 0.9) / 3 = 1, ...
    assert mean["n"] == 3 and mean["passes"] == ["pass1", "pass2", "drift"]
    assert mean["mape"] == pytest.approx(0.0) and mean["within_5"] == 1.0
    # two passes: no mean of all
    assert "predictor_vs_mean_of_all_passes" not in bench.passes_rows(
        [1.0], {"pass1": passes["pass1"], "pass2": passes["pass2"]}
    )


def test_residual_bench_finds_a_candidate_that_slows_more_than_the_reference():
    from bench_modules import load_bench

    res = load_bench("latency_residual")
    rng = np.random.default_rng(0)
    n = 400
    true = np.exp(rng.uniform(-1.0, 1.0, n))

    def timed() -> list[dict]:
        # the machine's speed wanders slowly from network to network; the reference slows
        # by s, every candidate by s ** 1.2, and each timing has a little noise of its own
        s = np.exp(np.cumsum(0.03 * rng.standard_normal(n)))
        raw = true * s**1.2 * np.exp(0.005 * rng.standard_normal(n))
        return [{"raw_median_ms": r, "drift_factor": 1 / v} for r, v in zip(raw, s, strict=True)]

    row = res.residual_row(timed(), timed())
    assert row["n"] == n
    assert row["slope"] == pytest.approx(-1.2, abs=0.03)
    assert row["corr_with_factor"] < -0.9  # the correction leaves exactly the 0.2 behind
    assert row["lag1"] > 0.8  # ... which moves with the machine, not network by network
    by = {k["exponent"]: k for k in row["by_exponent"]}
    assert by[1.2]["sd_log_ratio"] < 0.2 * by[1.0]["sd_log_ratio"]
    assert by[1.2]["within_5"] == 1.0 and by[1.2]["within_5"] > by[1.0]["within_5"]
    with pytest.raises(ValueError, match="at least 3 networks timed in both passes; got 2"):
        res.residual_row(timed()[:2], timed())


def test_references_bench_prefers_the_reference_that_moves_with_the_candidates():
    from bench_modules import load_bench

    refs = load_bench("latency_references")
    rng = np.random.default_rng(1)
    true = np.exp(rng.uniform(-1.0, 1.0, 50))

    def timed() -> list:
        # per timing: the machine's moment m; reference 0 slows by m ** 0.5, reference 1 by
        # m, as every candidate does
        nets = []
        for t in true:
            rows = []
            for _ in range(3):
                m = np.exp(0.3 * rng.standard_normal())
                rows.append([t * m, 0.5 * m**0.5, 0.8 * m])
            nets.append(rows)
        return nets

    a, b = timed(), timed()
    names = refs.corrections(["mobilenetv2", "space:7"])
    assert names == {
        "none": (),
        "mobilenetv2": (0,),
        "space:7": (1,),
        "mobilenetv2 x space:7": (0, 1),
    }
    exact = refs.agreement(a, b, names["space:7"])
    assert exact["within_5"] == 1.0 and exact["sd_log_ratio"] == pytest.approx(0.0, abs=1e-9)
    half = refs.agreement(a, b, names["mobilenetv2"])
    assert half["within_10"] < 0.9 and half["sd_log_ratio"] > 0.05
    none = refs.agreement(a, b, names["none"])
    assert none["sd_log_ratio"] > half["sd_log_ratio"]
    assert refs.corrected([[2.0, 1.0, 4.0]], (0, 1)) == pytest.approx(1.0)  # 2 / sqrt(1 * 4)
    with pytest.raises(ValueError, match="reference 'resnet'; allowed"):
        refs.reference_network("resnet")
    assert refs.reference_network("space:7").key == refs.reference_network("space:7").key


def test_arms_bench_reports_how_each_arms_two_passes_agree(tmp_path, capsys):
    from bench_modules import load_bench

    arms = load_bench("latency_arms")
    rng = np.random.default_rng(3)
    true = np.exp(rng.uniform(-1.0, 1.0, 40))

    def write(folder: str, noise: float) -> None:
        passes = {}
        for k, label in enumerate(("pass1", "drift")):
            passes[label] = [
                {
                    "key": f"net{i}",
                    "median_ms": float(t * np.exp(noise * rng.standard_normal())),
                    "runs": 300,
                    "drift_factor": 1.0,
                    "t": 1000.0 * k + 2.0 * i,
                }
                for i, t in enumerate(true)
            ]
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "heldout_16.json").write_text(json.dumps({"passes": passes}))

    write("quiet", 0.0)
    write("noisy", 0.2)
    out = tmp_path / "arms.json"
    args = ["--arms", f"quiet={tmp_path / 'quiet'}", f"noisy={tmp_path / 'noisy'}"]
    assert arms.main([*args, "--sizes", "16", "--split", "10", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["16"]
    quiet, noisy = rows["quiet"], rows["noisy"]
    assert quiet["all"]["passes"]["within_5"] == 1.0 and quiet["all"]["passes"]["kendall_tau"] == 1
    assert quiet["all"]["passes"]["sd_log_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert quiet["all"]["ceiling"]["within_5"] == 1.0
    assert (
        noisy["all"]["passes"]["within_10"] < 0.7 and noisy["all"]["passes"]["sd_log_ratio"] > 0.2
    )
    assert noisy["all"]["ceiling"]["within_10"] > noisy["all"]["passes"]["within_10"]
    assert noisy["first_10"]["passes"]["n"] == 10 and noisy["after_10"]["passes"]["n"] == 30
    assert quiet["seconds_per_network"] == pytest.approx(2.0)
    assert quiet["minutes_between_passes"] == pytest.approx(1000 / 60)
    assert "| 16 | noisy | after_10 (30) |" in capsys.readouterr().out
    # two passes of different networks are refused
    bad = json.loads((tmp_path / "quiet" / "heldout_16.json").read_text())
    bad["passes"]["drift"][0]["key"] = "other"
    (tmp_path / "quiet" / "heldout_16.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="different networks"):
        arms.main([*args, "--sizes", "16"])
