"""How well a weight-sharing supernet ranks architectures, and how many it scores per hour.

    PYTHONPATH=$PWD python bench/supernet.py --dataset fashion_mnist --out bench/out/supernet

Reads the stand-alone ground truth ``bench/data/standalone_<dataset>.json`` (written by
``bench/standalone_truth.py``: rows of block strings, seed and validation accuracy of the
project's own proxy training), trains a supernet at the same set-up (the experiment's
data, model and validation split; or reuses ``<out>/supernet_<dataset>.pt``), scores every
architecture of the truth with it, and writes ``<out>/supernet_<dataset>.json``:

- ``kendall_tau``, ``spearman``: supernet score against the stand-alone accuracy, the mean
  over the seeds every architecture was trained with (``truth_seeds``; seed 0 alone where
  only some were trained again);
- ``noise_ceiling_tau``: the stand-alone truth against itself, one seed against another (the
  mean over seed pairs, each in ``noise_ceiling_pairs``); ``split_half_tau``: the mean of half
  the seeds against the mean of the other half; ``ceiling_vs_truth_estimate``: what a
  noise-free score could reach against the mean of ``truth_seeds`` seeds (a Gaussian model:
  :func:`ceiling_estimate`);
- ``against``: every score and baseline against seed 0 alone and against the mean of all
  seeds on the architectures that have them all;
- ``baselines``: Kendall's tau of MACs, parameters, SynFlow and NASWOT on the same rows;
- ``per_bn_mode``: every scoring setting measured (``--settings``) with its tau, CPU seconds
  per architecture, throughput and ``tau_vs_headline`` (how much of the headline setting's
  order a cheaper setting keeps, whatever the truth);
- ``other_truths``: with ``--extra-truth PATH`` (repeatable), every score and baseline ranked
  against that truth too, on the architectures it shares, with its own noise ceiling;
- ``archs_per_cpu_hour``: architectures scored per hour of a 2-core machine with the
  supernet's training amortised over the scored architectures (CPU seconds / 2), also
  without training (``..._scoring_only``) and amortised over a 10,000-architecture search.

``--make-truth N`` writes a small truth of N random architectures instead (train_child at the
experiment's proxy set-up), for developing on digits before the real one exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from scipy import stats as sstats

from mnas.conf import register_configs
from mnas.conf.arguments import name_of, train_config
from mnas.conf.runner import data_spec_from, model_spec_from
from mnas.data import get_dataset
from mnas.evaluate.supernet import SupernetSettings, load_or_train
from mnas.evaluate.trained import TrainTask, train_child
from mnas.latency.fit import pearson_from_tau, tau_from_pearson
from mnas.nn.zero_cost import naswot, synflow
from mnas.space import Architecture, MnasSpace, make_space, parse_blocks
from mnas.training.batches import Normalizer
from mnas.training.supernet import (
    CHEAP_SCORE,
    PathSampler,
    PathTrainer,
    ScoreConfig,
    SupernetTrainConfig,
    score_subnet,
)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
EXPERIMENTS = {"fashion_mnist": "fashion_mnist_proxy", "digits": "digits_quick"}
CORES = 2
SETTINGS = ("recalibrate", "batch", "cheap")  # scoring settings (--bn, --settings)


def space_and_truth(args: argparse.Namespace, cfg) -> tuple[MnasSpace, str, Path]:
    """The set-up's space, the suffix of its files (``""`` for the full space, ``"_mbconv"``
    for ``mnas_mbconv``) and its stand-alone truth (``--truth``, or the default file)."""
    space = make_space(name_of(cfg.space.name))
    suffix = "" if space.name == "mnas" else "_" + space.name.removeprefix("mnas_")
    truth = args.truth or ROOT / "bench" / "data" / f"standalone_{args.dataset}{suffix}.json"
    return space, suffix, truth


def add_training_args(p: argparse.ArgumentParser) -> None:
    """The supernet's training settings (they name its checkpoint's identity: a saved
    supernet made with others is refused), shared by the benches that load one."""
    p.add_argument("--epochs", type=float, default=SupernetTrainConfig.epochs)
    p.add_argument("--subnets", type=int, default=SupernetTrainConfig.subnets_per_step)
    p.add_argument("--sampling", default=SupernetTrainConfig.sampling)
    p.add_argument("--schedule", default=SupernetTrainConfig.schedule)
    p.add_argument("--lr", type=float, default=SupernetTrainConfig.lr)
    p.add_argument("--no-sandwich", action="store_true")
    p.add_argument("--kernel-sharing", default="crop")
    p.add_argument(
        "--seed",
        type=int,
        default=SupernetTrainConfig.seed,
        help="the supernet's training seed (initial weights, paths, batches): two seeds of "
        "one recipe show how much of a supernet's order is its own training draw",
    )
    p.add_argument("--joint-lr", type=float, default=SupernetSettings.joint_lr)
    p.add_argument("--threads", type=int, default=1)


def settings_from(args: argparse.Namespace) -> SupernetSettings:
    """:class:`SupernetSettings` of :func:`add_training_args`' arguments (``joint_steps``
    where the parser has it)."""
    return SupernetSettings(
        train=SupernetTrainConfig(
            epochs=args.epochs,
            subnets_per_step=args.subnets,
            sampling=args.sampling,
            schedule=args.schedule,
            lr=args.lr,
            sandwich=not args.no_sandwich,
            distill=not args.no_sandwich,
            threads=args.threads,
            seed=args.seed,
        ),
        kernel_sharing=args.kernel_sharing,
        joint_steps=getattr(args, "joint_steps", 0),
        joint_lr=args.joint_lr,
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(EXPERIMENTS), default="fashion_mnist")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--truth", type=Path, default=None)
    p.add_argument("--make-truth", type=int, default=0, metavar="N")
    p.add_argument(
        "--extra-truth",
        type=Path,
        action="append",
        default=[],
        help="another truth file of (some of) the same architectures: every score is ranked "
        "against it too (other_truths in the JSON)",
    )
    p.add_argument("--train-only", action="store_true", help="train (or load) and stop")
    add_training_args(p)
    p.add_argument(
        "--limit",
        type=int,
        default=0,
        help="score only the first N architectures of the truth (by hash; 0: all)",
    )
    p.add_argument(
        "--bn",
        default="recalibrate",
        help="the headline scoring: recalibrate (the search's default) | batch | cheap",
    )
    p.add_argument(
        "--settings",
        default="recalibrate,batch,cheap",
        help="scoring settings to measure (comma-separated; the headline is always one)",
    )
    p.add_argument("--val-images", type=int, default=ScoreConfig.val_images)
    p.add_argument("--bn-batches", type=int, default=ScoreConfig.bn_batches)
    p.add_argument("--bn-batch-size", type=int, default=ScoreConfig.bn_batch_size)
    p.add_argument(
        "--joint-steps",
        type=int,
        default=0,
        help="the joint settings of a supernet a joint search trained (evaluator.supernet."
        "joint_steps): copy the run's supernet.pt to <out>/supernet_<dataset>.pt to rank it",
    )
    p.add_argument(
        "--random-steps",
        type=int,
        default=0,
        help="a control for a joint search: train the loaded supernet this many more SGD steps "
        "on random (fair) paths at --joint-lr before scoring (in memory; not saved)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the search config")
    args = p.parse_args()
    for name in {args.bn, *args.settings.split(",")}:
        if name not in SETTINGS:
            p.error(f"scoring setting {name!r}; allowed: {', '.join(SETTINGS)}")
    return args


def setup(args):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "search", overrides=[f"experiment={EXPERIMENTS[args.dataset]}", *args.overrides]
        )
    data = data_spec_from(cfg)
    splits = get_dataset(data)
    model = model_spec_from(cfg, splits)
    return cfg, data, splits, model


def make_truth(args, cfg, data, model, path: Path) -> None:
    """A small stand-alone truth: ``--make-truth N`` architectures, one from each of N equal-
    count MACs strata of 10 N random ones, trained as search children (seed 0), the first
    third of them again with seed 1."""
    from mnas.nn.stats import model_stats

    space = make_space(name_of(cfg.space.name))
    rng = random.Random(0)
    pool = {}
    while len(pool) < 10 * args.make_truth:
        a = space.sample(rng)
        pool[a.hash] = a
    sized = sorted(
        pool.values(), key=lambda a: model_stats(model.build(a), cfg.data.image_size, 1).macs
    )
    per = len(sized) / args.make_truth
    archs = [sized[int(i * per + rng.random() * per)] for i in range(args.make_truth)]
    rows = []
    for seed in (0, 1):
        for a in archs if seed == 0 else archs[: max(2, args.make_truth // 3)]:
            train = dataclasses.replace(train_config(cfg.trainer), seed=seed)
            out = train_child(TrainTask(a, model, data, train, cfg.data.image_size))
            rows.append(
                dict(
                    blocks=list(a.blocks),
                    hash=a.hash,
                    seed=seed,
                    val_accuracy=out.accuracy,
                    macs=out.macs,
                    params=out.params,
                    seconds=out.seconds,
                )
            )
            print(f"truth {len(rows)}: seed {seed} {a.hash} {out.accuracy:.4f}")
    meta = {
        "command": f"bench/supernet.py --dataset {args.dataset} --make-truth {args.make_truth}",
        "experiment": EXPERIMENTS[args.dataset],
        "data": dataclasses.asdict(data),
        "model": dataclasses.asdict(model),
        "trainer": dataclasses.asdict(train_config(cfg.trainer)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def tau(x, y) -> float:
    return float(sstats.kendalltau(x, y).statistic)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    try:  # bad settings or a missing data folder: said before any work
        settings = settings_from(args)
        cfg, data, splits, model = setup(args)
    except ValueError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    args.out.mkdir(parents=True, exist_ok=True)
    space, suffix, truth_path = space_and_truth(args, cfg)
    if args.make_truth:
        make_truth(args, cfg, data, model, truth_path)
    ckpt = args.out / f"supernet_{args.dataset}{suffix}.pt"
    net, record = load_or_train(ckpt, space, model, data, settings, args.device)
    if args.random_steps:
        sampler = PathSampler(space, "fair", args.seed + 2)
        trainer = PathTrainer(net, splits, settings.train, args.joint_lr)
        record["random_steps"] = args.random_steps
        record["random_steps_loss"] = trainer.train(
            [space.decode(t) for t in sampler.sample(args.random_steps)], 1
        )
        record["random_steps_cpu_seconds"] = trainer.cpu_seconds
    print(
        f"supernet: {record['steps']} steps, {record['seconds']:.0f} s wall, "
        f"{record['cpu_seconds']:.0f} CPU s, final loss {record['loss']:.3f}"
    )

    if args.train_only:
        return
    saved_truth = json.loads(truth_path.read_text())
    truth_space = saved_truth["meta"].get("space", "mnas")
    if truth_space != space.name:
        raise SystemExit(f"{truth_path} holds space {truth_space!r}, the set-up {space.name!r}")
    by_seed = rows_by_seed(saved_truth["rows"])
    seed0 = by_seed[min(by_seed)]
    archs = {h: Architecture.from_blocks(r["blocks"]) for h, r in seed0.items()}
    hashes = sorted(archs)[: args.limit or None]
    keep = set(hashes)
    by_seed = {s: {h: r for h, r in rows.items() if h in keep} for s, rows in by_seed.items()}
    specs = {h: parse_blocks(seed0[h]["blocks"]) for h in hashes}

    noise = seed_noise(by_seed)
    truth = [noise["mean"][h] for h in hashes]
    # The headline is the search's own scoring (``--bn``, default recalibrate); the other
    # settings are reported beside it, never picked by their tau on this truth.
    settings_scored = {
        "recalibrate": ScoreConfig(
            bn="recalibrate",
            val_images=args.val_images,
            bn_batches=args.bn_batches,
            bn_batch_size=args.bn_batch_size,
        ),
        "batch": ScoreConfig(bn="batch", val_images=args.val_images),
        "cheap": CHEAP_SCORE,
    }
    per_mode = {}
    for mode, score in settings_scored.items():
        if mode != args.bn and mode not in args.settings.split(","):
            continue
        scores, losses, cpu = [], [], []
        for h in hashes:
            c0 = time.process_time()
            acc, loss = score_subnet(net, specs[h], splits, score)
            cpu.append(time.process_time() - c0)
            scores.append(acc)
            losses.append(-loss)
        per_mode[mode] = dict(
            kendall_tau=tau(scores, truth),
            spearman=float(sstats.spearmanr(scores, truth).statistic),
            kendall_tau_neg_loss=tau(losses, truth),
            score_cpu_seconds_mean=statistics.mean(cpu),
            settings=dataclasses.asdict(score),
            scores=dict(zip(hashes, scores, strict=True)),
            losses=dict(zip(hashes, (-v for v in losses), strict=True)),
        )
        print(
            f"{mode}: tau {per_mode[mode]['kendall_tau']:.3f} "
            f"(-loss {per_mode[mode]['kendall_tau_neg_loss']:.3f}), "
            f"{per_mode[mode]['score_cpu_seconds_mean']:.2f} CPU s per architecture",
            flush=True,
        )
    best = args.bn
    chosen = per_mode[best]
    # How much of the headline's order a cheaper setting keeps (independent of the truth).
    for d in per_mode.values():
        d["tau_vs_headline"] = tau(
            [d["scores"][h] for h in hashes], [chosen["scores"][h] for h in hashes]
        )

    # Zero-cost proxies on freshly initialised stand-alone networks (seeded by hash).
    norm = Normalizer(splits.mean, splits.std, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    batch = norm(splits.train_x[torch.randperm(len(splits.train_y), generator=g)[:64]])
    shape = tuple(splits.train_x.shape[1:])
    syn, nwot, macs, params = [], [], [], []
    for h in hashes:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(h[:8], 16))
            m = model.build(archs[h])
        syn.append(synflow(m, shape))
        nwot.append(naswot(m, batch))
        macs.append(seed0[h]["macs"])
        params.append(seed0[h]["params"])
    baselines = {
        "macs": tau(macs, truth),
        "params": tau(params, truth),
        "synflow": tau(syn, truth),
        "naswot": tau(nwot, truth),
    }

    ceiling = noise["noise_ceiling_tau"]
    # the supernet's training, with what a joint search or --random-steps added to it
    train_cpu = (
        record["cpu_seconds"]
        + record.get("joint_cpu_seconds", 0.0)
        + record.get("random_steps_cpu_seconds", 0.0)
    )
    score_cpu = chosen["score_cpu_seconds_mean"]
    n = len(hashes)

    def per_hour(n_archs: int, with_training: bool = True, per_arch: float = score_cpu) -> float:
        cpu = (train_cpu if with_training else 0.0) + n_archs * per_arch
        return n_archs / (cpu / CORES) * 3600

    for d in per_mode.values():
        d["archs_per_cpu_hour"] = per_hour(n, per_arch=d["score_cpu_seconds_mean"])
        d["archs_per_cpu_hour_amortised_10000"] = per_hour(
            10_000, per_arch=d["score_cpu_seconds_mean"]
        )
    columns = {f"supernet_{m}": d["scores"] for m, d in per_mode.items()}
    columns.update(
        {
            k: dict(zip(hashes, v, strict=True))
            for k, v in {"macs": macs, "params": params, "synflow": syn, "naswot": nwot}.items()
        }
    )
    others = {str(p): other_truth(p, columns) for p in args.extra_truth}
    against = against_seeds(by_seed, columns)
    out = {
        "dataset": args.dataset,
        "space": space.name,
        "n_archs": n,
        "kendall_tau": chosen["kendall_tau"],
        "spearman": chosen["spearman"],
        "bn": best,
        "per_bn_mode": {
            m: {k: v for k, v in d.items() if k not in ("scores", "losses")}
            for m, d in per_mode.items()
        },
        "truth_seeds": noise["truth_seeds"],
        "noise_ceiling_tau": ceiling,
        "noise_ceiling_pairs": noise["pairs"],
        "split_half_tau": noise["split_half_tau"],
        "ceiling_vs_truth_estimate": noise["ceiling_vs_truth_estimate"],
        "against": against,
        "baselines": baselines,
        "archs_per_cpu_hour": per_hour(n),
        "archs_per_cpu_hour_scoring_only": per_hour(n, with_training=False),
        "archs_per_cpu_hour_amortised_10000": per_hour(10_000),
        "supernet_train": record,
        "score_cpu_seconds_per_arch": score_cpu,
        "settings": {
            "train": settings.train.__dict__,
            "kernel_sharing": settings.kernel_sharing,
            "val_images": args.val_images,
            "bn_batches": args.bn_batches,
            "bn_batch_size": args.bn_batch_size,
            "threads": args.threads,
            "device": args.device,
        },
        "truth": str(
            truth_path.relative_to(ROOT) if truth_path.is_relative_to(ROOT) else truth_path
        ),
        "other_truths": others,
        "scores": {
            h: {
                "supernet": chosen["scores"][h],
                **{f"supernet_{m}": d["scores"][h] for m, d in per_mode.items()},
                **{f"supernet_{m}_loss": d["losses"][h] for m, d in per_mode.items()},
                "standalone": noise["mean"][h],
                "standalone_seeds": [
                    rows[h]["val_accuracy"] for rows in by_seed.values() if h in rows
                ],
                "synflow": s,
                "naswot": w,
            }
            for h, s, w in zip(hashes, syn, nwot, strict=True)
        },
    }
    path = args.out / f"supernet_{args.dataset}{suffix}.json"
    path.write_text(json.dumps(out, indent=1))
    print(
        f"n_archs {n}  kendall_tau {out['kendall_tau']:.3f}  spearman {out['spearman']:.3f}"
        f"  (bn={best})"
    )
    split = noise["split_half_tau"]
    estimate = noise["ceiling_vs_truth_estimate"]
    print(
        f"truth: the mean of seeds {noise['truth_seeds']}; noise_ceiling_tau "
        f"{ceiling if ceiling is None else round(ceiling, 3)} (one seed against another, "
        f"mean of {len(noise['pairs'])} pairs); "
        + (
            f"split_half_tau {split['tau']:.3f} (mean of seeds {split['seeds'][0]} against "
            f"{split['seeds'][1]}, {split['n']} architectures); "
            if split
            else ""
        )
        + f"ceiling_vs_truth_estimate {estimate if estimate is None else round(estimate, 3)}"
    )
    for name, d in against.items():
        print(
            f"against {name}: "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items()
            )
        )
    print("baselines: " + ", ".join(f"{k} {v:.3f}" for k, v in baselines.items()))
    for m, d in per_mode.items():
        print(
            f"setting {m}: {d['score_cpu_seconds_mean']:.2f} CPU s per architecture, "
            f"{d['archs_per_cpu_hour_amortised_10000']:.0f} per CPU-hour amortised over 10,000; "
            f"tau against the headline's scores {d['tau_vs_headline']:.3f}"
        )
    for name, d in out["other_truths"].items():
        print(
            f"against {name}: "
            + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items()
            )
        )
    print(
        f"archs_per_cpu_hour {out['archs_per_cpu_hour']:.0f} (training amortised over {n}); "
        f"scoring only {out['archs_per_cpu_hour_scoring_only']:.0f}; amortised over 10,000 "
        f"{out['archs_per_cpu_hour_amortised_10000']:.0f}"
    )
    print(f"wrote {path}")


def rows_by_seed(rows: list[dict]) -> dict[int, dict[str, dict]]:
    """A truth's trained rows (status ok, an accuracy) by seed, then architecture hash."""
    by_seed: dict[int, dict[str, dict]] = {}
    for r in rows:
        if r.get("val_accuracy") is not None and r.get("status", "ok") == "ok":
            by_seed.setdefault(int(r["seed"]), {})[r["hash"]] = r
    return by_seed


