"""Search-strategy benchmark on the NAS-Bench-201 table (issue 8).

PPO, REINFORCE, random search and regularized evolution search the NAS-Bench-201 cell
space with the MnasNet reward, looking accuracy and latency up in the table instead of
training and timing children.

Protocol (NAS-Bench-201 paper, section 5): the search sees only the 12-epoch CIFAR-10
*validation* accuracy (``cifar10_valid_acc_12ep``) and the device latency; what it found is
reported with the 200-epoch *test* accuracy (``cifar10_test_acc_200ep``), which it never saw.

A *sample* is one architecture proposed by the strategy and evaluated. A repeated
architecture counts again: the search loop answers it from its cache, but the strategy has
spent one of its proposals on it (counting only unique architectures would let a collapsed
controller search forever for free). The number of unique architectures is reported too.

Metrics at each budget b (the first b samples of one run; every strategy's trajectory does
not depend on the total budget, so one run of the largest budget serves all of them):

- ``hv``: hypervolume of the evaluated architectures' (latency, 200-epoch test accuracy)
  points over that of the true front of all 15,625 cells, reference point at the median
  latency and median test accuracy of the connected cells (REFERENCES.md calibration).
- ``hv_sel``: the same for only the front that the search itself can see (non-dominated in
  latency and 12-epoch validation accuracy), i.e. what a user would be handed.
- ``best<=T``: 200-epoch test accuracy of the architecture with the best 12-epoch validation
  accuracy among those with LAT <= T; ``regret`` = best such test accuracy in the whole table
  minus it (accuracy points).
- single objective (w = 0): 200-epoch test accuracy of the sample with the best 12-epoch
  validation accuracy.

Usage::

    python bench/strategies.py                       # full default run (MNAS_DATA must be set)
    python bench/strategies.py --seeds 5 --budgets 50 200 --strategies ppo random
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from mnas.evaluate.tabular import NB201Table
from mnas.search.pareto import (
    best_under,
    hypervolume_of_rows,
    median_reference,
    pareto_indices,
    true_front,
)
from mnas.search.ppo import PPOConfig
from mnas.search.reward import PRESETS, mnas_reward
from mnas.search.strategies import STRATEGIES, make_strategy
from mnas.space import NB201Space

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = ("soft", "hard", "single")
PUBLISHED = {  # NAS-Bench-201 paper, CIFAR-10 test accuracy of the found architecture
    "reinforce": "93.85 +- 0.37",
    "random": "93.70 +- 0.36",
    "evolution": "93.92 +- 0.30",
    "ppo": "-",
}
OPTIMUM = 94.37


@dataclass(frozen=True)
class ControllerSettings:
    """Controller and update settings shared by the ``ppo`` and ``reinforce`` runs."""

    lr: float
    batch: int
    epochs: int
    entropy_coef: float
    baseline_decay: float
    normalize_advantages: bool
    temperature: float
    tanh_constant: float | None
    clip_eps: float


@dataclass(frozen=True)
class Problem:
    """Everything a worker needs, as numpy arrays (row-indexed like the table)."""

    search_acc: np.ndarray  # 12-epoch validation accuracy, 0-1
    report_acc: np.ndarray  # 200-epoch test accuracy, 0-1
    latency: np.ndarray  # ms on the chosen device
    row_of: dict[str, int]
    target_ms: float


_PROBLEM: Problem | None = None


def run_search(
    strategy: str, objective: str, seed: int, budget: int, ctl: ControllerSettings
) -> list[int]:
    """Rows of the table the strategy evaluated, in order (length ``budget``)."""
    torch.set_num_threads(1)
    prob = _PROBLEM
    space = NB201Space()
    if strategy in ("ppo", "reinforce"):
        kwargs = dict(
            lr=ctl.lr,
            ppo=PPOConfig(
                clip_eps=ctl.clip_eps,
                epochs=ctl.epochs,
                entropy_coef=ctl.entropy_coef,
                baseline_decay=ctl.baseline_decay,
                normalize_advantages=ctl.normalize_advantages,
            ),
            temperature=ctl.temperature,
            tanh_constant=ctl.tanh_constant,
        )
        batch = ctl.batch
    elif strategy == "evolution":
        kwargs, batch = dict(population=10, sample_size=3), 1
    else:
        kwargs, batch = {}, budget
    strat = make_strategy(strategy, space, seed=seed, **kwargs)
    alpha, beta = PRESETS[objective] if objective != "single" else (0.0, 0.0)
    rows: list[int] = []
    while len(rows) < budget:
        archs = strat.ask(min(batch, budget - len(rows)))
        got = [prob.row_of[a.key] for a in archs]
        rewards = [
            mnas_reward(
                float(prob.search_acc[r]), float(prob.latency[r]), prob.target_ms, alpha, beta
            )
            for r in got
        ]
        strat.tell(archs, rewards)
        rows.extend(got)
    return rows


def _job(args: tuple) -> tuple:
    strategy, objective, seed, budget, ctl = args
    start = time.perf_counter()
    rows = run_search(strategy, objective, seed, budget, ctl)
    return strategy, objective, seed, rows, time.perf_counter() - start


def metrics_at(rows: list[int], prob: Problem, ref: tuple[float, float], true_hv: float) -> dict:
    """All metrics of one prefix of a run."""
    lat, val, test = prob.latency, prob.search_acc, prob.report_acc
    uniq = sorted(set(rows))
    seen = pareto_indices([(float(lat[r]), float(val[r])) for r in uniq])
    under = [r for r in uniq if lat[r] <= prob.target_ms]
    pick_t = max(under, key=lambda r: (val[r], -r)) if under else None
    pick = max(uniq, key=lambda r: (val[r], -r))
    return {
        "hv": hypervolume_of_rows(uniq, lat, test, *ref) / true_hv,
        "hv_sel": hypervolume_of_rows([uniq[i] for i in seen], lat, test, *ref) / true_hv,
        "best_t": 100 * float(test[pick_t]) if pick_t is not None else math.nan,
        "best_t_oracle": 100 * max((float(test[r]) for r in under), default=math.nan),
        "best_acc": 100 * float(test[pick]),
        "unique": len(uniq),
    }


def mean_std(xs) -> str:
    xs = np.asarray(xs, dtype=float)
    return f"{np.nanmean(xs):.2f} +- {np.nanstd(xs, ddof=1):.2f}"


def permutation_test(a, b, n_perm: int = 100_000, seed: int = 0) -> float:
    """One-sided p-value of mean(a) > mean(b) under random relabelling (with the +1 rule)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(pooled, (n_perm, 1)), axis=1)
    diffs = perms[:, : len(a)].mean(1) - perms[:, len(a) :].mean(1)
    return float((1 + np.sum(diffs >= observed - 1e-12)) / (n_perm + 1))


