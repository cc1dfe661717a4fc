"""Would averaging supernets rank the truth? What several supernets share, and how that
relates to the stand-alone truth (issue 13).

    python bench/supernet_ensemble.py --out docs/results/supernet_ensemble.json \
        --group "2 epochs" docs/results/supernet_variants/e2_seed{0,1,2}.json \
        --group "sandwich" docs/results/supernet_variants/sandwich_seed{0,1}.json

Each file is a ``bench/supernet.py`` result: its ``scores`` hold every architecture's
supernet score and its stand-alone truth (``standalone``, the mean over the truth's seeds).
For each group of supernets (e.g. one recipe, several training seeds), on the architectures
every file scored, it reports each supernet's Kendall tau against the truth, the tau of every
pair of supernets, the tau of their mean (standardised) score, and an estimate of what the
mean of *infinitely many* such supernets would reach.

The estimate: each supernet's score is a part every supernet of the group shares plus a part
of its own draw, independent between draws. Two supernets then correlate at ``rho`` (the
shared part's share of the variance) and one supernet with the truth at ``r``; the shared
part alone — the limit of the average — correlates with the truth at ``r / sqrt(rho)``.
Correlations come from Kendall taus through the normal model (``r = sin(pi tau / 2)``, and
back), as ``bench/supernet.py``'s ceiling estimate does. No supernet is trained here.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from mnas.latency.fit import pearson_from_tau, tau_from_pearson

COLUMNS = {"accuracy": "supernet_recalibrate", "-loss": "supernet_recalibrate_loss"}


def ensemble_row(scores: list[np.ndarray], truth: np.ndarray) -> dict:
    """Taus of ``scores`` (one array per supernet, the same architectures in the same order,
    higher is better) against ``truth`` and against each other, of their mean standardised
    score, and the estimate for infinitely many (``None`` when the supernets do not agree
    at all: nothing is shared to average towards)."""
    if len(scores) < 2:
        raise ValueError(f"an ensemble needs at least 2 supernets; got {len(scores)}")
    vs_truth = [float(kendalltau(s, truth).statistic) for s in scores]
    pairs = [float(kendalltau(a, b).statistic) for a, b in itertools.combinations(scores, 2)]
    z = np.mean([(s - s.mean()) / s.std() for s in scores], axis=0)
    rho = float(np.mean([pearson_from_tau(t) for t in pairs]))
    r = float(np.mean([pearson_from_tau(t) for t in vs_truth]))
    return {
        "n_archs": len(truth),
        "supernets": len(scores),
        "tau_vs_truth": vs_truth,
        "tau_between_supernets": pairs,
        "tau_of_mean_score": float(kendalltau(z, truth).statistic),
        "tau_of_infinitely_many_estimate": tau_from_pearson(r / np.sqrt(rho)) if rho > 0 else None,
    }


def group_rows(files: list[Path]) -> dict:
    results = [json.loads(Path(f).read_text())["scores"] for f in files]
    rows = {}
    for name, column in COLUMNS.items():
        scored = [{a for a, v in r.items() if column in v} for r in results]
        common = sorted(set.intersection(*scored))
        if len(common) < 10:
            continue
        sign = -1.0 if name == "-loss" else 1.0
        scores = [sign * np.array([r[a][column] for a in common]) for r in results]
        truth = np.array([results[0][a]["standalone"] for a in common])
        rows[name] = ensemble_row(scores, truth)
    return {"files": [str(f) for f in files], **rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "FILE"),
        help="a name and two or more bench/supernet.py result files",
    )
    p.add_argument("--out", help="write the rows here (JSON)")
    args = p.parse_args(argv)
    out = {}
    for name, *files in args.group:
        if len(files) < 2:
            p.error(f"--group {name!r}: needs at least 2 result files, got {len(files)}")
        out[name] = group_rows([Path(f) for f in files])
    print(
        f"{'group':<34} {'score':<8} {'n':>4} {'k':>3} {'tau vs truth (each)':<28} "
        f"{'between':>8} {'mean':>7} {'infinite':>9}"
    )
    for name, g in out.items():
        for col in COLUMNS:
            if col not in g:
                continue
            r = g[col]
            each = " ".join(f"{t:+.3f}" for t in r["tau_vs_truth"][:4])
            each += " ..." if r["supernets"] > 4 else ""
            inf = r["tau_of_infinitely_many_estimate"]
            print(
                f"{name:<34} {col:<8} {r['n_archs']:>4} {r['supernets']:>3} {each:<28} "
                f"{np.mean(r['tau_between_supernets']):>+8.3f} {r['tau_of_mean_score']:>+7.3f} "
                f"{'-' if inf is None else f'{inf:+.3f}':>9}"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
