"""One latency scale everywhere, and a latency source that cannot break a search
(issue 17; issue 12, holes 5-8)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import mnas.latency.lut as lut_mod
import mnas.latency.ort as ort_mod
from mnas import cli
from mnas.data import load_dataset
from mnas.deploy import ExportSettings, finalize
from mnas.latency import (
    LatencyError,
    LatencySettings,
    LatencyStats,
    LutLatency,
    OrtLatency,
    TimingPlan,
    Timings,
    build_table,
    reference_network,
    save_table,
    space_layer_configs,
)
from mnas.latency.stats import median_ci_halfwidth
from mnas.space import Architecture, MnasSpace

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(warmup=1, min_runs=5, max_runs=20, rel_ci=0.05, time_cap_s=0.3)
SMALL = dict(input_size=32, num_classes=10, stem_stride=2)
TINY_ARCH = Architecture.from_blocks(
    "ds_r1_k3_s1_c16,ir_r2_k3_s2_e3_c24_se0.25,cn_r1_k5_s2_c32_pool"
)


# --- hole 5: the cache is opened where timing happens; a broken cache is a miss ------------


def test_cache_path_is_expanded_and_opened_where_timing_happens(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    coordinator, device = tmp_path / "coordinator", tmp_path / "device"
    monkeypatch.setenv("HOME", str(coordinator))
    ev = OrtLatency(**SMALL, **FAST, cache_path="~/.cache/mnas/latency.sqlite")
    shipped = pickle.dumps(ev)
    monkeypatch.setenv("HOME", str(device))
    there = pickle.loads(shipped)
    assert there.measure(TINY_ARCH).source == "measured"
    assert there.measure(TINY_ARCH).source == "cache"
    assert (device / ".cache" / "mnas" / "latency.sqlite").is_file()
    assert not coordinator.exists() and not (tmp_path / "~").exists()


def test_search_settings_ship_the_cache_path_unexpanded(tmp_path, monkeypatch):
    from mnas.latency import make_latency_evaluator

    monkeypatch.setenv("HOME", str(tmp_path / "coordinator"))
    ev = make_latency_evaluator(LatencySettings(cache="~/.cache/mnas/latency.sqlite"), **SMALL)
    assert ev.cache.path == "~/.cache/mnas/latency.sqlite"
    assert not (tmp_path / "coordinator").exists()


def _break(path: Path, how: str) -> Path:
    if how == "directory":
        path.mkdir()
        return path
    if how == "garbage":
        path.write_bytes(b"this is not an SQLite database\n" * 200)
        return path
    path.write_text("a file where a folder should be")
    return path / "latency.sqlite"


@pytest.mark.parametrize("how", ["directory", "garbage", "under_a_file"])
def test_unusable_cache_is_a_miss_with_a_warning(tmp_path, caplog, how):
    path = _break(tmp_path / "lat.sqlite", how)
    ev = OrtLatency(**SMALL, **FAST, cache_path=path, reference=True)
    with caplog.at_level(logging.WARNING, logger="mnas.latency"):
        first = ev.measure(TINY_ARCH)
        second = ev.measure(TINY_ARCH)
    assert (first.source, second.source) == ("measured", "measured")
    assert first.drift_factor != 1.0 and ev.exports == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(str(path) in r.getMessage() for r in warnings)
    # warned once per evaluator, not once per architecture
    assert len(warnings) == 1


# --- hole 6: a lookup table never predicts <= 0 ms ---------------------------------------


def _table_for(archs, setup: dict, entry_ms, overhead_ms: float, calibration: dict) -> dict:
    configs = set()
    for arch in archs:
        configs |= lut_mod.table_configs_for([arch], **setup)
    return {
        "format": lut_mod.TABLE_FORMAT,
        "setup": OrtLatency(**setup).setup(),
        "overhead_ms": overhead_ms,
        "entries": {c.key: entry_ms(c) for c in configs},
        "mparams": {c.key: 0.001 for c in configs},
        "calibration": calibration,
    }


def test_lut_prediction_at_or_below_zero_is_a_latency_error(tmp_path):
    setup = dict(input_size=32, in_channels=3, num_classes=10, stem_stride=2)
    cal = {"kind": "affine", "intercept_ms": -1.0, "slope": 1.0, "ms_per_mparam": 0.0}
    table = _table_for([TINY_ARCH], setup, lambda c: 0.01, 0.005, cal)
    save_table(table, tmp_path / "lut.json")
    with pytest.raises(LatencyError, match=TINY_ARCH.hash) as err:
        LutLatency(tmp_path / "lut.json").measure(TINY_ARCH)
    assert "<= 0" in str(err.value)


def _tiny_space() -> MnasSpace:
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


def test_calibration_never_predicts_below_the_call_overhead_in_the_tables_range(
    monkeypatch, tmp_path
):
    """Whole networks measured at exactly 2 x their summed layers minus a constant: the best
    unconstrained fit is an affine line with a negative intercept, which puts the smallest
    networks of the space at or below 0 ms."""
    space = _tiny_space()
    setup = dict(input_size=32, in_channels=3, num_classes=10, stem_stride=2)
    configs = space_layer_configs(space, **setup)
    overhead = 0.01
    entries = {c.key: 0.002 * c.out_chs * c.exp_ratio * (1 + c.se_ratio) for c in configs}
    mparams = {c.key: 0.001 for c in configs}
    stub = {"setup": OrtLatency(**setup).setup(), "overhead_ms": overhead, "entries": entries}
    every = [space.architecture(t) for t in _all_tokens(space)]
    raw = {a.hash: lut_mod._sums(stub, a)[0] for a in every}
    smallest = min(raw.values())
    calib = sorted(every, key=lambda a: raw[a.hash])[-6:]
    shift = 2 * smallest + 0.01  # the smallest network would be predicted at -0.01 ms

    class WholeNetworks:
        def setup(self) -> dict:
            return stub["setup"]

        def measure(self, arch):
            return LatencyStats.point(2 * raw[arch.hash] - shift, "measured")

    monkeypatch.setattr(
        lut_mod, "profile_layers", lambda configs, ev, progress=None: (entries, overhead, mparams)
    )
    table = build_table(WholeNetworks(), configs, calib)
    save_table(table, tmp_path / "lut.json")
    lut = LutLatency(tmp_path / "lut.json")
    predictions = [lut.measure(a).median_ms for a in every]
    assert min(predictions) >= overhead
    # the calibration networks are still predicted closely
    for a in calib:
        assert lut.measure(a).median_ms == pytest.approx(2 * raw[a.hash] - shift, rel=0.15)


def _all_tokens(space: MnasSpace):
    import itertools

    return itertools.product(*(range(len(d.choices)) for d in space.decisions))


# --- hole 7: the drift-correction nominal --------------------------------------------------


def test_first_candidate_block_comes_after_an_untimed_run():
    from mnas.latency import time_runs

    calls = []
    plan = TimingPlan(warmup=2, min_runs=16, max_runs=16, rel_ci=1e-12, time_cap_s=30)
    t = time_runs(lambda: calls.append("x"), plan, lambda: calls.append("r"))
    # warm-up ends with the reference: the candidate's first block starts with an untimed run
    assert calls == ["x", "r"] * 2 + ["x"] * 9 + ["r"] * 9 + ["x"] * 9 + ["r"] * 9
    assert len(t.samples) == 16 and [len(r) for r in t.ref_samples] == [16]


def test_several_references_are_timed_each_in_a_block_of_its_own():
    from mnas.latency import time_runs

    calls = []
    plan = TimingPlan(warmup=1, min_runs=16, max_runs=16, rel_ci=1e-12, time_cap_s=30)
    t = time_runs(
        lambda: calls.append("x"), plan, [lambda: calls.append("a"), lambda: calls.append("b")]
    )
    cycle = ["x"] * 9 + ["a"] * 9 + ["b"] * 9
    assert calls == ["x", "a", "b"] + cycle * 2
    assert len(t.samples) == 16 and [len(r) for r in t.ref_samples] == [16, 16]


def test_the_level_of_several_references_is_the_geometric_mean_of_their_medians():
    t = Timings([2.0] * 9, [[1.0, 1.0, 4.0], [4.0, 4.0, 1.0]], [2.0] * 9)
    assert t.ref_median() == pytest.approx(2.0)  # sqrt(1 * 4)
    one = Timings([2.0] * 9, [[1.0, 3.0, 2.0]], [2.0] * 9)
    assert one.ref_median() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no reference"):
        Timings([2.0], [], [2.0]).ref_median()
    # the level's interval: each reference's in quadrature, over their number
    runs = list(np.linspace(1.0, 2.0, 40))
    two = Timings(runs, [runs, runs], runs)
    h = median_ci_halfwidth(runs)
    assert two.ci_rel(True) == pytest.approx(math.hypot(h, math.hypot(h, h) / 2))
    assert Timings(runs, [runs], runs).ci_rel(True) == pytest.approx(math.hypot(h, h))


def test_an_evaluator_with_several_references_divides_by_their_level(monkeypatch, tmp_path):
    # two references running 1.2x and 0.9x slower than their nominals: the candidate is
    # corrected by the geometric mean, and the set-up names both networks in block order
    def fake_time_runs(run, plan, reference=None, clock="wall"):
        samples = [3.0] * 9
        refs = [[2.4] * 9, [0.9] * 9] if reference is not None else []
        return Timings(samples, refs, samples)

    monkeypatch.setattr(ort_mod, "time_runs", fake_time_runs)
    ev = OrtLatency(
        **SMALL, **FAST, reference=True, reference_ms=1.0, references=["space:7", "space:11"]
    )
    s = ev.measure(TINY_ARCH)
    assert s.drift_factor == pytest.approx(1 / math.sqrt(2.4 * 0.9))
    assert s.median_ms == pytest.approx(3.0 / math.sqrt(2.4 * 0.9))
    hashes = [reference_network(n).hash for n in ("space:7", "space:11")]
    assert ev.setup()["reference"] == "+".join(hashes)
    mnv2 = OrtLatency(**SMALL, reference=True, reference_ms=1.0, references=["mobilenetv2"])
    assert mnv2.setup()["reference"] == reference_network("mobilenetv2").hash


def test_auto_references_are_two_space_networks_up_to_32_and_mobilenetv2_above():
    for size, want in ((16, ("space:7", "space:11")), (32, ("space:7", "space:11"))):
        assert OrtLatency(input_size=size, reference=True).references == want
    assert OrtLatency(input_size=48, reference=True).references == ("mobilenetv2",)
    assert OrtLatency(input_size=224, reference=True).references == ("mobilenetv2",)
    # a MobileNetV2-only set-up keeps the key figures were cached under before
    big = OrtLatency(input_size=224, reference=True, reference_ms=1.0)
    assert big.setup()["reference"] == reference_network("mobilenetv2").hash
    assert LatencySettings().references == ("auto",)
    with pytest.raises(ValueError, match="'auto' stands alone"):
        LatencySettings(references=["auto", "space:7"])


def test_references_are_checked_by_name_before_any_work():
    assert reference_network("space:7") == MnasSpace().sample(random.Random(7))
    assert reference_network("space:7").hash != reference_network("space:11").hash
    for bad, match in (
        (["space:x"], "'space:x' is not a reference; allowed: 'auto', or names: 'mobilenetv2'"),
        (["mnasnet_a1"], "'mnasnet_a1' is not a reference"),
        ([], "at least one reference"),
        (["space:7", "space:7"], "names a network twice"),
        (["space:7", "space:07"], "names a network twice"),
        ("space:7", "a list of names"),
    ):
        with pytest.raises(ValueError, match=re.escape(match)):
            OrtLatency(**SMALL, reference=True, references=bad)
        with pytest.raises(ValueError, match=r"latency\.references"):
            LatencySettings(references=bad)
    assert LatencySettings(references=["space:7", "space:11"]).references == ("space:7", "space:11")


def test_nominal_of_several_references_is_keyed_by_all_of_them_and_timed_alone(tmp_path):
    path = tmp_path / "lat.sqlite"
    quick = dict(SMALL, **FAST, reference=True, cache_path=path)
    single = OrtLatency(**quick)
    both = OrtLatency(**quick, references=["mobilenetv2", "space:11"])
    swapped = OrtLatency(**quick, references=["space:11", "mobilenetv2"])
    keys = {single.nominal_key(), both.nominal_key(), swapped.nominal_key()}
    assert len(keys) == 3
    nominal = both.nominal()
    assert nominal.ms > 0 and len(both.reference_runners()) == 2
    assert OrtLatency(**quick, references=["mobilenetv2", "space:11"]).nominal() == nominal
    s = both.measure(TINY_ARCH)
    assert s.source == "measured" and s.nominal_ms == nominal.ms and 0.2 < s.drift_factor < 5
    assert both.cache_key(TINY_ARCH) != single.cache_key(TINY_ARCH)


def test_nominal_is_keyed_by_the_reference_network_itself(tmp_path, monkeypatch):
    path = tmp_path / "lat.sqlite"
    quick = dict(SMALL, **FAST, reference=True, cache_path=path, references=["mobilenetv2"])
    nominal = OrtLatency(**quick).nominal().ms
    assert OrtLatency(**quick).nominal().ms == nominal
    # Another reference network (a changed baseline) must not inherit that nominal.
    other = list(MnasSpace().baseline_tokens())
    other[0] = (other[0] + 1) % len(MnasSpace().decisions[0].choices)
    monkeypatch.setattr(MnasSpace, "baseline_tokens", lambda self: tuple(other))
    assert OrtLatency(**quick).nominal().ms != nominal


def test_nominal_is_keyed_by_runtime_threads_and_shape(tmp_path, monkeypatch):
    path = tmp_path / "lat.sqlite"
    quick = dict(SMALL, **FAST, reference=True, cache_path=path)
    base = OrtLatency(**quick).nominal_key()
    assert OrtLatency(**quick).nominal_key() == base
    for change in (dict(threads=2), dict(input_size=48), dict(batch_size=2), dict(num_classes=5)):
        assert OrtLatency(**{**quick, **change}).nominal_key() != base
    monkeypatch.setattr(ort_mod.ort, "__version__", "0.0.1")
    assert OrtLatency(**quick).nominal_key() != base


def test_remeasured_nominal_replaces_the_stored_one_and_its_scale(tmp_path, capsys):
    path = tmp_path / "lat.sqlite"
    quick = dict(SMALL, **FAST, reference=True, cache_path=path)
    ev = OrtLatency(**quick)
    old = ev.nominal().ms
    assert ev.measure(TINY_ARCH).source == "measured"
    assert OrtLatency(**quick).measure(TINY_ARCH).source == "cache"
    args = ["latency-nominal", "--input-size", "32", "--num-classes", "10"]
    assert cli.main([*args, "--cache", str(path), "--seconds", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["previous_ms"] == old and out["nominal_ms"] > 0 and out["nominal_ms"] != old
    fresh = OrtLatency(**quick)
    assert fresh.nominal().ms == out["nominal_ms"]
    # figures cached on the old scale are not reused on the new one
    again = fresh.measure(TINY_ARCH)
    assert again.source == "measured" and again.nominal_ms == out["nominal_ms"]


# --- issue 17: the CLI's default scale, labels and uncertainty ----------------------------


def test_cpu_clock_by_default_with_one_thread_only():
    assert OrtLatency(**SMALL).clock == "cpu"
    assert OrtLatency(**SMALL, threads=2).clock == "wall"
    assert OrtLatency(**SMALL, clock="wall").clock == "wall"
    with pytest.raises(ValueError, match="clock='cpu' with threads=2"):
        OrtLatency(**SMALL, threads=2, clock="cpu")
    with pytest.raises(ValueError, match="clock='sundial'"):
        OrtLatency(**SMALL, clock="sundial")
    # the clock is part of what a figure means
    assert OrtLatency(**SMALL).cache_key(TINY_ARCH) != OrtLatency(**SMALL, clock="wall").cache_key(
        TINY_ARCH
    )


def test_cli_default_is_drift_corrected_labelled_with_raw_and_ci(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    args = ["latency", TINY_ARCH.key, "--input-size", "32", "--num-classes", "10"]
    assert cli.main([*args, "--time-cap", "0.3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["scale"] == "drift-corrected" and r["nominal_ms"] > 0
    assert r["median_ms"] == pytest.approx(r["raw_median_ms"] * r["drift_factor"])
    assert r["ci_low_ms"] <= r["median_ms"] <= r["ci_high_ms"]
    assert isinstance(r["ci_met"], bool) and r["source"] == "measured"
    assert r["references"] == ["space:7", "space:11"]  # auto at 32x32
    # the nominal lives where the search keeps it, so both share one scale
    assert (tmp_path / ".cache" / "mnas" / "latency.sqlite").is_file()
    # measured afresh every time, never answered from the cache
    assert cli.main([*args, "--time-cap", "0.3", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["source"] == "measured" and again["nominal_ms"] == r["nominal_ms"]

    assert cli.main([*args, "--time-cap", "0.3"]) == 0
    text = capsys.readouterr().out
    assert "drift-corrected" in text and "raw" in text and "95% CI" in text
    assert "speed when space:7 x space:11 took" in text
    assert cli.main([*args, "--time-cap", "0.3", "--references", "mobilenetv2", "--json"]) == 0
    mnv2 = json.loads(capsys.readouterr().out)
    assert mnv2["references"] == ["mobilenetv2"] and mnv2["nominal_ms"] != r["nominal_ms"]
    # A time cap too short for the interval: said, not hidden.
    assert cli.main([*args, "--time-cap", "0.001"]) == 0
    assert "too noisy" in capsys.readouterr().out


def test_cli_raw_timing_on_request(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    args = ["latency", TINY_ARCH.key, "--input-size", "32", "--num-classes", "10"]
    assert cli.main([*args, "--time-cap", "0.2", "--raw", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["scale"] == "raw" and r["drift_factor"] == 1.0 and r["nominal_ms"] is None
    assert r["median_ms"] == r["raw_median_ms"]


# --- hole 8: retraining reports on the search's scale, on the full training split ---------


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _front_row(**fields):
    """A front record as ``scripts/search.py``'s table reads it."""
    from types import SimpleNamespace

    base = dict(accuracy=0.9, latency_value=0.12, reward=0.8, params=1000, macs=2000)
    return SimpleNamespace(**base, blocks=["ds_r1_k3_s1_c16"], **fields)


