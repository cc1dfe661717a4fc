"""Latency benchmark: cost, repeatability, lookup-table accuracy, MACs rank agreement.

``python bench/latency.py`` prints figures and asserts nothing. For each setup (30 sampled
architectures at 32x32, 5 at 224x224 by default) it reports:

- seconds per measurement including build, export and session creation;
- repeatability: Kendall tau between the medians of independent passes, and the median
  over architectures of the coefficient of variation of their repeated medians, for raw
  timings and for drift-corrected ones (a reference network interleaved, the search's
  default);
- a lookup table built for the layers these networks use (calibrated on *other* sampled
  networks): MAPE against the measured medians and speed-up per query;
- Kendall tau of MACs against measured latency.

Other processes on the machine add noise; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import numpy as np

from mnas.latency import (
    LutLatency,
    MacsLatency,
    OrtLatency,
    build_table,
    machine_description,
    save_table,
    space_layer_configs,
    table_configs_for,
)
from mnas.latency.lut import mape
from mnas.space import MnasSpace


def kendall_tau(a, b) -> float:
    """Kendall's tau-a (ties count as neither concordant nor discordant)."""
    n = len(a)
    s = 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s) / (n * (n - 1) / 2)


def timing_passes(archs, setup: dict, args, reference: bool) -> dict:
    """``args.passes`` independent passes over ``archs`` with one evaluator (so that the
    reference's nominal, when used, is shared as it is within a search)."""
    ev = OrtLatency(**setup, pin_cpu=args.pin_cpu, reference=reference)
    if reference:
        ev.nominal()  # its one-off timing is not part of a measurement
    medians, p10s, seconds, cvs, exports = [], [], [], [], []
    for _ in range(args.passes):
        m, lows = [], []
        for arch in archs:
            t0 = time.perf_counter()
            s = ev.measure(arch)
            seconds.append(time.perf_counter() - t0)
            m.append(s.median_ms)
            lows.append(s.p10_ms)
            cvs.append(s.cv)
            exports.append(s.export_seconds)
        medians.append(m)
        p10s.append(lows)
    return dict(medians=medians, p10s=p10s, seconds=seconds, cvs=cvs, exports=exports, ev=ev)


def report_passes(name: str, r: dict, args) -> np.ndarray:
    m = np.asarray(r["medians"])
    mean_medians = m.mean(axis=0)
    repeat_cv = m.std(axis=0, ddof=1) / mean_medians
    low = np.asarray(r["p10s"])
    low_cv = low.std(axis=0, ddof=1) / low.mean(axis=0)
    taus = [kendall_tau(m[i], m[j]) for i in range(len(m)) for j in range(i + 1, len(m))]
    seconds = r["seconds"]
    print(f"   -- {name}")
    print(
        "      pass medians of medians: "
        + ", ".join(f"{statistics.median(x):.3f}" for x in r["medians"])
        + " ms"
    )
    print(
        f"      seconds per measurement incl. export: median {statistics.median(seconds):.2f}, "
        f"mean {statistics.mean(seconds):.2f}, max {max(seconds):.2f} "
        f"(export + session creation: median {statistics.median(r['exports']):.2f})"
    )
    print(f"      latency range: {mean_medians.min():.3f} .. {mean_medians.max():.3f} ms")
    print(f"      within-measurement cv of runs: median {statistics.median(r['cvs']):.1%}")
    print(
        f"      Kendall tau between passes: 1 vs 2 {taus[0]:.3f}, "
        f"mean over pairs {statistics.mean(taus):.3f}"
    )
    print(
        f"      CV of repeated medians ({args.passes} passes): median {np.median(repeat_cv):.1%}, "
        f"p90 {np.percentile(repeat_cv, 90):.1%}"
    )
    print(
        f"      (p10 instead of median: tau {kendall_tau(low[0], low[1]):.3f}, "
        f"CV of repeated p10s {np.median(low_cv):.1%})"
    )
    return mean_medians