def ceiling_estimate(single_tau: float, k: int) -> float | None:
    """The Kendall tau a noise-free score could reach against the mean of ``k`` seeds, given
    ``single_tau`` between two single seeds: each seed's accuracy modelled as the
    architecture's value plus independent Gaussian noise, tau and Pearson's r related by
    ``tau = 2 / pi * asin(r)``, the mean's reliability by Spearman-Brown. None when the
    seeds do not agree at all (single_tau <= 0)."""
    if not single_tau > 0:
        return None
    r = pearson_from_tau(single_tau)
    reliability = k * r / (1 + (k - 1) * r)
    return tau_from_pearson(math.sqrt(reliability))


def seed_noise(by_seed: dict[int, dict[str, dict]]) -> dict:
    """The truth (per architecture of the first seed: its mean accuracy over the seeds every
    architecture has) and how well the truth agrees with itself."""
    seeds = sorted(by_seed)
    hashes = sorted(by_seed[seeds[0]])
    complete = [s for s in seeds if all(h in by_seed[s] for h in hashes)]
    acc = {s: {h: r["val_accuracy"] for h, r in by_seed[s].items()} for s in seeds}
    mean = {h: statistics.fmean(acc[s][h] for s in complete) for h in hashes}
    pairs = []
    for a, b in itertools.combinations(seeds, 2):
        common = [h for h in hashes if h in acc[a] and h in acc[b]]
        if len(common) >= 2:
            agree = tau([acc[a][h] for h in common], [acc[b][h] for h in common])
            pairs.append({"seeds": [a, b], "n": len(common), "tau": agree})
    single = statistics.fmean(p["tau"] for p in pairs) if pairs else None
    # split half: the architectures with the most seeds, the mean of one half against the other
    most = max((sum(h in acc[s] for s in seeds) for h in hashes), default=0)
    split = None
    if most >= 2:
        full = [h for h in hashes if sum(h in acc[s] for s in seeds) == most]
        have = [s for s in seeds if all(h in acc[s] for h in full)]
        halves = have[: most // 2], have[most // 2 : 2 * (most // 2)]
        if len(full) >= 2:
            split = {
                "seeds": [list(halves[0]), list(halves[1])],
                "n": len(full),
                "tau": tau(
                    [statistics.fmean(acc[s][h] for s in halves[0]) for h in full],
                    [statistics.fmean(acc[s][h] for s in halves[1]) for h in full],
                ),
            }
    return {
        "mean": mean,
        "truth_seeds": complete,
        "pairs": pairs,
        "noise_ceiling_tau": single,
        "split_half_tau": split,
        "ceiling_vs_truth_estimate": (
            None if single is None else ceiling_estimate(single, len(complete))
        ),
    }


def rank_columns(columns: dict[str, dict], target: dict[str, float]) -> dict:
    """Every score column (hash -> value) ranked against ``target`` (hash -> accuracy) on
    the architectures all of them hold: ``n`` and one tau per column."""
    common = sorted(h for h in target if all(h in c for c in columns.values()))
    out: dict = {"n": len(common)}
    if len(common) >= 2:
        want = [target[h] for h in common]
        out.update({k: tau([c[h] for h in common], want) for k, c in columns.items()})
    return out


def against_seeds(
    by_seed: dict[int, dict[str, dict]], columns: dict[str, dict], min_n: int = 10
) -> dict:
    """Every score column (hash -> value) against seed 0 alone, and against the mean of every
    seed on the architectures trained with all of them (when that is not the headline's truth)."""
    seeds = sorted(by_seed)
    acc = {s: {h: r["val_accuracy"] for h, r in by_seed[s].items()} for s in seeds}
    out = {f"seed {seeds[0]}": rank_columns(columns, acc[seeds[0]])}
    every = [h for h in acc[seeds[0]] if all(h in acc[s] for s in seeds)]
    if len(seeds) > 1 and min_n <= len(every) < len(acc[seeds[0]]):
        mean = {h: statistics.fmean(acc[s][h] for s in seeds) for h in every}
        out[f"mean of seeds {seeds[0]}-{seeds[-1]}"] = rank_columns(columns, mean)
    return out


def other_truth(path: Path, columns: dict[str, dict[str, float]]) -> dict:
    """Every score column (hash -> value) ranked against another truth's seed-0 accuracies
    on the architectures both hold, and that truth's own seed-to-seed tau
    (:func:`seed_noise`)."""
    by_seed = rows_by_seed(json.loads(path.read_text())["rows"])
    first = {h: r["val_accuracy"] for h, r in by_seed[min(by_seed)].items()}
    ranked = rank_columns(columns, first)
    out: dict = {"n_archs": ranked.pop("n"), **ranked}
    pairs = seed_noise(by_seed)["pairs"]
    if pairs:
        out["noise_ceiling_n"] = max(p["n"] for p in pairs)
        out["noise_ceiling_tau"] = statistics.fmean(p["tau"] for p in pairs)
    return out


if __name__ == "__main__":
    main()
