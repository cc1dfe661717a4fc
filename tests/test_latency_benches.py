"""Benches' analyses: how two timings of the same networks are compared (bench/latency_sessions.py),
how much of a timing's level is its reference sessions' luck (bench/reference_sessions.py)."""

from __future__ import annotations

import numpy as np
import pytest
from bench_modules import load_bench


def test_agreement_of_two_timings():
    bench = load_bench("latency_sessions")
    got = bench.agreement([1.0, 2.18, 2.9, 4.0], [1.0, 2.0, 3.0, 5.0])
    # ratios - 1: 0, +0.09, -0.033, -0.20
    assert got["median_diff_pct"] == pytest.approx((9 + 10 / 3) / 2)
    assert got["within_10"] == pytest.approx(0.75) and got["within_5"] == pytest.approx(0.5)
    assert got["kendall_tau"] == pytest.approx(1.0)


def test_sessions_summary_compares_the_right_columns():
    bench = load_bench("latency_sessions")

    def row(a, a2, b, c, scale=1.0):
        r = {}
        for name, v in (("A", a), ("A again", a2), ("B", b), ("C", c)):
            for sfx in ("", "_raw", "_min", "_p25"):
                r[name + sfx] = v * (2.0 if sfx == "_raw" else 1.0) * scale
        return r

    first = [row(1.0, 1.0, 1.1, 1.0), row(2.0, 2.0, 2.0, 2.4), row(3.0, 3.0, 3.0, 3.0)]
    second = [row(1.0, 1.0, 1.1, 1.0, 1.2), row(2.0, 2.0, 2.0, 2.4, 1.2), row(3.0, 3.0, 3.0, 3.0)]
    s = bench.summarise([first, second])
    assert s["same_session"]["median_diff_pct"] == 0.0
    assert s["new_session"]["within_5"] == pytest.approx(2 / 3)  # B is 10% off on one of three
    one = s["pass_to_pass"]["median"]["one_session"]
    assert one["within_10"] == pytest.approx(1 / 3)  # two of three networks 20% slower
    assert s["pass_to_pass"]["uncorrected median"]["median_of_3_sessions"]["median_diff_pct"] == (
        pytest.approx(20.0)
    )
    assert "pass_to_pass" not in bench.summarise([first])


def test_reference_sessions_separates_session_luck_from_run_noise():
    bench = load_bench("reference_sessions")
    rng = np.random.default_rng(0)
    levels = [1.0, 1.02, 0.98]  # three sessions, one reference: +-2% draws
    samples = [[list(level * (1 + 0.001 * rng.standard_normal(400)))] for level in levels]
    (row,) = bench.spread(samples)
    assert row["between_sessions_pct"] == pytest.approx(2.0, rel=0.05)
    assert row["within_session_pct"] < 0.05
    assert row["sessions_rel_pct"][1] - row["sessions_rel_pct"][2] == pytest.approx(4.0, rel=0.05)
    assert row["runs_per_session"] == 400