def run_setup(label: str, n: int, size: int, stem_stride: int, args, seed: int) -> None:
    space = MnasSpace()
    rng = random.Random(seed)
    archs = [space.sample(rng) for _ in range(n)]
    calib = [space.sample(rng) for _ in range(args.calibration)]
    setup = dict(input_size=size, in_channels=3, num_classes=10, stem_stride=stem_stride)
    print(f"\n== {label}: {n} architectures, input {size}x{size}, stem stride {stem_stride}")
    print(f"   load average before: {os.getloadavg()[0]:.2f}")

    raw = timing_passes(archs, setup, args, reference=False)
    report_passes("raw timings", raw, args)
    corrected = timing_passes(archs, setup, args, reference=True)
    mean_medians = report_passes("drift-corrected (reference network interleaved)", corrected, args)

    macs = [MacsLatency(**setup).measure(a).median_ms for a in archs]
    print(f"   Kendall tau MACs vs measured (corrected): {kendall_tau(macs, mean_medians):.3f}")

    # The table is built with the search's default evaluator (drift-corrected), so that it
    # predicts the figures a search measures.
    full = len(space_layer_configs(space, **setup))
    configs = table_configs_for(archs + calib, **setup)
    table_ev = OrtLatency(
        **setup,
        pin_cpu=args.pin_cpu,
        time_cap_s=0.5,
        max_runs=200,
        reference=True,
        reference_ms=corrected["ev"].nominal().ms,  # one scale for table and networks
    )
    t0 = time.perf_counter()
    table = build_table(table_ev, configs, calib)
    build_s = time.perf_counter() - t0
    path = os.path.join(args.out, f"lut_{size}.json")
    save_table(table, path)
    lut = LutLatency(path, **setup)
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        predicted = [lut.measure(a).median_ms for a in archs]
    query_s = (time.perf_counter() - t0) / (reps * len(archs))
    cal = table["calibration"]
    print(
        f"   lookup table: {len(configs)} layer configs (full space: {full}) in {build_s:.0f} s "
        f"({build_s / len(configs):.2f} s per layer); calibration {cal['kind']}: "
        f"{cal['intercept_ms']:.3f} ms + {cal['slope']:.3f} x sum + {cal['ms_per_mparam']:.4f} "
        f"ms x Mparams, on {len(calib)} other "
        f"networks (in-sample MAPE {cal['mape_percent']:.1f}%)"
    )
    raw_sum = [lut.raw_ms(a) for a in archs]
    print(
        f"   LUT vs measured (corrected): MAPE {mape(predicted, mean_medians):.1f}% "
        f"(uncalibrated sum {mape(raw_sum, mean_medians):.1f}%), Kendall tau "
        f"{kendall_tau(predicted, mean_medians):.3f}"
    )
    mean_s = statistics.mean(corrected["seconds"])
    print(
        f"   LUT query {query_s * 1e6:.0f} us vs measurement {mean_s:.2f} s: "
        f"speed-up x{mean_s / query_s:,.0f}"
    )
    print(f"   load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n32", type=int, default=30)
    p.add_argument("--n224", type=int, default=5)
    p.add_argument("--passes", type=int, default=3, help="independent passes (>= 2)")
    p.add_argument("--calibration", type=int, default=16, help="networks to calibrate the LUT")
    p.add_argument("--stem-stride-32", type=int, default=1, help="stem stride at 32x32")
    p.add_argument("--pin-cpu", type=int)
    p.add_argument("--out", default="/tmp/mnas_bench_latency")
    args = p.parse_args()
    if args.passes < 2:
        p.error("--passes must be >= 2")
    os.makedirs(args.out, exist_ok=True)
    print(f"machine: {machine_description()}, pin_cpu={args.pin_cpu}")
    if args.n32:
        run_setup("32x32", args.n32, 32, args.stem_stride_32, args, seed=0)
    if args.n224:
        run_setup("224x224", args.n224, 224, 2, args, seed=1)


if __name__ == "__main__":
    main()
