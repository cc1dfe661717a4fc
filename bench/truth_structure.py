"""What the stand-alone truth rewards, decision by decision, and how a supernet's scores
differ (issue 13).

    python bench/truth_structure.py --scores docs/results/supernet_fashion_mnist_mbconv.json \
        --out docs/results/truth_structure.json

Reads a stand-alone truth (``bench/standalone_truth.py``'s rows; the mean over the seeds
every architecture was trained with, as ``bench/supernet.py`` ranks against) and, optionally,
the per-architecture score columns of a ``bench/supernet.py`` result. It reports

- for every decision of every block and for each decision summed over the blocks, the
  Kendall tau of the token against the truth and against every score column: which choices
  the truth rewards, and whether the supernet rewards the same;
- a *token surrogate*: ridge regression on one-hot tokens fitted to ``n`` trained
  architectures (their seed-0 accuracy, what a search would have, or the mean of seeds) and
  ranked against the truth on the rest, ``--repeats`` random splits per ``n``. It tells
  whether the truth has structure a cheap score could find, and what a predictor fitted to
  that many trained children ranks at (a baseline for any accuracy source).

Writes ``--out`` (JSON) and prints the same as tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sstats
from sklearn.linear_model import Ridge

from mnas.space import make_space

HERE = Path(__file__).resolve().parent
RIDGE_ALPHA = 10.0
"""Ridge penalty of the token surrogate, fixed: 10-fold cross-validation on the Fashion-MNIST
truth gave tau 0.41-0.43 for every penalty from 1 to 100 (2026-11-27), so it is not tuned."""


def _supernet_bench():
    spec = importlib.util.spec_from_file_location("bench_supernet", HERE / "supernet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tau(x, y) -> float:
    value = sstats.kendalltau(x, y)[0]
    return 0.0 if np.isnan(value) else float(value)


def one_hot(tokens: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Tokens (one row per architecture) as one-hot columns, one group per decision."""
    return np.concatenate([np.eye(k)[tokens[:, j]] for j, k in enumerate(sizes)], axis=1)


def decision_taus(
    space, tokens: np.ndarray, target: np.ndarray, columns: dict[str, np.ndarray]
) -> dict:
    """Kendall tau of each decision's token (per block, and summed over blocks) against
    ``target`` and every score column; decisions with one choice are left out."""
    names = space.DECISION_NAMES
    k = len(names)
    per_block, summed = [], {}
    for j, d in enumerate(space.decisions):
        if len(d.choices) < 2:
            continue
        x = tokens[:, j]
        per_block.append(
            {
                "block": d.block,
                "decision": d.name,
                "choices": list(d.choices),
                "truth": tau(x, target),
                **{c: tau(x, v) for c, v in columns.items()},
            }
        )
    for i, name in enumerate(names):
        if len(space.decisions[i].choices) < 2:
            continue
        x = tokens[:, i::k].sum(axis=1)
        summed[name] = {"truth": tau(x, target), **{c: tau(x, v) for c, v in columns.items()}}
    return {"per_block": per_block, "summed_over_blocks": summed}