def test_search_table_names_the_references_that_set_the_scale(capsys):
    from types import SimpleNamespace

    from mnas.latency.references import references_label, resolve_references

    row = _front_row(latency={"scale": "drift-corrected", "nominal_ms": 0.1401})
    print_table = _load_script("search").print_table
    for size, label in ((16, "space:7 x space:11"), (224, "MobileNetV2")):
        print_table(
            SimpleNamespace(front=[row]), "ms", references_label(resolve_references(["auto"], size))
        )
        out = capsys.readouterr().out
        assert f"speed when {label} took 0.1401 ms" in out, out
        assert "Pareto front: 1 architecture (" in out and "measured ms" not in out


def test_search_table_shows_the_re_timed_front_beside_the_prediction(tmp_path, capsys):
    from types import SimpleNamespace

    script = _load_script("search")
    points = [{"hash": "a1", "measured_latency_ms": 0.1234}, {"hash": "b2"}]
    (tmp_path / "pareto.json").write_text(json.dumps({"points": points}))
    measured = script.front_measured(tmp_path)
    assert measured == {"a1": 0.1234}
    assert script.front_measured(tmp_path / "nowhere") == {}
    latency = {"scale": "drift-corrected", "source": "predictor"}
    rows = [_front_row(hash=h, latency=latency) for h in ("a1", "b2")]
    script.print_table(SimpleNamespace(front=rows), "ms", "space:7 x space:11", measured)
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "acc %" in line)
    assert header.index("lat ms") < header.index("measured ms") < header.index("reward")
    assert "0.1200      0.1234" in lines[lines.index(header) + 2]
    assert " -  " in lines[lines.index(header) + 3]  # a point without a re-timing
    assert any("re-timed on ONNX Runtime" in line for line in lines)


