"""Search-strategy benchmark on the NAS-Bench-201 table (issues 8 and 18).

The default ``strategy=ppo``, random search and regularized evolution search the
NAS-Bench-201 cell space with the MnasNet reward, looking accuracy and latency up in the
table instead of training and timing children. Strategies are built exactly as
``scripts/search.py experiment=nasbench201`` builds them (the Hydra config is composed and
handed to ``mnas.conf.runner.make_strategy_from``), so the numbers are those of the shipped
defaults; an ablation row is the same config with a few overrides.

Protocol (NAS-Bench-201 paper, section 5): the search sees only the 12-epoch CIFAR-10
*validation* accuracy (``cifar10_valid_acc_12ep``) and the device latency; what it found is
reported with the 200-epoch *test* accuracy (``cifar10_test_acc_200ep``), which it never saw.

A *sample* is one architecture proposed by the strategy and evaluated. A repeated
architecture counts again: the search loop answers it from its cache, but the strategy has
spent one of its proposals on it. The number of unique architectures is reported too.

Metrics at each budget b (the first b samples of one run; no strategy's trajectory depends on
the total budget, so one run of the largest budget serves all of them):

- ``hv``: hypervolume of the evaluated architectures' (latency, 200-epoch test accuracy)
  points over that of the true front of all 15,625 cells, reference point at the median
  latency and median test accuracy of the connected cells (REFERENCES.md calibration).
  T = that median latency.
- p-values of "PPO's hypervolume fraction is higher than random's" (one-sided): a
  permutation test on the difference of means and Mann-Whitney U (scipy).
- single objective (w = 0, so no device): 200-epoch test accuracy of the sample with the
  best 12-epoch validation accuracy.

Seeds 1000-1019 are the benchmark's; the controller's defaults were tuned on other seeds
(docs/nasbench201.md says which).

Usage::

    python bench/strategies.py                    # all devices, soft/hard/single, 20 seeds
    python bench/strategies.py --ablation         # + each design choice off, pixel3 and raspi4
    python bench/strategies.py --devices pixel3 --seeds 5 --budgets 50 200
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
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from mnas.conf import register_configs
from mnas.conf.runner import make_strategy_from
from mnas.evaluate.tabular import NB201Table
from mnas.search.pareto import hypervolume_of_rows, median_reference, true_front
from mnas.search.reward import PRESETS, mnas_reward
from mnas.space import NB201Space

REPO = Path(__file__).resolve().parents[1]
DEVICES = ("pixel3", "raspi4", "eyeriss", "fpga", "gold_6226")
STRATEGIES = ("ppo", "random", "evolution")
OBJECTIVES = ("soft", "hard", "single")
P_BUDGETS = (100, 200, 500)
OPTIMUM = 94.37
# Each row turns one design choice of the default strategy=ppo off (Hydra overrides).
ABLATIONS: dict[str, list[str]] = {
    "defaults": [],
    "LSTM controller (lr 0.01)": ["controller=nasnet", "strategy.lr=0.01"],
    "EMA-baseline advantages": [
        "strategy.advantages=baseline",
        "strategy.baseline_decay=0.7",
        "strategy.normalize_advantages=true",
    ],
    "Adam beta1 = 0.9": ["strategy.adam_beta1=0.9"],
    "repeats kept (resample 0)": ["strategy.resample=0"],
    "batch 20": ["batch_size=20"],
    "lr 0.05": ["strategy.lr=0.05"],
    "REINFORCE (1 step per batch)": ["strategy=reinforce"],
    "issue-8 defaults (all off)": [
        "controller=nasnet",
        "strategy.lr=0.01",
        "strategy.adam_beta1=0.9",
        "strategy.advantages=baseline",
        "strategy.baseline_decay=0.7",
        "strategy.normalize_advantages=true",
        "strategy.resample=0",
        "batch_size=20",
    ],
}
ABLATION_DEVICES = ("pixel3", "raspi4")


class Problem:
    """One device's columns of the table and its hypervolume normalisation."""

    def __init__(self, table: NB201Table, device: str) -> None:
        self.device = device
        self.latency = table.latency_column(device)
        self.report_acc = table.accuracy_column("cifar10", "test_acc_200ep")
        self.search_acc = table.accuracy_column("cifar10", "valid_acc_12ep")
        self.row_of = table.row_of
        self.ref = median_reference(self.latency, self.report_acc, table.connected)
        self.target_ms = self.ref[0]
        self.front = true_front(self.latency, self.report_acc)
        self.true_hv = hypervolume_of_rows(self.front, self.latency, self.report_acc, *self.ref)