def surrogate(
    x: np.ndarray,
    labels: dict[str, np.ndarray],
    target: np.ndarray,
    sizes: list[int],
    repeats: int,
    seed: int = 0,
) -> dict:
    """Ridge on one-hot tokens fitted to ``n`` architectures' ``labels[name]`` for every
    ``n`` in ``sizes``, ranked against ``target`` on the others: mean and s.d. of tau over
    ``repeats`` random splits (the same splits for every label)."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    for n in sizes:
        if not 2 <= n <= len(target) - 2:
            raise ValueError(f"surrogate size {n} needs 2 <= n <= {len(target) - 2}")
        splits = [rng.permutation(len(target)) for _ in range(repeats)]
        row = {}
        for name, y in labels.items():
            taus = []
            for p in splits:
                fit, test = p[:n], p[n:]
                model = Ridge(alpha=RIDGE_ALPHA).fit(x[fit], y[fit])
                taus.append(tau(model.predict(x[test]), target[test]))
            row[name] = {"tau": statistics.fmean(taus), "sd": statistics.pstdev(taus)}
        out[str(n)] = row
    return out


def analyse(truth_rows: list[dict], space, scores: dict | None, sizes, repeats: int) -> dict:
    sb = _supernet_bench()
    by_seed = sb.rows_by_seed(truth_rows)
    noise = sb.seed_noise(by_seed)
    hashes = sorted(noise["mean"])
    first = by_seed[min(by_seed)]
    tokens = np.array([first[h]["tokens"] for h in hashes])
    target = np.array([noise["mean"][h] for h in hashes])
    columns: dict[str, np.ndarray] = {}
    for size in ("macs", "params"):  # the trained rows' own counts, where they hold them
        if all(_numeric(first[h].get(size)) for h in hashes):
            columns[size] = np.array([first[h][size] for h in hashes], dtype=np.float64)
    if scores:
        names = sorted({k for s in scores.values() for k, v in s.items() if _numeric(v)})
        for name in names:
            if name.startswith("standalone") or not all(
                _numeric(scores.get(h, {}).get(name)) for h in hashes
            ):
                continue
            columns[name] = np.array([scores[h][name] for h in hashes], dtype=np.float64)
    x = one_hot(tokens, [len(d.choices) for d in space.decisions])
    labels = {
        f"seed {min(by_seed)}": np.array([first[h]["val_accuracy"] for h in hashes]),
        f"mean of seeds {noise['truth_seeds']}": target,
    }
    return {
        "n_archs": len(hashes),
        "truth_seeds": noise["truth_seeds"],
        "noise_ceiling_tau": noise["noise_ceiling_tau"],
        "ceiling_vs_truth_estimate": noise["ceiling_vs_truth_estimate"],
        "score_columns": list(columns),
        "decisions": decision_taus(space, tokens, target, columns),
        "token_surrogate": {
            "ridge_alpha": RIDGE_ALPHA,
            "repeats": repeats,
            "by_training_size": surrogate(x, labels, target, list(sizes), repeats),
        },
    }


def _numeric(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def print_tables(result: dict) -> None:
    cols = result["score_columns"]
    print(
        f"{result['n_archs']} architectures; truth: mean of seeds {result['truth_seeds']} "
        f"(seed-to-seed tau {result['noise_ceiling_tau']:.3f}, reachable about "
        f"{result['ceiling_vs_truth_estimate']:.2f})"
    )
    print(
        "\nKendall tau of a decision's token summed over the blocks (higher token = later choice)"
    )
    print(f"| decision | truth | {' | '.join(cols)} |")
    print("|---|---|" + "---|" * len(cols))
    for name, row in result["decisions"]["summed_over_blocks"].items():
        print(
            f"| {name} | {row['truth']:+.3f} | " + " | ".join(f"{row[c]:+.3f}" for c in cols) + " |"
        )
    print("\nToken surrogate (ridge on one-hot tokens), tau against the truth on the rest")
    rows = result["token_surrogate"]["by_training_size"]
    labels = list(next(iter(rows.values())))
    print(f"| trained architectures | {' | '.join('fitted to ' + lab for lab in labels)} |")
    print("|---|" + "---|" * len(labels))
    for n, row in rows.items():
        print(
            f"| {n} | "
            + " | ".join(f"{row[lab]['tau']:.3f} ± {row[lab]['sd']:.3f}" for lab in labels)
            + " |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--truth", type=Path, default=HERE / "data" / "standalone_fashion_mnist_mbconv.json"
    )
    p.add_argument("--scores", type=Path, help="a bench/supernet.py result (its score columns)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40, 60, 90])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: must be >= 1")
    data = json.loads(args.truth.read_text())
    space = make_space(data["meta"].get("space", "mnas"))
    scores = json.loads(args.scores.read_text())["scores"] if args.scores else None
    try:
        result = analyse(data["rows"], space, scores, args.sizes, args.repeats)
    except ValueError as e:
        p.error(str(e))
    result["truth"] = str(args.truth)
    result["scores"] = None if args.scores is None else str(args.scores)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_tables(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
