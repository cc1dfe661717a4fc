"""Two evaluator settings timing the same networks twice: which one repeats better? (issue 19)

    B="taskset -c 0 python bench/predictor.py --n-heldout 200 --n-noise 0 --n-drift 200"
    $B --out DIR/default --sizes 16 --stage heldout
    $B --out DIR/refs --sizes 16 --stage heldout --override "latency.references=[space:7,space:11]"
    $B --out DIR/default --sizes 16 --stage drift            # ... the arms interleaved
    $B --out DIR/refs --sizes 16 --stage drift --override "latency.references=[space:7,space:11]"
    python bench/latency_arms.py --arms default=DIR/default refs=DIR/refs --sizes 16 32 \
        --split 100 --out DIR/arms.json

``bench/predictor.py`` times its held-out networks with the search's own evaluator (its
settings plus the overrides of an arm), a first pass (``pass1``) and, minutes later, a second
(``drift``). For every arm and size this reports how the two passes of the same networks
agree — the share within +-10% and +-5% of each other, Kendall tau, the SD of the log ratio
and the median ratio (the two passes share one nominal, so the scale is not divided out) —
what a noise-free predictor could reach against one timing of that arm
(``bench/predictor.py``'s ``timing_ceiling``), and the seconds each network took. With
``--split K`` it reports the first ``K`` networks and the rest apart as well (e.g. the
networks another bench chose a setting on, and those it never saw).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predictor import timing_ceiling  # noqa: E402

from mnas.latency.fit import kendall_tau  # noqa: E402


def agreement(first: list[float], second: list[float]) -> dict:
    """How two timings of the same networks agree, on their common scale."""
    r = np.divide(second, first)
    rel = np.abs(r - 1)
    return {
        "n": len(r),
        "within_10": float(np.mean(rel <= 0.10)),
        "within_5": float(np.mean(rel <= 0.05)),
        "kendall_tau": kendall_tau(first, second),
        "sd_log_ratio": float(np.std(np.log(r))),
        "median_ratio": float(np.median(r)),
    }


def seconds_per_network(records: list[dict]) -> float:
    """Median gap between consecutive networks' time stamps (export and timing)."""
    t = [r["t"] for r in records]
    return float(np.median(np.diff(t))) if len(t) > 1 else float("nan")


def arm_rows(path: Path, split: int | None) -> dict:
    """The rows of one arm and size from ``heldout_<size>.json``."""
    passes = json.loads(path.read_text())["passes"]
    first, later = passes.get("pass1", []), passes.get("drift", [])
    m = min(len(first), len(later))
    if m < 3:
        raise ValueError(f"{path}: {m} networks in both passes; run --stage heldout and drift")
    keys_a = [r["key"] for r in first[:m]]
    keys_b = [r["key"] for r in later[:m]]
    if keys_a != keys_b:
        raise ValueError(f"{path}: the two passes timed different networks")
    a = [r["median_ms"] for r in first[:m]]
    b = [r["median_ms"] for r in later[:m]]
    parts = {"all": slice(0, m)}
    if split is not None and 3 <= split <= m - 3:
        parts[f"first_{split}"] = slice(0, split)
        parts[f"after_{split}"] = slice(split, m)
    rows = {}
    for name, s in parts.items():
        rows[name] = {
            "passes": agreement(a[s], b[s]),
            "ceiling": timing_ceiling(a[s], b[s]),
        }
    hours = (np.median([r["t"] for r in later[:m]]) - np.median([r["t"] for r in first[:m]])) / 3600
    return {
        **rows,
        "minutes_between_passes": float(hours * 60),
        "seconds_per_network": seconds_per_network(first[:m]),
        "median_runs": float(np.median([r["runs"] for r in first[:m]])),
        "median_drift_factor_sd": float(np.std([r["drift_factor"] for r in first[:m]])),
    }


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", required=True, help="NAME=DIR, bench/predictor.py's --out")
    p.add_argument("--sizes", nargs="+", default=["16", "32"])
    p.add_argument("--split", type=int, help="also report the first K networks and the rest")
    p.add_argument("--out", help="write the rows here as JSON")
    args = p.parse_args(argv)
    arms = {}
    for item in args.arms:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            p.error(f"--arms {item!r}: NAME=DIR")
        arms[name] = Path(folder)
    result = {
        size: {
            name: arm_rows(folder / f"heldout_{size}.json", args.split)
            for name, folder in arms.items()
        }
        for size in args.sizes
    }
    print(
        "| size | arm | networks | two passes: +-10% / +-5% / tau / SD log ratio / median ratio "
        "| ceiling: +-10% / +-5% / tau | s per network | runs |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, by_arm in result.items():
        for name, rows in by_arm.items():
            for part in (k for k in rows if k in ("all",) or k.startswith(("first_", "after_"))):
                a, c = rows[part]["passes"], rows[part]["ceiling"]
                print(
                    f"| {size} | {name} | {part} ({a['n']}) | {pct(a['within_10'])} / "
                    f"{pct(a['within_5'])} / {a['kendall_tau']:.3f} / {a['sd_log_ratio']:.3f} / "
                    f"{a['median_ratio']:.3f} | {pct(c['within_10'])} / {pct(c['within_5'])} / "
                    f"{c['kendall_tau']:.3f} | {rows['seconds_per_network']:.2f} | "
                    f"{rows['median_runs']:.0f} |"
                )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