_PROBLEMS: dict[str, Problem] = {}
_CONFIGS: dict[str, DictConfig] = {}


def compose_search(overrides: list[str]) -> DictConfig:
    """The search config ``scripts/search.py experiment=nasbench201 <overrides>`` would run."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("search", overrides=["experiment=nasbench201", *overrides])


def run_search(config: str, strategy: str, device: str, objective: str, seed: int, budget: int):
    """Rows of the table the strategy evaluated, in order (length ``budget``)."""
    torch.set_num_threads(1)
    prob = _PROBLEMS[device]
    cfg = _CONFIGS[config].copy()
    cfg.seed = seed
    if strategy != "ppo":
        cfg.strategy = OmegaConf.merge(cfg.strategy, {"name": strategy})
    strat = make_strategy_from(cfg, NB201Space())
    # Regularized evolution breeds one child at a time (NAS-Bench-201's protocol).
    batch = {"evolution": 1, "random": budget}.get(strategy, cfg.batch_size)
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


def metrics_at(rows: list[int], prob: Problem) -> dict:
    """The metrics of one prefix of a run."""
    uniq = sorted(set(rows))
    pick = max(uniq, key=lambda r: (prob.search_acc[r], -r))
    hv = hypervolume_of_rows(uniq, prob.latency, prob.report_acc, *prob.ref)
    return {
        "hv": hv / prob.true_hv,
        "best_acc": 100 * float(prob.report_acc[pick]),
        "unique": len(uniq),
    }


def _job(args: tuple) -> tuple:
    config, strategy, device, objective, seed, budgets = args
    start = time.process_time()
    rows = run_search(config, strategy, device, objective, seed, max(budgets))
    prob = _PROBLEMS[device]
    return (
        (config, strategy, device, objective),
        seed,
        {b: metrics_at(rows[:b], prob) for b in budgets},
        time.process_time() - start,
    )


def permutation_test(a, b, n_perm: int = 100_000, seed: int = 0) -> float:
    """One-sided p-value of mean(a) > mean(b) under random relabelling (with the +1 rule)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(pooled, (n_perm, 1)), axis=1)
    diffs = perms[:, : len(a)].mean(1) - perms[:, len(a) :].mean(1)
    return float((1 + np.sum(diffs >= observed - 1e-12)) / (n_perm + 1))


def mann_whitney_p(a, b) -> float:
    """One-sided Mann-Whitney p (a > b), normal approximation with tie and continuity
    correction."""
    res = scipy.stats.mannwhitneyu(a, b, alternative="greater", method="asymptotic")
    return float(res.pvalue)


def mean_std(xs) -> str:
    xs = np.asarray(xs, dtype=float)
    return f"{xs.mean():.2f} +- {xs.std(ddof=1):.2f}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="runs per strategy, device and reward")
    p.add_argument("--seed-offset", type=int, default=1000, help="first seed")
    p.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 500])
    p.add_argument("--devices", nargs="+", default=list(DEVICES), choices=DEVICES)
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--override", nargs="*", default=[], help="Hydra overrides for every run")
    p.add_argument("--ablation", action="store_true", help="also run the ablation table")
    p.add_argument("--ablation-only", action="store_true", help="only the ablation table")
    p.add_argument("--data", default=os.environ.get("MNAS_DATA"), help="default: $MNAS_DATA")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--no-copy", action="store_true", help="do not copy the plot into docs/img")
    return p.parse_args(argv)


