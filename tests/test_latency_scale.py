"""One latency scale everywhere, and a latency source that cannot break a search
(issue 17; issue 12, holes 5-8)."""

from __future__ import annotations

from pathlib import Path

import pytest

import mnas.latency.lut as lut_mod
from mnas.latency import (
    LatencyError,
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
