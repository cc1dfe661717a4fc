"""Does a short training of each sub-network rank the stand-alone truth? Inherited supernet
weights fine-tuned for K steps, against the same K steps from the network's own initial
weights.

    MNAS_DATA=../shared/datasets PYTHONPATH=$PWD python bench/supernet_finetune.py \\
        --out DIR --supernet-dir SDIR --device cuda --per-gpu 12 \\
        --epochs 4 --subnets 1 --no-sandwich --lr 0.02 space=mnas_mbconv

For every architecture of the stand-alone truth (``bench/data/standalone_fashion_mnist_mbconv
.json``) and every configuration:

- ``finetune`` (``--finetune-steps``, ``--finetune-lrs``): the sub-network extracted from the
  supernet in ``SDIR/supernet_<dataset><suffix>.pt`` (trained there first if absent, with the
  training arguments, as ``bench/supernet.py`` does), trained ``K`` steps by the project's
  trainer (the search's proxy recipe: batch, momentum, weight decay, cosine from the peak
  ``lr`` to zero over the K steps) at learning rate ``lr``; ``K = 0`` is the inherited weights
  alone;
- ``scratch`` (``--scratch-steps``): the same network from its own initial weights (drawn as a
  search child draws them: ``seed ^ hash``), the same trainer at the proxy's own learning rate
  for ``K`` steps: a truncated proxy training. The proxy itself is 313 steps, so ``K = 313``
  is one more seed of the truth (``--seed``, not one of the truth's).

Every network is then scored as a search child is (BN statistics re-estimated on 8 training
batches, top-1 on the whole validation split), and each configuration's scores are ranked
against the truth: ``DIR/finetune.json`` holds Kendall's tau and Spearman against the mean of
the truth's complete seeds (the headline of ``bench/supernet.py``), against seed 0 and against
the mean of every seed where an architecture has them all; the seconds per network on the
device used; and tau between the two arms at each K. Rows go to ``DIR/finetune.partial.jsonl``
as they come; a re-run skips them (``--report-only`` writes the JSON from them and trains
nothing). Configurations run cheapest first, each over every architecture, and none starts
after ``--budget-s``, so a stopped run reports whole configurations.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy import stats as sstats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from supernet import (  # noqa: E402
    EXPERIMENTS,
    add_training_args,
    against_seeds,
    rows_by_seed,
    seed_noise,
    settings_from,
    setup,
    space_and_truth,
    tau,
)

from mnas.conf.arguments import train_config  # noqa: E402
from mnas.data.spec import DataSpec, get_dataset  # noqa: E402
from mnas.evaluate.executors import make_executor  # noqa: E402
from mnas.evaluate.supernet import SupernetSettings, load_or_train  # noqa: E402
from mnas.evaluate.trained import ModelSpec  # noqa: E402
from mnas.space import Architecture, make_space, parse_blocks  # noqa: E402
from mnas.training.supernet import ScoreConfig, score_network  # noqa: E402
from mnas.training.trainer import TrainConfig, train_and_evaluate  # noqa: E402

ARMS = ("finetune", "scratch")


@dataclasses.dataclass(frozen=True)
class Job:
    """One network to train and score: an architecture under one configuration."""

    hash: str
    blocks: tuple[str, ...]
    arm: str
    steps: int
    lr: float
    train: TrainConfig
    model: ModelSpec
    data: DataSpec
    space: str
    checkpoint: str
    settings: SupernetSettings
    device: str

    @property
    def config(self) -> str:
        return config_name(self.arm, self.steps, self.lr)


def config_name(arm: str, steps: int, lr: float) -> str:
    return f"{arm} K={steps} lr={lr:g}"


_SUPERNETS: dict[str, object] = {}


def run_job(job: Job) -> dict:
    """Train and score one network (in a worker); the row of the result."""
    start = time.perf_counter()
    splits = get_dataset(job.data)
    specs = parse_blocks(list(job.blocks))
    if job.arm == "finetune":
        net = _SUPERNETS.get(job.checkpoint)
        if net is None:
            net, _ = load_or_train(
                job.checkpoint, make_space(job.space), job.model, job.data, job.settings, "cpu"
            )
            _SUPERNETS[job.checkpoint] = net
        model = net.extract(specs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(job.train.seed ^ int(job.hash[:8], 16))
            model = job.model.build(Architecture.from_blocks(list(job.blocks)))
    config = dataclasses.replace(job.train, max_steps=max(1, job.steps), lr=job.lr)
    if job.steps > 0:
        result = train_and_evaluate(model, splits, config, eval_split="val", device=job.device)
        accuracy, loss, diverged = result.accuracy, result.eval_loss, result.diverged
        trained = result.steps
    else:  # the inherited weights alone, scored as the trainer scores a child
        model.to(job.device)
        score = ScoreConfig(
            bn_batches=config.bn_recalibrate_batches,
            bn_batch_size=config.batch_size,
            val_images=0,
            eval_batch_size=config.eval_batch_size,
            seed=config.seed,
            amp=config.amp,
        )
        accuracy, loss = score_network(model, splits, score)
        diverged, trained = not math.isfinite(loss), 0
    return job_row(job, accuracy, loss, diverged, time.perf_counter() - start, trained)


def job_row(
    job: Job,
    accuracy: float,
    loss: float,
    diverged: bool,
    seconds: float,
    trained: int,
    reason: str | None = None,
) -> dict:
    """A network's row of ``finetune.partial.jsonl``."""
    row = {
        "hash": job.hash,
        "config": job.config,
        "arm": job.arm,
        "steps": job.steps,
        "lr": job.lr,
        "seed": job.train.seed,
        "trained_steps": trained,
        "val_accuracy": accuracy,
        "val_loss": loss,
        "diverged": diverged,
        "seconds": seconds,
        "device": job.device,
    }
    if reason is not None:
        row["reason"] = reason
    return row