def run_all(jobs: list[tuple], workers: int) -> tuple[dict, dict]:
    by_seed: dict = {}
    seconds: dict[str, float] = {}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for key, seed, per_budget, sec in pool.imap_unordered(_job, jobs, chunksize=1):
            by_seed.setdefault(key, {})[seed] = per_budget
            seconds[key[1]] = seconds.get(key[1], 0.0) + sec
    # Seed order, not completion order: the permutation test's p depends on the order.
    results = {key: [runs[s] for s in sorted(runs)] for key, runs in by_seed.items()}
    return results, seconds


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.data:
        print("no data: pass --data or set MNAS_DATA", file=sys.stderr)
        return 2
    table = NB201Table(Path(args.data) / "nasbench201" / "nb201_acc_latency.csv")
    budgets = tuple(sorted(args.budgets))
    seeds = range(args.seed_offset, args.seed_offset + args.seeds)
    devices = list(args.devices)
    _CONFIGS["defaults"] = compose_search(args.override)
    ppo = _CONFIGS["defaults"]
    print("# NAS-Bench-201 strategy benchmark")
    print(
        f"{len(table)} cells; seeds {seeds.start}-{seeds.stop - 1}; strategy=ppo settings: "
        f"{OmegaConf.to_container(ppo.strategy, enum_to_str=True)}; controller: "
        f"{OmegaConf.to_container(ppo.controller, enum_to_str=True)}; batch_size {ppo.batch_size}"
    )
    jobs: list[tuple] = []
    if not args.ablation_only:
        for o in args.objectives:
            # w = 0 ignores latency: one device serves the single objective.
            for d in devices if o != "single" else devices[:1]:
                jobs += [
                    ("defaults", s, d, o, seed, budgets) for s in args.strategies for seed in seeds
                ]
    if args.ablation or args.ablation_only:
        for name, overrides in ABLATIONS.items():
            _CONFIGS[name] = compose_search([*args.override, *overrides])
            for d in ABLATION_DEVICES:
                for o in ("soft", "hard"):
                    done = set(jobs)
                    jobs += [
                        j for seed in seeds if (j := (name, "ppo", d, o, seed, budgets)) not in done
                    ]
    for d in {j[2] for j in jobs}:
        _PROBLEMS[d] = Problem(table, d)
    # Adam's first construction imports torch._dynamo (seconds); pay it once before forking.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    start = time.perf_counter()
    results, seconds = run_all(jobs, args.jobs)
    wall = time.perf_counter() - start
    print(
        f"{len(jobs)} runs of {max(budgets)} samples in {wall:.0f} s wall ({args.jobs} workers); "
        "CPU s per strategy: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(seconds.items()))
    )

    def col(config, s, d, o, b, key="hv"):
        return [m[b][key] for m in results[(config, s, d, o)]]

    summary: dict = {"seeds": list(seeds), "budgets": budgets, "devices": {}, "ablation": {}}
    if not args.ablation_only:
        report_main(args, budgets, devices, col, summary)
    if args.ablation or args.ablation_only:
        report_ablation(budgets, col, summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nb201_strategies.json").write_text(json.dumps(summary, indent=1))
    if not args.ablation_only and {"soft", "hard"} & set(args.objectives):
        plot = plot_curves(args, budgets, devices, col)
        print(f"\nplot: {plot}")
        if not args.no_copy:
            dest = REPO / "docs" / "img" / "nb201_hypervolume.png"
            shutil.copyfile(plot, dest)
            print(f"copied to {dest}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


def report_main(args, budgets, devices, col, summary) -> None:
    multi = [o for o in ("soft", "hard") if o in args.objectives]
    for d in devices:
        prob = _PROBLEMS[d]
        print(
            f"\n## {d}: T = {prob.target_ms:.3f} ms, reference ({prob.ref[0]:.3f} ms, "
            f"{100 * prob.ref[1]:.2f}%), true front {len(prob.front)} cells\n"
        )
        print("Hypervolume fraction, mean +- std; unique architectures of the last budget\n")
        print("| reward | strategy | " + " | ".join(map(str, budgets)) + " | unique |")
        print("|---|---|" + "---|" * (len(budgets) + 1))
        for o in multi:
            for s in args.strategies:
                cells = [mean_std(col("defaults", s, d, o, b)) for b in budgets]
                uniq = np.mean(col("defaults", s, d, o, budgets[-1], "unique"))
                print(f"| {o} | {s} | " + " | ".join(cells) + f" | {uniq:.0f} |")
                summary["devices"].setdefault(d, {})[f"{s}/{o}"] = {
                    b: float(np.mean(col("defaults", s, d, o, b))) for b in budgets
                } | {"unique": float(uniq)}
    if {"ppo", "random"} <= set(args.strategies) and multi:
        pb = [b for b in P_BUDGETS if b in budgets]
        print("\n## PPO vs random: one-sided p-values (permutation test | Mann-Whitney)\n")
        print(
            "| device | reward | "
            + " | ".join(f"PPO - random @{b}" for b in pb)
            + " | "
            + " | ".join(f"p @{b}" for b in pb)
            + " |"
        )
        print("|---|---|" + "---|" * (2 * len(pb)))
        for d in devices:
            for o in multi:
                diffs, ps = [], []
                for b in pb:
                    a, r = col("defaults", "ppo", d, o, b), col("defaults", "random", d, o, b)
                    p_perm, p_mw = permutation_test(a, r), mann_whitney_p(a, r)
                    diffs.append(f"{np.mean(a) - np.mean(r):+.3f}")
                    ps.append(f"{p_perm:.2g} \\| {p_mw:.2g}")
                    summary["devices"][d].setdefault(f"p/{o}", {})[b] = [p_perm, p_mw]
                print(f"| {d} | {o} | " + " | ".join(diffs) + " | " + " | ".join(ps) + " |")
    if {"ppo", "evolution"} <= set(args.strategies) and multi:
        last = budgets[-1]
        print(f"\n## Goals at {last} samples: PPO - evolution (>= -0.02), unique (>= 80%)\n")
        print("| device | reward | PPO | evolution | PPO - evolution | PPO unique |")
        print("|---|---|---|---|---|---|")
        for d in devices:
            for o in multi:
                a, e = col("defaults", "ppo", d, o, last), col("defaults", "evolution", d, o, last)
                u = np.mean(col("defaults", "ppo", d, o, last, "unique"))
                print(
                    f"| {d} | {o} | {np.mean(a):.3f} | {np.mean(e):.3f} | "
                    f"{np.mean(a) - np.mean(e):+.3f} | {u:.0f} of {last} |"
                )
    if "single" in args.objectives:
        d = devices[0]
        print(
            "\n## Single objective (w = 0, CIFAR-10): 200-epoch test accuracy of the sample "
            f"with the best 12-epoch validation accuracy, optimum {OPTIMUM}\n"
        )
        print("| strategy | " + " | ".join(map(str, budgets)) + " |")
        print("|---|" + "---|" * len(budgets))
        for s in args.strategies:
            cells = [mean_std(col("defaults", s, d, "single", b, "best_acc")) for b in budgets]
            print(f"| {s} | " + " | ".join(cells) + " |")
            summary.setdefault("single", {})[s] = {
                b: float(np.mean(col("defaults", s, d, "single", b, "best_acc"))) for b in budgets
            }


def report_ablation(budgets, col, summary) -> None:
    pick = [b for b in (200, budgets[-1]) if b in budgets]
    print(
        "\n## Ablation: the default strategy=ppo with one choice turned off; hypervolume "
        f"fraction at {' / '.join(map(str, pick))} samples (unique of {budgets[-1]})\n"
    )
    heads = [f"{d} {o}" for d in ABLATION_DEVICES for o in ("soft", "hard")]
    print("| variant | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    for name, overrides in ABLATIONS.items():
        cells = []
        for d in ABLATION_DEVICES:
            for o in ("soft", "hard"):
                hv = " / ".join(f"{np.mean(col(name, 'ppo', d, o, b)):.3f}" for b in pick)
                u = np.mean(col(name, "ppo", d, o, budgets[-1], "unique"))
                cells.append(f"{hv} ({u:.0f})")
                summary["ablation"].setdefault(name, {})[f"{d}/{o}"] = {
                    b: float(np.mean(col(name, "ppo", d, o, b))) for b in pick
                }
        label = f"{name}: `{' '.join(overrides)}`" if overrides else name
        print(f"| {label} | " + " | ".join(cells) + " |")


def plot_curves(args, budgets, devices, col) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, NullLocator

    multi = [o for o in ("soft", "hard") if o in args.objectives]
    fig, axes = plt.subplots(
        len(multi), len(devices), figsize=(3.6 * len(devices), 3.2 * len(multi)), squeeze=False
    )
    for i, o in enumerate(multi):
        for j, d in enumerate(devices):
            ax = axes[i][j]
            for s in args.strategies:
                mean = np.array([np.mean(col("defaults", s, d, o, b)) for b in budgets])
                sem = np.array(
                    [np.std(col("defaults", s, d, o, b), ddof=1) for b in budgets]
                ) / math.sqrt(args.seeds)
                ax.plot(budgets, mean, marker="o", label=s)
                ax.fill_between(budgets, mean - sem, mean + sem, alpha=0.25)
            ax.set_xscale("log")
            # Log axes label their minor ticks too (2x10^2, 3x10^2, ... over the budgets).
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.set_title(f"{d}, {o}")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("hypervolume fraction")
            if i == len(multi) - 1:
                ax.set_xlabel("samples")
    axes[0][0].legend()
    fig.suptitle(f"NAS-Bench-201, mean +- s.e. over {args.seeds} seeds")
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "nb201_hypervolume.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