def mann_whitney_p(a, b) -> tuple[float, float]:
    """Mann-Whitney U of a and one-sided p (a > b), normal approximation with tie and
    continuity correction."""
    res = scipy.stats.mannwhitneyu(
        a, b, alternative="greater", method="asymptotic", use_continuity=True
    )
    return float(res.statistic), float(res.pvalue)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="runs per strategy and objective")
    p.add_argument(
        "--seed-offset", type=int, default=1000, help="first seed (tuning used seeds 0-9)"
    )
    p.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 500])
    p.add_argument("--device", default="pixel3", help="latency column of the table")
    p.add_argument("--data", default=os.environ.get("MNAS_DATA"), help="default: $MNAS_DATA")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--no-copy", action="store_true", help="do not copy the plot into docs/img")
    g = p.add_argument_group("controller (ppo, reinforce); defaults are the tuned values")
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--batch", type=int, default=20, help="architectures per controller update")
    g.add_argument("--epochs", type=int, default=4, help="PPO passes per batch")
    g.add_argument("--entropy", type=float, default=1e-5, help="entropy bonus coefficient")
    g.add_argument("--baseline-decay", type=float, default=0.7)
    g.add_argument("--no-normalize", action="store_true", help="raw advantages (R - b)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--tanh", type=float, default=None, help="logit cap C*tanh(logits/temp)")
    g.add_argument("--clip", type=float, default=0.2, help="PPO clip epsilon")
    return p.parse_args(argv)