def ints(text: str) -> list[int]:
    return [] if text == "none" else [int(v) for v in text.split(",")]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(EXPERIMENTS), default="fashion_mnist")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--supernet-dir",
        type=Path,
        default=None,
        help="where the supernet checkpoint lies (bench/supernet.py's --out; default --out)",
    )
    p.add_argument("--truth", type=Path, default=None)
    add_training_args(p)
    p.add_argument("--finetune-steps", type=ints, default="0,30,100", help="K list, or none")
    p.add_argument(
        "--finetune-lrs",
        type=floats,
        default="0.02",
        help="peak rates of the fine-tune (default: the supernet recipe's own peak rate)",
    )
    p.add_argument("--scratch-steps", type=ints, default="30,100,313", help="K list, or none")
    p.add_argument(
        "--train-seed",
        type=int,
        default=10,
        help="trainer seed of every network (batches; the scratch arm's initial weights): "
        "not one of the truth's seeds, so its noise is not the truth's",
    )
    p.add_argument("--limit", type=int, default=0, help="the first N architectures by hash")
    p.add_argument("--device", default="cpu")
    p.add_argument("--per-gpu", type=int, default=12, help="networks trained at once per GPU")
    p.add_argument("--workers", type=int, default=1, help="CPU workers (--device cpu)")
    p.add_argument("--budget-s", type=float, default=math.inf, help="start no config after")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the search config")
    args = p.parse_args(argv)
    for k in [*args.finetune_steps, *args.scratch_steps]:
        if k < 0:
            p.error(f"steps {k} must be >= 0")
    if any(k == 0 for k in args.scratch_steps):
        p.error("--scratch-steps 0 would score untrained networks; use K >= 1")
    for lr in args.finetune_lrs:
        if not lr > 0:
            p.error(f"--finetune-lrs {lr} must be > 0")
    return args


