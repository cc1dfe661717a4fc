"""Latency: statistics, cache, ONNX export fidelity, lookup table, MACs proxy, CLI.

Timing goals live in bench/latency.py; these tests check behaviour and numbers only, on
32x32 inputs with few runs so they stay fast on a busy machine.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import multiprocessing
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

import mnas.latency.ort as ort_mod
from mnas import cli
from mnas.latency import (
    LatencyCache,
    LatencyError,
    LatencySettings,
    LatencyStats,
    LutLatency,
    MacsLatency,
    OrtLatency,
    TimingPlan,
    build_table,
    export_onnx,
    machine_fingerprint,
    make_latency_evaluator,
    make_session,
    median_ci_halfwidth,
    network_layers,
    save_table,
    space_layer_configs,
    stats_from_samples,
)
from mnas.latency.lut import Calibration, fit_calibration, mape
from mnas.latency.references import reference_network
from mnas.latency.timing import Timings, time_runs, time_session
from mnas.nn import build_model
from mnas.space import Architecture, MnasSpace, parse_blocks, reference

FAST = dict(warmup=1, min_runs=5, max_runs=20, rel_ci=0.05, time_cap_s=0.3)
SMALL = dict(input_size=32, num_classes=10, stem_stride=2)
TINY_ARCH = Architecture.from_blocks(
    "ds_r1_k3_s1_c16,ir_r2_k3_s2_e3_c24_se0.25,cn_r1_k5_s2_c32_pool"
)


def tiny_space() -> MnasSpace:
    """A 2-block slice of the MnasNet space: 4 x 2 choices per block, 64 networks."""
    return MnasSpace(
        base_filters=(8, 16),
        base_layers=(1, 2),
        strides=(1, 2),
        conv_ops=("dconv", "mbconv3"),
        kernels=(3,),
        se_ratios=(0.0, 0.25),
        skip_ops=("identity", "pool"),
        filter_mults=(1.0,),
        layer_deltas=(0,),
    )


# --- statistics ---------------------------------------------------------------------------


def test_stats_from_known_samples():
    s = stats_from_samples([float(i) for i in range(1, 11)], export_seconds=0.5)
    assert s.median_ms == pytest.approx(5.5)
    assert s.p10_ms == pytest.approx(1.9)  # numpy linear interpolation: 1 + 0.9 * (2 - 1)
    assert s.p90_ms == pytest.approx(9.1)
    assert s.mean_ms == pytest.approx(5.5)
    assert s.cv == pytest.approx(math.sqrt(55 / 6) / 5.5)  # sample std of 1..10 is sqrt(55/6)
    assert s.runs == 10 and s.export_seconds == 0.5 and s.source == "measured"
    one = stats_from_samples([3.0])
    assert (one.median_ms, one.p10_ms, one.p90_ms, one.cv, one.runs) == (3.0, 3.0, 3.0, 0.0, 1)


def test_stats_reject_bad_samples_and_round_trip():
    with pytest.raises(ValueError):
        stats_from_samples([])
    with pytest.raises(ValueError):
        stats_from_samples([1.0, -0.1])
    with pytest.raises(ValueError):
        stats_from_samples([1.0, float("nan")])
    with pytest.raises(ValueError):
        LatencyStats(1, 1, 1, 1, 0, 1, 0, source="guess")
    s = stats_from_samples([1.0, 2.0, 4.0])
    assert LatencyStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_median_ci_halfwidth():
    # n = 100: order statistics 40 and 61 (1-based) bound the 95% interval of the median
    # (a table of binomial ranks gives the same pair; coverage 96.5%).
    samples = list(range(1, 101))
    random.Random(0).shuffle(samples)
    assert median_ci_halfwidth(samples) == pytest.approx((61 - 40) / (2 * 50.5))
    # n = 15 (the default min_runs): ranks 3 and 13.
    assert median_ci_halfwidth(list(range(1, 16))) == pytest.approx((13 - 3) / (2 * 8))
    assert median_ci_halfwidth([2.0] * 30) == 0.0
    assert median_ci_halfwidth([1.0, 2.0]) == math.inf


# --- timing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_session():
    model = build_model(TINY_ARCH, **{k: SMALL[k] for k in ("num_classes", "stem_stride")})
    return make_session(export_onnx(model, 32, 3))


def test_adaptive_stop_bounds(tiny_session):
    shape = (1, 3, 32, 32)
    # Any finite interval satisfies rel_ci = 1e9 (a run preempted on a busy machine can
    # be 40 times the others): stop as soon as the rule is consulted.
    loose = TimingPlan(warmup=0, min_runs=10, max_runs=50, rel_ci=1e9, time_cap_s=30)
    assert len(time_session(tiny_session, shape, loose)) == 10
    # Below 8 runs the 95% interval of the median does not exist: consulted again at 7 + 5.
    early = TimingPlan(warmup=0, min_runs=7, max_runs=50, rel_ci=1e9, time_cap_s=30)
    assert len(time_session(tiny_session, shape, early)) == 12
    # No interval is that tight: run to max_runs.
    tight = TimingPlan(warmup=0, min_runs=5, max_runs=25, rel_ci=1e-12, time_cap_s=30)
    assert len(time_session(tiny_session, shape, tight)) == 25
    # The time cap ends it after the 5-run minimum.
    capped = TimingPlan(warmup=0, min_runs=5, max_runs=10**6, rel_ci=1e-12, time_cap_s=1e-6)
    assert len(time_session(tiny_session, shape, capped)) == 5
    with pytest.raises(ValueError):
        TimingPlan(min_runs=10, max_runs=5)


def test_runs_without_a_reference_are_timed_back_to_back():
    calls = []
    plan = TimingPlan(warmup=2, min_runs=16, max_runs=16, rel_ci=1e-12, time_cap_s=30)
    t = time_runs(lambda: calls.append("x"), plan)
    assert calls == ["x"] * 18 and len(t.samples) == 16 and t.ref_samples == []
    assert len(t.wall) == 16 and all(w >= 0 for w in t.wall)


def test_drift_correction_scales_every_run_by_nominal_over_reference(monkeypatch):
    # The machine ran the reference 10% slower than its nominal during this measurement:
    # every timing is scaled by 1 / 1.1, and the factor is reported.
    def fake_time_runs(run, plan, reference=None, clock="wall"):
        samples = [2.0, 2.2, 1.8] * 3
        return Timings(samples, [[1.1] * 9] if reference is not None else [], samples)

    monkeypatch.setattr(ort_mod, "time_runs", fake_time_runs)
    ev = OrtLatency(**SMALL, **FAST, reference=True, reference_ms=1.0)
    s = ev.measure(TINY_ARCH)
    assert s.drift_factor == pytest.approx(1 / 1.1)
    assert s.median_ms == pytest.approx(2.0 / 1.1)
    assert s.p90_ms == pytest.approx(2.2 / 1.1) and s.p10_ms == pytest.approx(1.8 / 1.1)
    assert s.cv == pytest.approx(stats_from_samples([2.0, 2.2, 1.8] * 3).cv)
    assert (s.scale, s.nominal_ms, s.raw_median_ms) == ("drift-corrected", 1.0, 2.0)
    assert s.wall_median_ms == 2.0
    plain = OrtLatency(**SMALL, **FAST).measure(TINY_ARCH)
    assert plain.drift_factor == 1.0 and plain.median_ms == pytest.approx(2.0)
    assert (plain.scale, plain.nominal_ms) == ("raw", None)
    with pytest.raises(ValueError, match="reference_ms"):
        OrtLatency(**SMALL, reference=True, reference_ms=0.0)


def test_repeats_time_each_network_in_new_sessions_and_pool_the_corrected_runs(monkeypatch):
    # two repeats: the machine 10% slow during the first (reference 1.1), at speed during
    # the second; each repeat's runs are corrected by its own factor, then pooled
    speeds = iter([1.1, 1.0])
    sessions = []

    def fake_time_runs(run, plan, reference=None, clock="wall"):
        ref = next(speeds)
        samples = [2.0 * ref, 2.2 * ref, 1.8 * ref]
        return Timings(samples, [[ref] * 3], samples)

    real_session = ort_mod.make_session

    def counting_session(*args, **kwargs):
        sessions.append(1)
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort_mod, "time_runs", fake_time_runs)
    monkeypatch.setattr(ort_mod, "make_session", counting_session)
    ev = OrtLatency(**SMALL, **FAST, reference=True, reference_ms=1.0, repeats=2)
    s = ev.measure(TINY_ARCH)
    # the references' sessions (auto at 32x32: two networks of the space), two of its own
    assert len(sessions) == 2 + 2 and s.runs == 6
    assert s.median_ms == pytest.approx(2.0) and s.p90_ms == pytest.approx(2.2)
    assert s.drift_factor == pytest.approx((1 / 1.1 + 1.0) / 2)  # the median of two factors
    assert s.wall_median_ms == pytest.approx(2.1)  # uncorrected, over both timings' runs
    assert s.ci_rel == stats_from_samples([2.0, 2.2, 1.8] * 2).ci_rel  # of the pooled runs
    with pytest.raises(ValueError, match="repeats=0"):
        OrtLatency(**SMALL, repeats=0)
    with pytest.raises(ValueError, match="latency.repeats"):
        LatencySettings(repeats=0)


def test_reference_nominal_is_timed_once_and_shared_through_the_cache(tmp_path):
    path = tmp_path / "lat.sqlite"
    first = OrtLatency(**SMALL, **FAST, reference=True, cache_path=path)
    nominal = first.nominal()
    assert nominal.ms > 0 and nominal.created is not None
    second = OrtLatency(**SMALL, **FAST, reference=True, cache_path=path)
    assert second.nominal() == nominal
    # A racing writer cannot replace a stored one (only remeasure_nominal does).
    cache = LatencyCache(path)
    assert cache.get_nominal(first.nominal_key()) == nominal
    doubled = dataclasses.replace(nominal, ms=nominal.ms * 2)
    assert cache.put_nominal(first.nominal_key(), doubled) == nominal
    s = second.measure(TINY_ARCH)
    assert s.source == "measured" and 0.2 < s.drift_factor < 5 and s.nominal_ms == nominal.ms
    # Corrected and raw figures never share a cache entry.
    assert second.cache_key(TINY_ARCH) != OrtLatency(**SMALL).cache_key(TINY_ARCH)
    # 32x32: "auto" stands for two networks of the space, in the set-up in block order
    pair = "+".join(reference_network(n).hash for n in ("space:7", "space:11"))
    assert second.setup()["reference"] == pair
    assert second.setup()["nominal_ms"] == nominal.ms


def test_stats_written_before_drift_correction_still_load():
    old = stats_from_samples([1.0, 2.0]).to_dict()
    for key in ("drift_factor", "nominal_ms", "clock", "ci_rel", "wall_median_ms", "scale"):
        del old[key]
    back = LatencyStats.from_dict(old)
    assert (back.drift_factor, back.nominal_ms, back.clock, back.scale) == (
        1.0,
        None,
        "wall",
        "raw",
    )


def test_measure_returns_consistent_stats():
    ev = OrtLatency(**SMALL, **FAST)
    s = ev.measure(TINY_ARCH)
    assert s.source == "measured" and 5 <= s.runs <= 20 and s.clock == "cpu"
    assert s.wall_median_ms > 0 and s.scale == "raw" and s.raw_median_ms == s.median_ms
    assert 0 < s.p10_ms <= s.median_ms <= s.p90_ms
    assert s.export_seconds > 0 and s.cv >= 0
    assert ev.exports == 1


# --- cache --------------------------------------------------------------------------------


def test_cache_hit_skips_export(tmp_path):
    path = tmp_path / "lat.sqlite"
    ev = OrtLatency(**SMALL, **FAST, cache_path=path)
    first = ev.measure(TINY_ARCH)
    assert (ev.exports, ev.cache_hits, first.source) == (1, 0, "measured")
    again = ev.measure(TINY_ARCH)
    assert (ev.exports, ev.cache_hits) == (1, 1)
    assert again.source == "cache" and again.export_seconds == 0.0
    assert (again.median_ms, again.runs, again.cv) == (first.median_ms, first.runs, first.cv)
    # Persistent: a new evaluator (a new process, say) finds it too.
    other = OrtLatency(**SMALL, **FAST, cache_path=path)
    assert other.measure(TINY_ARCH).median_ms == first.median_ms and other.exports == 0
    # A different thread count is a different measurement.
    threaded = OrtLatency(**SMALL, **FAST, threads=2, cache_path=path)
    assert threaded.measure(TINY_ARCH).source == "measured" and threaded.exports == 1
    assert len(LatencyCache(path)) == 2


def test_cache_key_covers_setup():
    base = dict(input_size=32, in_channels=3, num_classes=10, width_mult=1.0, stem_stride=1)
    key = OrtLatency(**base).cache_key(TINY_ARCH)
    assert OrtLatency(**base).cache_key(TINY_ARCH) == key
    assert OrtLatency(**base, pin_cpu=None, max_runs=99).cache_key(TINY_ARCH) == key
    changes = [
        dict(input_size=64),
        dict(in_channels=1),
        dict(num_classes=100),
        dict(width_mult=0.5),
        dict(stem_stride=2),
    ]
    keys = {OrtLatency(**{**base, **c}).cache_key(TINY_ARCH) for c in changes}
    keys.add(OrtLatency(**base, threads=2).cache_key(TINY_ARCH))
    keys.add(OrtLatency(**base, batch_size=4).cache_key(TINY_ARCH))
    keys.add(OrtLatency(**base).cache_key(reference("mobilenetv2")))
    assert len(keys) == 8 and key not in keys
    setup = OrtLatency(**base).setup()
    assert setup["machine"] == machine_fingerprint() and len(machine_fingerprint()) == 12
    assert "onnxruntime" in setup


def _write_rows(path: str, worker: int, n: int) -> None:
    cache = LatencyCache(path, timeout_s=60)
    stats = stats_from_samples([1.0, 2.0, float(worker + 3)])
    for i in range(n):
        cache.put(f"w{worker}-{i}", "h", "blocks", {"worker": worker}, stats)


def test_cache_concurrent_writers(tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    path = str(tmp_path / "shared.sqlite")
    LatencyCache(path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_rows, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cache = LatencyCache(path)
    assert len(cache) == 160
    assert cache.get("w3-39").p90_ms == pytest.approx(stats_from_samples([1, 2, 6]).p90_ms)


# --- failures -----------------------------------------------------------------------------


def test_export_failure_raises_and_caches_nothing(tmp_path, monkeypatch):
    path = tmp_path / "lat.sqlite"
    ev = OrtLatency(**SMALL, **FAST, cache_path=path)

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(ort_mod, "export_onnx", broken)
    with pytest.raises(LatencyError) as err:
        ev.measure(TINY_ARCH)
    assert TINY_ARCH.hash in str(err.value) and TINY_ARCH.key in str(err.value)
    assert "exporter exploded" in str(err.value)
    # A graph ONNX Runtime cannot load fails the same way.
    monkeypatch.setattr(ort_mod, "export_onnx", lambda *a, **k: b"not an onnx model")
    with pytest.raises(LatencyError, match=TINY_ARCH.hash):
        ev.measure(TINY_ARCH)
    assert len(LatencyCache(path)) == 0
    monkeypatch.undo()
    assert ev.measure(TINY_ARCH).source == "measured" and ev.exports == 3


def test_unexportable_model_raises_latency_error():
    class Svd(nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x.flatten(2))[1]

    ev = OrtLatency(input_size=8, **FAST)
    with pytest.raises(LatencyError, match="svd-net"):
        ev.measure_model(Svd(), "svd-net")


def test_pin_cpu():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity on this OS")
    before = os.sched_getaffinity(0)
    ev = OrtLatency(**SMALL, **FAST, pin_cpu=min(before))
    assert ev.measure(TINY_ARCH).runs >= 5
    assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError, match="pin_cpu"):
        OrtLatency(pin_cpu=max(before) + 1)


# --- ONNX fidelity ------------------------------------------------------------------------


def _randomize(model: nn.Module, seed: int) -> None:
    # Non-trivial BN statistics and a classifier with O(1) outputs, so 1e-4 means something.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        elif isinstance(m, nn.Linear):
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * 0.1)


@pytest.mark.parametrize(
    "arch,size,stem_stride",
    [
        (TINY_ARCH, 32, 1),
        (MnasSpace().sample(random.Random(1)), 32, 1),
        (MnasSpace().sample(random.Random(2)), 40, 2),
        (reference("mnasnet_a1"), 64, 2),
    ],
)
def test_onnx_matches_torch(arch, size, stem_stride):
    model = build_model(arch, num_classes=10, stem_stride=stem_stride).eval()
    _randomize(model, 0)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    session = make_session(export_onnx(model, size, 3, batch_size=2))
    got = session.run(None, {"input": x.numpy()})[0]
    assert got.shape == (2, 10)
    assert np.abs(expected).max() > 0.05  # outputs are not all ~0
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert model.training is False


# --- lookup table -------------------------------------------------------------------------


@pytest.mark.parametrize("width_mult,stem_stride,size", [(1.0, 1, 32), (0.75, 2, 64)])
def test_network_layers_match_built_model(width_mult, stem_stride, size):
    arch = MnasSpace().sample(random.Random(7))
    model = build_model(arch, num_classes=10, width_mult=width_mult, stem_stride=stem_stride)
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[1:], o.shape[1])))
        for m in model.features
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    layers = network_layers(parse_blocks(arch.key), size, 3, 10, width_mult, stem_stride)
    assert len(layers) == len(seen)
    for cfg, ((chs, h, w), out_chs) in zip(layers, seen, strict=True):
        assert (cfg.in_chs, cfg.res, cfg.res, cfg.out_chs) == (chs, h, w, out_chs)
    # Each standalone layer module is the one in the network (same parameter count).
    for cfg, module in zip(layers[:-1], model.features[:-1], strict=True):
        assert sum(p.numel() for p in cfg.module().parameters()) == sum(
            p.numel() for p in module.parameters()
        )


def test_space_layer_configs_cover_exactly_the_space():
    space = tiny_space()
    configs = space_layer_configs(space, 32, 3, 10, 1.0, 2)
    every = [
        space.architecture(t)
        for t in itertools.product(*(range(len(d.choices)) for d in space.decisions))
    ]
    assert len(every) == 64
    used = {c for a in every for c in network_layers(parse_blocks(a.key), 32, 3, 10, 1.0, 2)}
    assert configs == used
    # Stem; block 1 (shape changes: none vs pool projection) 2 ops x 2 SE x 2 skips; block 2
    # first layer likewise 8; its second layer keeps its shape, so identity and pool are one
    # entry: 4; head.
    assert len(configs) == 1 + 8 + 8 + 4 + 1


def test_fit_calibration_picks_the_model_that_predicts_left_out_networks():
    # An exact affine relation: affine wins and recovers it.
    raw = [1.0, 2.0, 4.0, 8.0, 16.0]
    cal = fit_calibration(raw, [0.5 + 0.8 * r for r in raw])
    assert cal.kind == "affine"
    assert (cal.intercept_ms, cal.slope) == (pytest.approx(0.5), pytest.approx(0.8))
    # A pure ratio: affine can only tie out of sample, and the simpler model is kept.
    cal = fit_calibration(raw, [1.3 * r for r in raw])
    assert cal == Calibration("scale", 0.0, pytest.approx(1.3), 0.0)
    # Relative error, not absolute: scale minimises sum((b*x/y - 1)^2) -> b = sum(r)/sum(r^2).
    measured = [1.5, 2.9, 6.2]
    r = np.array([1.0, 2.0, 4.0]) / np.array(measured)
    assert fit_calibration([1.0, 2.0, 4.0], measured) == Calibration(
        "scale", 0.0, pytest.approx(r.sum() / (r * r).sum()), 0.0
    )
    # Noise the fits chase: the plain sum predicts left-out networks best.
    noisy = [1.02, 1.98, 4.05, 7.9, 16.2]
    assert fit_calibration(raw, noisy) == Calibration()
    # Too few networks for a fit; a decreasing relation is never fitted.
    assert fit_calibration([1.0, 2.0], [2.0, 3.5]) == Calibration()
    assert fit_calibration([4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]).kind != "affine"
    with pytest.raises(ValueError, match="> 0"):
        fit_calibration([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="mparams"):
        fit_calibration([1.0, 2.0], [1.0, 2.0], [1.0])
    assert mape([110.0, 90.0], [100.0, 100.0]) == pytest.approx(10.0)


def test_weights_term_wins_when_big_networks_are_slower_than_their_layers():
    # Measured = 0.1 + 1.05 * sum + 0.08 ms per million parameters (weights leave the cache).
    raw = [0.4, 0.6, 0.5, 0.9, 0.7, 0.8, 0.55]
    mp = [1.0, 4.5, 2.0, 1.5, 3.0, 5.5, 0.8]
    measured = [0.1 + 1.05 * x + 0.08 * p for x, p in zip(raw, mp, strict=True)]
    cal = fit_calibration(raw, measured, mp)
    assert cal.kind == "affine_weights"
    assert (cal.intercept_ms, cal.slope, cal.ms_per_mparam) == (
        pytest.approx(0.1),
        pytest.approx(1.05),
        pytest.approx(0.08),
    )
    assert cal.predict(1.0, 2.0) == pytest.approx(0.1 + 1.05 + 0.16)
    # Without parameter counts (or all equal) the weights model is not a candidate.
    assert fit_calibration(raw, measured).kind != "affine_weights"
    assert fit_calibration(raw, measured, [2.0] * 7).kind != "affine_weights"


def test_lut_build_save_load_round_trip(tmp_path):
    space = tiny_space()
    setup = dict(input_size=32, in_channels=3, num_classes=10, stem_stride=2)
    ev = OrtLatency(**setup, **FAST)
    configs = space_layer_configs(space, **setup)
    calib = [space.sample(random.Random(s)) for s in range(3)]
    table = build_table(ev, configs, calib)
    assert set(table["entries"]) == {c.key for c in configs}
    assert all(v >= 0 for v in table["entries"].values())
    assert len(table["calibration"]["measured_ms"]) == 3
    path = tmp_path / "lut.json"
    save_table(table, path)

    lut = LutLatency(path, **setup, threads=1, batch_size=1)
    assert lut.table == json.loads(path.read_text())
    arch = space.sample(random.Random(11))
    layers = network_layers(parse_blocks(arch.key), 32, 3, 10, 1.0, 2)
    raw = table["overhead_ms"] + sum(table["entries"][c.key] for c in layers)
    mparams = sum(table["mparams"][c.key] for c in layers)
    assert mparams * 1e6 == pytest.approx(
        sum(p.numel() for p in build_model(arch, num_classes=10).parameters())
    )
    cal = table["calibration"]
    s = lut.measure(arch)
    assert s.source == "lut" and s.runs == 0 and s.export_seconds == 0.0
    assert s.median_ms == pytest.approx(
        cal["intercept_ms"] + cal["slope"] * raw + cal["ms_per_mparam"] * mparams
    )
    assert s.median_ms > 0
    settings = LatencySettings(kind="lut", lut_path=str(path))
    same = make_latency_evaluator(settings, input_size=32, num_classes=10)
    assert same.measure(arch) == s

    with pytest.raises(ValueError, match="input_size"):
        LutLatency(path, input_size=224)
    with pytest.raises(LatencyError, match="no entry"):
        lut.measure(reference("mobilenetv2"))


# --- MACs, factory, CLI -------------------------------------------------------------------


def test_macs_proxy_matches_published_a1():
    ev = MacsLatency()
    s = ev.measure(reference("mnasnet_a1"))
    assert s.source == "macs" and s.runs == 0
    assert s.median_ms == pytest.approx(312, rel=0.01)  # paper Table 1: 312M multiply-adds
    small = MacsLatency(input_size=32, stem_stride=1).measure(reference("mnasnet_a1"))
    assert small.median_ms < s.median_ms


def test_make_latency_evaluator():
    measured = make_latency_evaluator(LatencySettings(cache=None), input_size=32)
    assert isinstance(measured, OrtLatency) and measured.reference and measured.cache is None
    assert isinstance(
        make_latency_evaluator(LatencySettings(kind="macs"), input_size=32), MacsLatency
    )
    with pytest.raises(ValueError, match="latency.kind='flops'"):
        LatencySettings(kind="flops")
    with pytest.raises(ValueError, match="needs latency.lut_path"):
        LatencySettings(kind="lut")
    with pytest.raises(ValueError, match="max_runs=3 must be >= min_runs=15"):
        LatencySettings(max_runs=3)


def test_cli_json(capsys):
    rc = cli.main(
        ["latency", TINY_ARCH.key, "--input-size", "32", "--num-classes", "10"]
        + ["--threads", "1", "--time-cap", "0.2", "--json"]
    )
    assert rc == 0
    record = json.loads(capsys.readouterr().out)
    for k in ("median_ms", "p10_ms", "p90_ms", "cv", "runs", "hash", "blocks", "threads"):
        assert k in record
    assert record["hash"] == TINY_ARCH.hash and record["source"] == "measured"
    assert record["p10_ms"] <= record["median_ms"] <= record["p90_ms"] and record["runs"] >= 5
    assert cli.main(["latency", "mnasnet_a1", "--kind", "macs", "--json"]) == 0
    macs = json.loads(capsys.readouterr().out)
    assert macs["median_ms"] == pytest.approx(312, rel=0.01) and macs["scale"] == "MMACs"
    assert cli.main(["latency", "mnasnet_a1", "--kind", "lut"]) == 2


def test_latency_table_script_composes_the_search_config(capsys):
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "scripts", "latency_table.py")
    spec = importlib.util.spec_from_file_location("script_latency_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(["--dry-run", "data.image_size=16", "model.width_mult=0.5"])
    out = capsys.readouterr().out
    # digits: one channel, ten classes; the search's stem stride (1) and width.
    assert rc == 0
    assert "'input_size': 16, 'in_channels': 1, 'num_classes': 10" in out
    assert "'width_mult': 0.5, 'stem_stride': 1" in out
    assert "distinct layer configurations" in out
