"""Does ``python -m mnas latency`` give the same answer twice? (issue 17)

Runs the command a new user would run, ``python -m mnas latency ARCH --input-size 64
--threads 1 --json``, over six networks of clearly different cost (MobileNetV2, MnasNet-A1,
MnasNet-B1 and three block-string networks), one fresh process per network, in two passes
one after the other. Prints each network's median in both passes, the median over networks
of ``|pass 2 - pass 1| / pass 1``, and Kendall's tau between the passes; the goal is
<= 5% and tau >= 0.85 with the command's default flags.

    python bench/latency_repeat.py                      # default flags
    python bench/latency_repeat.py -- --reference       # extra flags for every command

Other processes on the machine add noise: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from scipy.stats import kendalltau

NETWORKS = {
    "mobilenetv2": "mobilenetv2",
    "mnasnet_a1": "mnasnet_a1",
    "mnasnet_b1": "mnasnet_b1",
    "small": "ds_r1_k3_s1_c8,ir_r1_k3_s2_e1_c16,ir_r1_k3_s2_e1_c24,ir_r1_k3_s2_e1_c32",
    "medium": "ds_r1_k3_s1_c16,ir_r2_k3_s2_e3_c24,ir_r2_k5_s2_e3_c40_se0.25,"
    "ir_r2_k3_s2_e6_c80,ir_r1_k3_s1_e6_c112",
    "large": "ds_r1_k3_s1_c32,ir_r3_k5_s2_e6_c48,ir_r4_k5_s2_e6_c96_se0.25,"
    "ir_r4_k5_s2_e6_c160,ir_r3_k5_s1_e6_c192_se0.25,ir_r2_k5_s2_e6_c320",
}
COMMAND = ["-m", "mnas", "latency", "--input-size", "64", "--threads", "1", "--json"]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one(arch: str, extra: list[str]) -> dict:
    cmd = [sys.executable, *COMMAND[:3], arch, *COMMAND[3:], *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("extra", nargs="*", help="flags added to every command (after --)")
    args = p.parse_args()
    print(f"command: python {' '.join(COMMAND[:3])} ARCH {' '.join(COMMAND[3:] + args.extra)}")
    print(f"load average before: {load()}")
    t0 = time.perf_counter()
    passes = []
    for _ in range(args.passes):
        passes.append({name: one(arch, args.extra) for name, arch in NETWORKS.items()})
    print(f"load average after:  {load()}  ({time.perf_counter() - t0:.0f} s)")
    first = passes[0]
    scale = first["mobilenetv2"].get("scale", "raw (no scale field)")
    print(f"scale of median_ms: {scale}")
    header = f"{'network':<12}" + "".join(f"  pass {i + 1} ms" for i in range(len(passes)))
    print(header + "   |diff|   raw pass 1   raw pass 2")
    diffs = []
    for name in NETWORKS:
        meds = [p[name]["median_ms"] for p in passes]
        diff = abs(meds[1] - meds[0]) / meds[0]
        diffs.append(diff)
        raw = [p[name].get("raw_median_ms", float("nan")) for p in passes[:2]]
        print(
            f"{name:<12}"
            + "".join(f"  {m:>9.3f}" for m in meds)
            + f"  {diff:>6.1%}   {raw[0]:>10.3f}   {raw[1]:>10.3f}"
        )
    tau = kendalltau(
        [passes[0][n]["median_ms"] for n in NETWORKS], [passes[1][n]["median_ms"] for n in NETWORKS]
    ).statistic
    print(f"median |pass 2 - pass 1| / pass 1 over networks: {statistics.median(diffs):.1%}")
    print(f"Kendall tau between passes 1 and 2: {tau:.3f}")


if __name__ == "__main__":
    main()
