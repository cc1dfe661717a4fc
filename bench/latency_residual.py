"""What the drift correction leaves: the held-out networks' timing passes side by side
(issue 19).

    python bench/latency_residual.py bench/out/pred/heldout_16.json bench/out/pred/heldout_32.json

Reads ``bench/predictor.py``'s ``heldout_<size>.json`` files. For every two passes of the
same networks it reports how their drift-corrected medians differ (``e``: the log ratio,
centred on its median), and how that residual relates to the correction:

- ``slope``: the uncorrected log ratio regressed on the log ratio of the drift factors. The
  correction assumes -1: a candidate slows down exactly as much as the reference;
- ``corr_with_factor``: the residual's correlation with the factors' log ratio (0 when the
  correction fits);
- ``lag1``: the residual's correlation between networks timed one after the other (0 when
  what is left is each timing's own, not a moment the networks share);
- the agreement of the two passes (share within +-10% / +-5%, SD of ``e``) had the
  correction been ``raw * factor ** g`` for a few exponents ``g`` (1 is the evaluator's).

No timing is made here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

EXPONENTS = (0.9, 1.0, 1.05, 1.1, 1.15, 1.2)


def agreement(a: list[dict], b: list[dict], g: float = 1.0) -> dict:
    """Two timings of the same networks (records with ``raw_median_ms`` and
    ``drift_factor``), each corrected as ``raw * factor ** g``."""
    x = np.array([r["raw_median_ms"] * r["drift_factor"] ** g for r in a])
    y = np.array([r["raw_median_ms"] * r["drift_factor"] ** g for r in b])
    rel = np.abs(x / y - 1)
    e = np.log(x / y)
    return {
        "exponent": g,
        "within_10": float(np.mean(rel <= 0.10)),
        "within_5": float(np.mean(rel <= 0.05)),
        "sd_log_ratio": float(np.std(e - np.median(e))),
    }


def residual_row(a: list[dict], b: list[dict]) -> dict:
    """How two passes' corrected timings differ, against their drift factors (see the
    module's docstring); ``a`` in the order its networks were timed."""
    m = min(len(a), len(b))
    if m < 3:
        raise ValueError(f"need at least 3 networks timed in both passes; got {m}")
    a, b = a[:m], b[:m]
    raw = np.log([x["raw_median_ms"] / y["raw_median_ms"] for x, y in zip(a, b, strict=True)])
    factor = np.log([x["drift_factor"] / y["drift_factor"] for x, y in zip(a, b, strict=True)])
    e = raw + factor
    e = e - np.median(e)
    return {
        "n": m,
        "slope": float(np.polyfit(factor, raw, 1)[0]),
        "corr_with_factor": float(np.corrcoef(e, factor)[0, 1]),
        "lag1": float(np.corrcoef(e[:-1], e[1:])[0, 1]),
        "by_exponent": [agreement(a, b, g) for g in EXPONENTS],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="bench/predictor.py heldout_<size>.json files")
    p.add_argument("--out", help="write the rows here (JSON)")
    args = p.parse_args(argv)
    out: dict = {}
    for f in args.files:
        passes = {k: v for k, v in json.loads(Path(f).read_text())["passes"].items() if v}
        names = list(passes)
        rows = {}
        for i, x in enumerate(names):
            for y in names[i + 1 :]:
                rows[f"{x}-{y}"] = residual_row(passes[x], passes[y])
        out[f] = rows
        for pair, r in rows.items():
            best = max(r["by_exponent"], key=lambda k: k["within_10"])
            one = next(k for k in r["by_exponent"] if k["exponent"] == 1.0)
            print(
                f"{Path(f).name} {pair} (n={r['n']}): slope {r['slope']:+.2f}, residual vs "
                f"factor {r['corr_with_factor']:+.2f}, lag-1 {r['lag1']:+.2f}; within +-10% "
                f"{100 * one['within_10']:.1f}% (SD {one['sd_log_ratio']:.4f}) as corrected, "
                f"best {100 * best['within_10']:.1f}% at exponent {best['exponent']}"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