def main(argv=None) -> int:
    global _PROBLEM
    args = parse_args(argv)
    if not args.data:
        print("no data: pass --data or set MNAS_DATA", file=sys.stderr)
        return 2
    csv_path = Path(args.data) / "nasbench201" / "nb201_acc_latency.csv"
    table = NB201Table(csv_path)
    lat = table.latency_column(args.device)
    test = table.accuracy_column("cifar10", "test_acc_200ep")
    val = table.accuracy_column("cifar10", "valid_acc_12ep")
    ref = median_reference(lat, test, table.connected)
    target = ref[0]
    front = true_front(lat, test)
    true_hv = hypervolume_of_rows(front, lat, test, *ref)
    best_t_table = 100 * best_under(lat, test, target)
    _PROBLEM = Problem(val, test, lat, table.row_of, target)
    ctl = ControllerSettings(
        lr=args.lr,
        batch=args.batch,
        epochs=args.epochs,
        entropy_coef=args.entropy,
        baseline_decay=args.baseline_decay,
        normalize_advantages=not args.no_normalize,
        temperature=args.temperature,
        tanh_constant=args.tanh,
        clip_eps=args.clip,
    )
    budgets = sorted(args.budgets)
    max_b = budgets[-1]
    print(f"# NAS-Bench-201 strategy benchmark ({args.device})")
    print(
        f"table {csv_path}: {len(table)} cells, {int((~table.connected).sum())} disconnected; "
        f"T = median latency = {target:.3f} ms; reference point ({ref[0]:.3f} ms, "
        f"{100 * ref[1]:.2f}%); true front {len(front)} cells, HV {true_hv:.5f}; "
        f"best test acc with LAT <= T: {best_t_table:.2f}"
    )
    print(f"controller settings: {asdict(ctl)}")
    jobs = [
        (s, o, seed, max_b, ctl)
        for o in args.objectives
        for s in args.strategies
        for seed in range(args.seed_offset, args.seed_offset + args.seeds)
    ]
    start = time.perf_counter()
    runs: dict[tuple[str, str], list[list[int]]] = {}
    seconds: dict[str, float] = {}
    # Adam's first construction imports torch._dynamo (seconds); pay it once before forking.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.jobs) as pool:
        for s, o, _seed, rows, sec in pool.imap_unordered(_job, jobs, chunksize=1):
            runs.setdefault((s, o), []).append(rows)
            seconds[s] = seconds.get(s, 0.0) + sec
    wall = time.perf_counter() - start
    print(
        f"{len(jobs)} runs of {max_b} samples in {wall:.1f} s wall ({args.jobs} workers); "
        "CPU s per strategy: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
    )

    curve_points = sorted(set(budgets) | set(range(10, max_b + 1, 10)))
    results: dict = {
        "settings": asdict(ctl),
        "device": args.device,
        "target_ms": target,
        "reference": ref,
        "true_hv": true_hv,
        "seeds": args.seeds,
        "metrics": {},
    }
    for (s, o), rs in sorted(runs.items()):
        results["metrics"][f"{s}/{o}"] = {
            str(b): [metrics_at(r[:b], _PROBLEM, ref, true_hv) for r in rs] for b in curve_points
        }

    def col(s, o, b, key):
        return [m[key] for m in results["metrics"][f"{s}/{o}"][str(b)]]

    for o in [o for o in ("soft", "hard") if o in args.objectives]:
        print(f"\n## Multi-objective, {o} reward, T = {target:.2f} ms ({args.device})\n")
        print(
            "Hypervolume fraction of the evaluated set (200-epoch test accuracy), mean +- std "
            f"over {args.seeds} seeds; in brackets the front picked by 12-epoch validation "
            "accuracy; mean unique architectures\n"
        )
        print("| strategy | " + " | ".join(str(b) for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for s in args.strategies:
            cells = [
                f"{mean_std(col(s, o, b, 'hv'))} ({np.mean(col(s, o, b, 'hv_sel')):.2f}; "
                f"{np.mean(col(s, o, b, 'unique')):.0f} uniq)"
                for b in budgets
            ]
            print(f"| {s} | " + " | ".join(cells) + " |")
        print(
            f"\nBest 200-epoch test accuracy with LAT <= T (pick by 12-epoch validation), "
            f"table best {best_t_table:.2f}; regret in brackets\n"
        )
        print("| strategy | " + " | ".join(str(b) for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for s in args.strategies:
            cells = []
            for b in budgets:
                v = col(s, o, b, "best_t")
                cells.append(f"{mean_std(v)} ({mean_std(best_t_table - np.asarray(v))})")
            print(f"| {s} | " + " | ".join(cells) + " |")

    if "random" in args.strategies:
        print("\n## Calibration (REFERENCES.md): random search\n")
        for o in [o for o in ("soft", "hard") if o in args.objectives][:1]:
            print(
                "- hypervolume fraction: "
                + ", ".join(f"{b}: {mean_std(col('random', o, b, 'hv'))}" for b in budgets)
            )
            regret = {
                b: best_t_table - np.asarray(col("random", o, b, "best_t_oracle")) for b in budgets
            }
            print(
                "- regret under T, best test accuracy among all found with LAT <= T: "
                + ", ".join(f"{b}: {mean_std(regret[b])}" for b in budgets)
            )

    tests = {}
    b_test = 200 if 200 in budgets else budgets[len(budgets) // 2]
    if "ppo" in args.strategies and "random" in args.strategies:
        print(f"\n## PPO vs random, hypervolume fraction at {b_test} samples\n")
        for o in [o for o in ("soft", "hard") if o in args.objectives]:
            a, r = col("ppo", o, b_test, "hv"), col("random", o, b_test, "hv")
            p_perm = permutation_test(a, r)
            u, p_mw = mann_whitney_p(a, r)
            tests[o] = {
                "diff": float(np.mean(a) - np.mean(r)),
                "p_perm": p_perm,
                "U": u,
                "p_mw": p_mw,
            }
            print(
                f"- {o}: PPO {mean_std(a)} vs random {mean_std(r)}; difference "
                f"{np.mean(a) - np.mean(r):+.3f}; one-sided permutation test on the mean "
                f"(100,000 relabellings) p = {p_perm:.2g}; Mann-Whitney U = {u:.0f}, "
                f"one-sided p = {p_mw:.2g} (normal approximation)"
            )
    results["tests"] = tests

    if "single" in args.objectives:
        print("\n## Single objective (w = 0, CIFAR-10)\n")
        print(
            "200-epoch test accuracy of the sample with the best 12-epoch validation accuracy, "
            f"mean +- std over {args.seeds} seeds; optimum {OPTIMUM}. Published numbers use "
            "NAS-Bench-201's protocol (500 runs under a simulated training-time budget), "
            "not a sample count.\n"
        )
        print("| strategy | " + " | ".join(str(b) for b in budgets) + " | published |")
        print("|---|" + "---|" * (len(budgets) + 1))
        for s in args.strategies:
            cells = [mean_std(col(s, "single", b, "best_acc")) for b in budgets]
            print(f"| {s} | " + " | ".join(cells) + f" | {PUBLISHED[s]} |")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"nb201_{args.device}.json").write_text(json.dumps(results))
    plot = plot_curves(results, args, curve_points)
    if plot is not None:
        print(f"\nplot: {plot}")
        if not args.no_copy:
            dest = REPO / "docs" / "img" / "nb201_hypervolume.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plot, dest)
            print(f"copied to {dest}")
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


def plot_curves(results: dict, args, points: list[int]) -> Path | None:
    objectives = [o for o in ("soft", "hard") if o in args.objectives]
    if not objectives:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(objectives), figsize=(6 * len(objectives), 4.2), squeeze=False)
    for ax, o in zip(axes[0], objectives, strict=True):
        for s in args.strategies:
            per_b = results["metrics"][f"{s}/{o}"]
            mean = np.array([np.mean([m["hv"] for m in per_b[str(b)]]) for b in points])
            sem = np.array(
                [np.std([m["hv"] for m in per_b[str(b)]], ddof=1) for b in points]
            ) / math.sqrt(args.seeds)
            ax.plot(points, mean, label=s)
            ax.fill_between(points, mean - sem, mean + sem, alpha=0.25)
        ax.set_xscale("log")
        ax.set_xlabel("samples (architectures evaluated, repeats counted)")
        ax.set_ylabel("hypervolume fraction of the true front")
        ax.set_title(f"NAS-Bench-201, {args.device}, {o} reward (mean +- s.e., {args.seeds} seeds)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = args.out / f"nb201_hypervolume_{args.device}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