def test_retrain_latency_is_drift_corrected_with_raw_beside_it(tmp_path):
    import torch

    from mnas.nn import build_model

    data = load_dataset("digits", image_size=16, train_size=128, val_size=0)
    kwargs = dict(num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1)
    model = build_model(TINY_ARCH, **kwargs).eval()
    torch.manual_seed(0)
    latency = LatencySettings(
        warmup=1, min_runs=3, max_runs=10, time_cap_s=0.1, cache=str(tmp_path / "lat.sqlite")
    )
    m = finalize(
        model,
        data,
        tmp_path,
        "m",
        {"build_kwargs": kwargs},
        {"search_latency_ms": 1.0},
        latency,
        ExportSettings(check_images=4),
    )
    assert m["latency_scale"] == "drift-corrected" and m["latency_nominal_ms"] > 0
    assert m["latency_ms"] == pytest.approx(m["latency_raw_ms"] * m["latency"]["drift_factor"])
    assert m["latency"]["drift_factor"] != 1.0
    assert "latency_torch_raw_ms" in m and "latency_torch_ms" not in m


def _record(arch: Architecture, **extra) -> dict:
    return {**arch.to_dict(), "accuracy": 0.5, **extra}


def test_retrain_knows_the_scale_of_the_search_latency(tmp_path):
    from mnas.deploy.choose import _choice_from_record

    stats = {"median_ms": 2.0, "drift_factor": 0.9, "nominal_ms": 1.5, "scale": "drift-corrected"}
    c = _choice_from_record(
        _record(TINY_ARCH, latency_ms=2.0, latency=stats), "x", "pareto", tmp_path
    )
    assert (c.search_latency_ms, c.search_latency_scale) == (2.0, "drift-corrected")
    assert c.search_latency_nominal_ms == 1.5
    old = {"median_ms": 2.0, "drift_factor": 1.0}
    c = _choice_from_record(
        _record(TINY_ARCH, latency_ms=2.0, latency=old), "x", "pareto", tmp_path
    )
    assert c.search_latency_scale == "raw"
    # millions of MACs are no latency in ms
    macs = _record(TINY_ARCH, latency_ms=300.0, latency_unit="MMACs", latency={"source": "macs"})
    c = _choice_from_record(macs, "x", "pareto", tmp_path)
    assert c.search_latency_ms is None and c.search_latency_scale is None


