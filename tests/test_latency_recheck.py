"""Timing a predictor's networks in passes, and re-checking a predictor against a changed
machine (issue 19). Timings are synthetic (tests/test_latency_predictor.py's machine)."""

import logging
from dataclasses import replace

import numpy as np
import pytest
from test_latency_predictor import NET16, SPACE, FakeEvaluator, archs, setup_dict, synthetic, truth

from mnas.latency import (
    LatencyError,
    LatencySettings,
    build_predictor,
    fit_predictor,
    refit_predictor,
)
from mnas.latency.features import BlockFeatures, NetSetup
from mnas.latency.fit import scores
from mnas.latency.recheck import last_timed, recheck_predictor
from mnas.latency.timed import first_pass_full, time_networks


@pytest.fixture(autouse=True)
def _no_layout_rewrite(monkeypatch):
    """The synthetic machine has no NCHWc rewrite (as in tests/test_latency_predictor.py)."""
    monkeypatch.setattr("mnas.latency.predictor.nchwc_block", lambda: 0)


class ScriptedEvaluator(FakeEvaluator):
    """The synthetic machine, ``factors[p]`` times slower in pass ``p`` (the pass a network
    is in: how often it was timed before), recording the order of the timings, each of
    which moves ``clock`` on by a second."""

    def __init__(self, factors, clock=None) -> None:
        super().__init__(NET16, 1.0)
        self.factors = factors
        self.order = []
        self.count = {}
        self.clock = clock

    def measure_afresh(self, arch):
        p = self.count.get(arch.key, 0)
        self.count[arch.key] = p + 1
        self.order.append((arch.key, p))
        if self.clock is not None:
            self.clock[0] += 1.0
        return type(super().measure_afresh(arch))(self.factors[p] * truth(self.feats(arch)))


def test_networks_are_timed_in_passes_the_second_reversed_and_averaged_geometrically():
    nets = archs(6, 1)
    ev = ScriptedEvaluator([1.0, 4.0])
    timed = time_networks(ev, nets, profile_runs=20, passes=2)
    keys = [a.key for a in nets]
    assert ev.order == [(k, 0) for k in keys] + [(k, 1) for k in reversed(keys)]
    assert ev.profiled == 6  # the first pass only
    feats = BlockFeatures(NET16, SPACE)
    for a, ms, both in zip(nets, timed.ms, timed.passes_ms, strict=True):
        t = truth(feats(a))
        assert both == pytest.approx([t, 4 * t])
        assert ms == pytest.approx(2 * t)  # sqrt(1 * 4)
    assert len(timed.block_ms) == 6 and all(len(b) == 7 for b in timed.block_ms)
    one = time_networks(ScriptedEvaluator([1.0]), nets, passes=1)
    assert [len(t) for t in one.passes_ms] == [1] * 6 and one.block_ms is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"passes=.*; allowed: an integer >= 1"):
            time_networks(ev, nets, passes=bad)


