"""How a latency predictor's cross-validated error falls with the number of networks it is
fitted to, and what the forest's settings change (issue 19,
docs/results/latency-notebook.md "600 networks").

    python bench/predictor_curve.py DIR/predictor_16.json --networks 50 100 150 200
    python bench/predictor_curve.py DIR/predictor_32.json --trees 150:3:0.05 300:4:0.05

Only the predictor's own training networks are used (their saved timings; no timing here):
for each ``--networks`` count, ``--draws`` random subsets of that many networks are
cross-validated (``fit.cross_validate``, 5 folds) for each model kind (``blocks`` where the
build profiled its networks), and the mean of the draws is printed; with ``--trees``, the
forest kinds are cross-validated on all the networks once per setting (``n_estimators:
max_depth:learning_rate``). Writes ``--out`` (JSON) if given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor import agreement_text, training_data  # noqa: E402

from mnas.latency import Predictor  # noqa: E402
from mnas.latency import fit as latency_fit  # noqa: E402
from mnas.latency.fit import BLOCK_KINDS, MODEL_KINDS, cross_validate  # noqa: E402

FOREST_KINDS = ("linear+trees", "trees")


def curve(x, y, blocks, counts, draws: int, seed: int = 1) -> list[dict]:
    """Mean cross-validated scores per (count, kind) over ``draws`` random subsets (one
    subset, all networks, where the count is the whole set)."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in MODEL_KINDS if blocks[1] is not None or k not in BLOCK_KINDS]
    rows = []
    for n in counts:
        if not 10 <= n <= len(y):
            raise ValueError(f"--networks {n}: allowed 10 .. {len(y)} (the training networks)")
        subsets = [rng.permutation(len(y))[:n] for _ in range(1 if n == len(y) else draws)]
        for kind in kinds:
            got = []
            for idx in subsets:
                part = (blocks[0][idx], None if blocks[1] is None else blocks[1][idx])
                got.append(cross_validate(kind, x[idx], y[idx], blocks=part))
            rows.append(
                {
                    "networks": n,
                    "kind": kind,
                    "draws": len(subsets),
                    **{k: float(np.mean([g[k] for g in got])) for k in got[0] if k != "n"},
                }
            )
    return rows


def forest_settings(x, y, settings: list[str]) -> list[dict]:
    """Cross-validated scores of the forest kinds with each ``n:depth:lr`` setting."""
    base = dict(latency_fit.TREES)
    rows = []
    try:
        for s in settings:
            n, depth, lr = s.split(":")
            latency_fit.TREES.update(
                n_estimators=int(n), max_depth=int(depth), learning_rate=float(lr)
            )
            rows.append({"setting": s, **{k: cross_validate(k, x, y) for k in FOREST_KINDS}})
    finally:
        latency_fit.TREES.clear()
        latency_fit.TREES.update(base)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("predictor", help="a file from scripts/latency_table.py --predictor")
    p.add_argument("--networks", type=int, nargs="*", default=[50, 100, 150, 200])
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--trees", nargs="*", default=[], metavar="N:DEPTH:LR")
    p.add_argument("--out", help="JSON file for the figures")
    args = p.parse_args(argv)
    x, y, blocks = training_data(Predictor.load(args.predictor))
    result = {"predictor": args.predictor, "training_networks": len(y)}
    result["curve"] = curve(x, y, blocks, args.networks, args.draws)
    for r in result["curve"]:
        head = f"{r['networks']:>5} networks {r['kind']:>12} ({r['draws']} draws)"
        print(f"{head}: {agreement_text(r)}")
    result["forest_settings"] = forest_settings(x, y, args.trees)
    for r in result["forest_settings"]:
        kinds = "; ".join(f"{k} {agreement_text(r[k])}" for k in FOREST_KINDS)
        print(f"trees {r['setting']:>12}: {kinds}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
