"""Query time of latency predictors (issue 19), every model kind on the same networks.

    taskset -c 1 python bench/predictor_query.py pred16.json pred32.json --out q.json

For each predictor file (as ``scripts/latency_table.py --predictor`` writes it) the model it
chose is timed, and so is each other kind of :data:`mnas.latency.fit.MODEL_KINDS` fitted
afresh to the file's own training networks (so a predictor that chose ``linear`` still
shows what ``linear+trees`` would cost). Each is timed by ``bench/predictor.py``'s
``query_us`` over ``--n`` held-out architectures: the mean over all passes, the fastest
block of passes, and one numpy addition as a gauge of how busy the core was. Pin it to a
core nothing else uses. Prints a table and writes ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from mnas.latency import Predictor
from mnas.latency.fit import BLOCK_KINDS, MODEL_KINDS, fit_model
from mnas.space import MnasSpace

HERE = Path(__file__).resolve().parent


def _bench_predictor():
    spec = importlib.util.spec_from_file_location("bench_predictor", HERE / "predictor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def with_model(predictor: Predictor, kind: str) -> Predictor:
    """``predictor`` with its model replaced by a ``kind`` model fitted to the same
    training networks (the file's own model when it is of that kind)."""
    if predictor.model.kind == kind:
        return predictor
    space = MnasSpace()
    training = predictor.data["training"]
    archs = [space.architecture(t) for t in training["tokens"]]
    x = np.array([predictor.features(a) for a in archs])
    blocks = None
    if training.get("block_ms"):
        vectors = np.array([predictor.features.block_vectors(a) for a in archs])
        blocks = (vectors, np.asarray(training["block_ms"], dtype=np.float64))
    y = np.asarray(training["measured_ms"], dtype=np.float64)
    model = fit_model(kind, x, y, blocks)
    return Predictor({**predictor.data, "model": model.to_dict()}, predictor.path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("predictors", nargs="+", help="predictor JSON files")
    ap.add_argument("--n", type=int, default=200, help="held-out architectures")
    ap.add_argument("--out", help="write the figures here (JSON)")
    args = ap.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"--n={args.n}: must be at least 1")
    bench = _bench_predictor()
    rows = []
    for path in args.predictors:
        base = Predictor.load(path)
        size = str(base.setup["input_shape"][2])
        archs = bench.heldout_archs(size, args.n)
        for kind in MODEL_KINDS:
            if kind in BLOCK_KINDS and not base.data["training"].get("block_ms"):
                continue  # a predictor built without profiles
            q = bench.query_us(with_model(base, kind), archs)
            rows.append(
                {
                    "predictor": path,
                    "size": size,
                    "kind": kind,
                    "chosen": kind == base.model.kind,
                    **q,
                }
            )
    print(
        f"{'predictor':>28} {'size':>4} {'model':>12} {'mean us':>8} {'best us':>8} "
        f"{'first us':>8} {'add us':>6}"
    )
    for r in rows:
        mark = "*" if r["chosen"] else " "
        print(
            f"{Path(r['predictor']).name[-28:]:>28} {r['size']:>4} {r['kind']:>11}{mark} "
            f"{r['repeated']:>8.1f} {r['repeated_best_block']:>8.1f} {r['first_pass']:>8.1f} "
            f"{r['numpy_add_us']:>6.2f}"
        )
    print("(* the model the file chose; the others fitted to its training networks)")
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:], "rows": rows}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
