"""Re-time a latency predictor's own training networks, and ask what its timings are worth
(issue 19, docs/results/latency-notebook.md "An hour later").

    taskset -c 0 python bench/predictor_retime.py --predictor DIR/predictor_224.json \\
        --size 224 --time t2 t3 t4 --out DIR/retime_224.json

times the predictor's training networks again with the search's evaluator, one pass per
label (``bench/predictor.py``'s ``time_pass``: saved after every 20 networks, resumable),
then prints

- how each two sets of timings agree (``t1`` is the build's own: ±10% / ±5% / τ / MAPE);
- what a predictor fitted to one set (or to the geometric mean of several) predicts for
  the last set, cross-validated (5 folds: a network is never in the fit that predicts it),
  for ``linear`` and, when the build profiled its networks, ``blocks``.

``--time`` with no labels only analyses what ``--out`` holds. Writes the analysis into
``--out`` beside the timings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor import SIZES, compose_setup, time_pass, training_data  # noqa: E402

from mnas.latency import Predictor  # noqa: E402
from mnas.latency.fit import cross_validate, scores  # noqa: E402
from mnas.space import MnasSpace  # noqa: E402


def geometric(*sets: np.ndarray) -> np.ndarray:
    return np.exp(np.mean([np.log(s) for s in sets], axis=0))


def analyse(x: np.ndarray, timings: dict[str, np.ndarray], blocks: tuple | None = None) -> dict:
    """Agreement of every two sets of ``timings`` (in the order given) and, for each set
    before the last, each two of them and all of them, the scores against the last set of
    a model fitted to that set of the other folds' networks (5-fold
    :func:`mnas.latency.fit.cross_validate`; ``blocks``: block features and profiled block
    times, for the ``blocks`` model)."""
    labels = list(timings)
    agreement = {
        f"{a}-{b}": scores(timings[a], timings[b]) for a, b in itertools.combinations(labels, 2)
    }
    *train_labels, test = labels
    trains = {a: timings[a] for a in train_labels}
    if len(train_labels) > 1:
        for pair in itertools.combinations(train_labels, 2):
            trains[f"geo({','.join(pair)})"] = geometric(*(timings[a] for a in pair))
    if len(train_labels) > 2:
        trains[f"geo({','.join(train_labels)})"] = geometric(*trains.values())
    kinds = ["linear"] + (["blocks"] if blocks is not None and blocks[1] is not None else [])
    trained = {
        k: {
            name: cross_validate(k, x, y, blocks=blocks, against=timings[test])
            for name, y in trains.items()
        }
        for k in kinds
    }
    return {"test": test, "agreement": agreement, "trained_on": trained}


def _text(s: dict) -> str:
    return (
        f"{100 * s['within_10']:.1f}% / {100 * s['within_5']:.1f}% / "
        f"{s['kendall_tau']:.3f} / {s['mape']:.1f}%"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predictor", required=True, help="a predictor file (its training networks)")
    p.add_argument("--size", required=True, choices=list(SIZES))
    p.add_argument("--time", nargs="*", default=[], metavar="LABEL", help="passes to time now")
    p.add_argument("--out", required=True, help="JSON of the timings and the analysis")
    args = p.parse_args(argv)
    data = json.loads(Path(args.predictor).read_text())
    space = MnasSpace()
    archs = [space.architecture(t) for t in data["training"]["tokens"]]
    out = Path(args.out)
    if args.time:
        _, settings, setup = compose_setup(SIZES[args.size])
        for label in args.time:
            time_pass(out, label, archs, settings, setup)
    stored = json.loads(out.read_text()) if out.exists() else {}
    timings = {"t1": np.asarray(data["training"]["measured_ms"], dtype=np.float64)}
    for label, records in stored.get("passes", {}).items():
        if [r["key"] for r in records] != [a.key for a in archs]:
            print(f"pass {label} is incomplete or of other networks; left out", file=sys.stderr)
            continue
        timings[label] = np.array([r["median_ms"] for r in records])
    if len(timings) < 2:
        print("error: nothing to compare: time a pass first (--time LABEL)", file=sys.stderr)
        return 2
    x, _, blocks = training_data(Predictor(data))
    result = analyse(x, timings, blocks)
    stored["analysis"] = result
    out.write_text(json.dumps(stored))
    print("agreement (±10% / ±5% / tau / MAPE):")
    for pair, s in result["agreement"].items():
        print(f"  {pair}: {_text(s)}")
    for kind, rows in result["trained_on"].items():
        print(f"{kind}, cross-validated against {result['test']}:")
        for name, s in rows.items():
            print(f"  trained on {name}: {_text(s)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