def read_rows(path: Path) -> dict[tuple[str, str], dict]:
    done: dict[tuple[str, str], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run: that network is trained again
            done[(row["config"], row["hash"])] = row
    return done


def report(rows: list[dict], by_seed: dict, hashes: list[str]) -> dict:
    """Every configuration's scores ranked against the truth (a dict for the JSON)."""
    noise = seed_noise(by_seed)
    truth = noise["mean"]
    configs: dict[str, dict[str, dict]] = {}
    for r in rows:
        configs.setdefault(r["config"], {})[r["hash"]] = r
    out: dict = {
        "truth_seeds": noise["truth_seeds"],
        "noise_ceiling_tau": noise["noise_ceiling_tau"],
        "ceiling_vs_truth_estimate": noise["ceiling_vs_truth_estimate"],
        "configs": {},
    }
    columns = {}
    for name, got in configs.items():
        ok = [h for h in hashes if h in got and not got[h]["diverged"]]
        first = got[ok[0]] if ok else next(iter(got.values()))
        entry = {
            "arm": first["arm"],
            "steps": first["steps"],
            "lr": first["lr"],
            "n": len(ok),
            "diverged": sum(1 for r in got.values() if r["diverged"]),
            "seconds_per_network": statistics.fmean(r["seconds"] for r in got.values()),
            "device": first["device"],
        }
        if len(ok) >= 2:
            acc = [got[h]["val_accuracy"] for h in ok]
            want = [truth[h] for h in ok]
            entry["kendall_tau"] = tau(acc, want)
            entry["kendall_tau_neg_loss"] = tau([-got[h]["val_loss"] for h in ok], want)
            entry["spearman"] = float(sstats.spearmanr(acc, want).statistic)
            entry["mean_accuracy"] = statistics.fmean(acc)
            columns[name] = {h: got[h]["val_accuracy"] for h in ok}
        out["configs"][name] = entry
    out["against"] = against_seeds(by_seed, columns)
    # the two arms at the same K: how alike the inherited start makes them
    pairs = {}
    for a, b in itertools.combinations(sorted(columns), 2):
        ea, eb = out["configs"][a], out["configs"][b]
        if ea["steps"] == eb["steps"] or {ea["arm"], eb["arm"]} == {"finetune"}:
            common = [h for h in columns[a] if h in columns[b]]
            if len(common) >= 2:
                pairs[f"{a} | {b}"] = tau(
                    [columns[a][h] for h in common], [columns[b][h] for h in common]
                )
    out["tau_between"] = pairs
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, data, splits, model = setup(args)
    space, suffix, truth_path = space_and_truth(args, cfg)
    saved_truth = json.loads(truth_path.read_text())
    if saved_truth["meta"].get("space", "mnas") != space.name:
        raise SystemExit(f"{truth_path} holds another space than the set-up's {space.name!r}")
    by_seed = rows_by_seed(saved_truth["rows"])
    seed0 = by_seed[min(by_seed)]
    hashes = sorted(seed0)[: args.limit or None]
    keep = set(hashes)
    by_seed = {s: {h: r for h, r in rows.items() if h in keep} for s, rows in by_seed.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / "finetune.partial.jsonl"
    done = read_rows(partial)

    settings = settings_from(args)
    ckpt = (args.supernet_dir or args.out) / f"supernet_{args.dataset}{suffix}.pt"
    train = dataclasses.replace(train_config(cfg.trainer), seed=args.train_seed)
    # K = 0 is the inherited weights whatever the rate: scored once
    plan = [("finetune", 0, args.finetune_lrs[0])] if 0 in args.finetune_steps else []
    plan += [("finetune", k, lr) for lr in args.finetune_lrs for k in args.finetune_steps if k]
    plan += [("scratch", k, train.lr) for k in args.scratch_steps]
    plan.sort(key=lambda c: (c[1], c[0], c[2]))  # cheapest first
    # wall clock of each configuration's networks, all at once on the device: the throughput
    walls_path = args.out / "finetune.walls.json"
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    t0 = time.perf_counter()
    if not args.report_only:
        if any(arm == "finetune" for arm, _, _ in plan):
            _, record = load_or_train(ckpt, space, model, data, settings, args.device)
            print(f"supernet {ckpt}: {record['steps']} steps, final loss {record['loss']:.3f}")
        if args.device == "cpu":
            ex = make_executor("pool", workers=args.workers, threads_per_worker=1, device="cpu")
        else:
            ex = make_executor("pool", device=args.device, gpus_per_worker=1 / args.per_gpu)
        try:
            with partial.open("a") as f:
                for arm, k, lr in plan:
                    if time.perf_counter() - t0 > args.budget_s:
                        print(f"budget of {args.budget_s:g} s spent: {arm} K={k} not started")
                        break
                    name = config_name(arm, k, lr)
                    jobs = [
                        Job(
                            h,
                            tuple(seed0[h]["blocks"]),
                            arm,
                            k,
                            lr,
                            train,
                            model,
                            data,
                            space.name,
                            str(ckpt),
                            settings,
                            ex.device,
                        )
                        for h in hashes
                        if (name, h) not in done
                    ]
                    started = time.perf_counter()

                    def finished(i: int, row, jobs=jobs) -> None:
                        if not isinstance(row, dict):  # a worker failure: kept with its reason
                            row = job_row(jobs[i], math.nan, math.nan, True, math.nan, 0, str(row))
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                        done[(row["config"], row["hash"])] = row

                    ex.map(run_job, jobs, finished)
                    if jobs:
                        walls[name] = {"n": len(jobs), "seconds": time.perf_counter() - started}
                        walls_path.write_text(json.dumps(walls, indent=1) + "\n")
                    print(
                        f"{name}: {len(jobs)} networks in {time.perf_counter() - started:.0f} s "
                        f"[{time.perf_counter() - t0:.0f} s]",
                        flush=True,
                    )
        finally:
            ex.close()

    rows = [r for (_, h), r in done.items() if h in keep]
    result = {
        "command": "bench/supernet_finetune.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "supernet": str(ckpt.name),
        "trainer": dataclasses.asdict(train),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "n_archs": len(hashes),
        **report(rows, by_seed, hashes),
        "wall_per_config": walls,
    }
    (args.out / "finetune.json").write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    return 0


def print_table(result: dict) -> None:
    truth = result["truth_seeds"]
    print(
        f"\n{result['n_archs']} architectures; truth: mean of seeds {truth}; "
        f"noise-free ceiling ~{result['ceiling_vs_truth_estimate'] or float('nan'):.2f}"
    )
    print(f"{'configuration':<28} {'n':>4} {'tau':>7} {'-loss':>7} {'rho':>7} {'acc':>6} {'s':>6}")
    for name, e in sorted(
        result["configs"].items(), key=lambda kv: (kv[1]["arm"], kv[1]["lr"], kv[1]["steps"])
    ):
        if "kendall_tau" not in e:
            print(f"{name:<28} {e['n']:>4}  (too few)")
            continue
        print(
            f"{name:<28} {e['n']:>4} {e['kendall_tau']:>7.3f} {e['kendall_tau_neg_loss']:>7.3f} "
            f"{e['spearman']:>7.3f} {100 * e['mean_accuracy']:>6.1f} "
            f"{e['seconds_per_network']:>6.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