def test_a_time_budget_stops_the_first_pass_where_the_later_ones_can_still_finish(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("mnas.latency.timed.time.perf_counter", lambda: clock[0])
    nets = archs(10, 2)
    ev = ScriptedEvaluator([1.0, 1.0], clock)
    # one second per timing (a later one planned at 1.05 s): before network 3 (2 s gone),
    # 2 + 1 + 3 x 1.05 > 5 s, so 2 networks, and the second pass re-times both
    timed = time_networks(ev, nets, passes=2, max_seconds=5)
    assert [a.key for a in timed.archs] == [a.key for a in nets[:2]]
    assert [len(t) for t in timed.passes_ms] == [2, 2]
    assert timed.ms[0] == pytest.approx(np.sqrt(np.prod(timed.passes_ms[0])))
    # later timings that turn out slower (4 s): the second pass stops at the budget, newest
    # first, and the network it did not reach keeps its one timing
    clock[0] = 0.0
    slow = SlowerLaterEvaluator([1.0, 1.0], clock)
    timed = time_networks(slow, nets, passes=2, max_seconds=5)
    assert [len(t) for t in timed.passes_ms] == [1, 2] and clock[0] == pytest.approx(6.0)
    assert timed.ms[0] == pytest.approx(timed.passes_ms[0][0])


class SlowerLaterEvaluator(ScriptedEvaluator):
    """A first timing costs a second, a later one four."""

    def measure_afresh(self, arch):
        if self.count.get(arch.key, 0):
            self.clock[0] += 3.0
        return super().measure_afresh(arch)


class ProfilingEvaluator(ScriptedEvaluator):
    """A timing costs a second; a profile two more, which later passes do not repeat."""

    def measure_profiled(self, arch, runs=20):
        stats, profile = super().measure_profiled(arch, runs)
        self.clock[0] += 2.0
        return stats, replace(profile, seconds=2.0)


def test_the_first_pass_budgets_the_later_passes_without_the_profiles(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("mnas.latency.timed.time.perf_counter", lambda: clock[0])
    assert not first_pass_full(0.0, 0, 0.0, 2, 1.0)  # never before the first network
    nets = archs(10, 2)
    ev = ProfilingEvaluator([1.0, 1.0], clock)
    # 3 s a first-pass network, 1 s a later timing (planned at 1.05 s): before network 6
    # (15 s gone), 15 + 3 + 6 x 1.05 > 21; a half-and-half split of the 21 s would have
    # stopped after 4
    timed = time_networks(ev, nets, profile_runs=5, passes=2, max_seconds=21)
    assert len(timed.archs) == 5 and ev.profiled == 5
    assert [len(t) for t in timed.passes_ms] == [2] * 5 and clock[0] == pytest.approx(20.0)
    assert first_pass_full(15.0, 5, 10.0, 2, 21.0) and not first_pass_full(12.0, 4, 8.0, 2, 21.0)


def test_a_build_fits_each_networks_mean_over_its_passes_and_records_them():
    nets = archs(24, 3)
    ev = ScriptedEvaluator([0.9, 1.1])
    pred = build_predictor(ev, nets, model="linear", profile_runs=0)
    t = pred.data["training"]
    assert len(t["passes_ms"]) == 24 and all(len(p) == 2 for p in t["passes_ms"])
    assert t["measured_ms"] == pytest.approx([float(np.sqrt(a * b)) for a, b in t["passes_ms"]])
    assert last_timed(pred) == pred.data["timed_at"] > 0


def test_a_recheck_recalibrates_a_predictor_after_the_machine_slowed_down():
    base = fit_predictor(setup_dict(), *synthetic(80, 7), model="linear")
    held = archs(60, 9)
    feats = BlockFeatures(NET16, SPACE)
    today = [1.25 * truth(feats(a)) for a in held]
    ev = FakeEvaluator(NET16, 1.25)
    checked = recheck_predictor(base, ev, networks=20)
    assert ev.timed == 40  # 20 of its networks, two passes
    r = checked.data["recheck"]
    assert r["median_ratio"] == pytest.approx(1.25) and r["within_5_of_stored"] == 0.0
    assert r["applied"] and r["calibrated_loo_mape"] < r["model_mape"]
    assert len(r["archs"]) == 20 and r["archs"][0] == base.data["training"]["archs"][0]
    assert r["archs"][-1] == base.data["training"]["archs"][-1]
    before = scores([base.predict(a) for a in held], today)
    after = scores([checked.predict(a) for a in held], today)
    assert before["within_10"] < 0.1 and after["within_10"] >= 0.9, (before, after)
    assert last_timed(checked) == r["at"]
    # a second re-check starts from the model, not from the first calibration
    again = recheck_predictor(checked, FakeEvaluator(NET16, 1.5), networks=20)
    ratio = np.median([again.predict(a) / base.predict(a) for a in held])
    assert ratio == pytest.approx(1.5, rel=0.05)
    # the same machine as at the build: nothing moved
    same = recheck_predictor(base, FakeEvaluator(NET16, 1.0), networks=10)
    assert same.data["recheck"]["median_ratio"] == pytest.approx(1.0)
    assert same.data["recheck"]["within_5_of_stored"] == 1.0


def test_a_recheck_refuses_bad_input_before_timing():
    base = fit_predictor(setup_dict(), *synthetic(40, 7), model="linear")
    ev = FakeEvaluator(NET16, 1.0)
    for bad in (4, 41, 2.5):
        with pytest.raises(ValueError, match=r"re-check networks=.*; allowed: 5 \.\. 40"):
            recheck_predictor(base, ev, networks=bad)
    net28 = NetSetup(28, 1, 10, 0.5, 1)
    with pytest.raises(ValueError, match=r"input_shape=\[1, 1, 28, 28\] \(predictor: \[1, 1, 16"):
        recheck_predictor(base, FakeEvaluator(net28, 1.0), networks=10)
    elsewhere = fit_predictor(setup_dict(machine="another"), *synthetic(40, 7), model="linear")
    with pytest.raises(ValueError, match="built on machine another"):
        recheck_predictor(elsewhere, ev, networks=10)
    moved = refit_predictor(base, FakeEvaluator(net28, 1.0), archs(5, 3))
    with pytest.raises(ValueError, match="re-fitted to another set-up"):
        recheck_predictor(moved, FakeEvaluator(net28, 1.0), networks=10)
    assert ev.timed == 0
    with pytest.raises(ValueError, match=r"latency.predictor_recheck=3; allowed: 0 \(never\)"):
        LatencySettings(predictor_recheck=3)
    assert LatencySettings(predictor_recheck=0).predictor_recheck == 0


def test_an_auto_predictor_is_rechecked_once_it_is_old(tmp_path, monkeypatch, caplog):
    from mnas.latency import settings as module

    base = fit_predictor(setup_dict(), *synthetic(30, 7), model="linear")
    base.save(tmp_path / "p.json")
    base.path = str(tmp_path / "p.json")
    calls = []

    def fake_recheck(predictor, evaluator, networks):
        calls.append(networks)
        return predictor.__class__(
            {**predictor.data, "recheck": {"at": module.time.time()}}, predictor.path
        )

    monkeypatch.setattr(module, "recheck_predictor", fake_recheck)
    module._recheck_if_old(base, None, 20)  # just built: not re-checked
    assert calls == []
    base.data["timed_at"] -= 2 * 3600
    module._recheck_if_old(base, None, 0)  # re-checks turned off
    assert calls == []
    module._recheck_if_old(base, None, 50)  # old: re-checked (with at most its 30 networks)
    assert calls == [30]
    saved = type(base).load(tmp_path / "p.json")
    assert saved.data["recheck"]["at"] > base.data["timed_at"]
    module._recheck_if_old(saved, None, 20)  # re-checked just now
    assert calls == [30]

    def failing(predictor, evaluator, networks):
        raise LatencyError("network 3 could not be exported")

    monkeypatch.setattr(module, "recheck_predictor", failing)
    with caplog.at_level(logging.WARNING):
        module._recheck_if_old(base, None, 20)
    assert "re-check failed (network 3 could not be exported); used as it is" in caplog.text


def test_retime_bench_compares_timings_and_what_a_predictor_fitted_to_each_predicts():
    from bench_modules import load_bench

    analyse = load_bench("predictor_retime").analyse
    nets = archs(60, 5)
    feats = BlockFeatures(NET16, SPACE)
    x = np.array([feats(a) for a in nets])
    t = np.array([truth(r) for r in x])
    rng = np.random.default_rng(0)
    timings = {  # t1 timed on a noisy day, t2..t4 on a quiet one
        "t1": t * np.exp(0.08 * rng.standard_normal(60)),
        **{k: t * np.exp(0.01 * rng.standard_normal(60)) for k in ("t2", "t3", "t4")},
    }
    result = analyse(x, timings)
    assert result["test"] == "t4"
    assert set(result["agreement"]) == {"t1-t2", "t1-t3", "t1-t4", "t2-t3", "t2-t4", "t3-t4"}
    assert result["agreement"]["t2-t3"]["within_5"] > result["agreement"]["t1-t2"]["within_5"]
    linear = result["trained_on"]["linear"]
    assert set(linear) == {
        "t1",
        "t2",
        "t3",
        "geo(t1,t2)",
        "geo(t1,t3)",
        "geo(t2,t3)",
        "geo(t1,t2,t3)",
    }
    assert set(result["trained_on"]) == {"linear"}  # no profiles: no blocks model
    assert linear["geo(t2,t3)"]["mape"] < linear["t1"]["mape"]