def test_retrain_warns_when_the_search_used_another_scale(tmp_path, caplog):
    import torch

    from mnas.nn import build_model

    data = load_dataset("digits", image_size=16, train_size=128, val_size=0)
    kwargs = dict(num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1)
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, **kwargs).eval()
    latency = LatencySettings(warmup=1, min_runs=3, max_runs=10, time_cap_s=0.1)
    metrics = {"search_latency_ms": 1.0, "search_latency_nominal_ms": 1e-3}
    with caplog.at_level(logging.WARNING, logger="mnas.retrain"):
        finalize(
            model,
            data,
            tmp_path,
            "m",
            {"build_kwargs": kwargs},
            metrics,
            latency,
            ExportSettings(check_images=4),
        )
    assert "different scales" in caplog.text


def test_retrain_trains_on_the_full_training_split_by_default(tmp_path):
    script = _load_script("retrain")
    run_json = {
        "data": {"name": "digits", "image_size": 12, "train_size": 256, "val_size": 64},
        "model": {"width_mult": 0.25},
    }
    overrides = ["arch=mobilenetv2"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="retrain", overrides=overrides)
    script.apply_run_settings(cfg, run_json, overrides)
    assert cfg.data.image_size == 12 and cfg.model.width_mult == 0.25
    assert cfg.data.train_size is None and cfg.data.val_size == 0
