"""One latency scale everywhere, and a latency source that cannot break a search
(issue 17; issue 12, holes 5-8)."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

import mnas.latency.lut as lut_mod
from mnas.latency import (
    LatencyError,
    LatencySettings,
    LatencyStats,
    LutLatency,
    OrtLatency,
    build_table,
    save_table,
    space_layer_configs,
)
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
