"""Supernet training recipes and scoring settings compared on a *tuning* truth, so the one
that is reported (bench/supernet.py) is chosen without looking at the reported truth.

    MNAS_DATA=../shared/datasets PYTHONPATH=$PWD python bench/supernet_recipes.py \\
        --recipe preset --device cuda --out DIR \\
        --archs bench/data/standalone_fashion_mnist_mbconv_tune.archs.json \\
        --archs bench/data/standalone_fashion_mnist_mbconv.archs.json --random 1000 \\
        experiment=fashion_mnist_proxy space=mnas_mbconv

Trains (or loads) ``DIR/<recipe>.pt`` with the recipe's :class:`SupernetTrainConfig`, then
scores every architecture of each ``--archs`` file (the ``.archs.json`` that
bench/standalone_truth.py writes beside a truth) under every setting of :data:`SCORES`, and
``--random`` more random architectures of the space (seed 11) under the ``cheap`` setting
(training data for an accuracy predictor fitted on supernet scores). Writes
``DIR/<recipe>.scores.json``: the training record and, per setting, per architecture hash,
``[accuracy, loss, seconds]``. Ranking against a truth is done afterwards (``--rank``), on
the tuning truth only; the rule that picks the recipe and setting is fixed in :func:`rank`.

    PYTHONPATH=$PWD python bench/supernet_recipes.py --rank DIR \\
        --truth bench/data/standalone_fashion_mnist_mbconv_tune.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from scipy import stats as sstats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnas.conf import register_configs  # noqa: E402
from mnas.conf.arguments import name_of  # noqa: E402
from mnas.conf.runner import data_spec_from, model_spec_from  # noqa: E402
from mnas.data import get_dataset  # noqa: E402
from mnas.evaluate.supernet import SupernetSettings, load_or_train  # noqa: E402
from mnas.space import make_space  # noqa: E402
from mnas.training.supernet import (  # noqa: E402
    CHEAP_SCORE,
    ScoreConfig,
    SupernetTrainConfig,
    score_subnet,
)

# Fixed before any of them was ranked; every recipe is one random path's worth of steps per
# batch unless it says otherwise, peak lr 0.02 (the step size docs/supernet.md measured).
BASE = SupernetTrainConfig(epochs=4, lr=0.02, subnets_per_step=1, sandwich=False, distill=False)
RECIPES = {
    "preset": BASE,  # experiment=fashion_mnist_supernet
    "long": replace(BASE, epochs=16),
    "lr01": replace(BASE, epochs=16, lr=0.01),
    "fair4": replace(BASE, epochs=8, subnets_per_step=4),
    "sandwich": replace(BASE, epochs=8, subnets_per_step=4, sandwich=True, distill=True),
    "progressive": replace(
        BASE, epochs=16, subnets_per_step=3, sandwich=True, distill=True, schedule="progressive"
    ),
}
SCORES = {
    "default": ScoreConfig(),  # recalibrate 2 x 256, 1,000 validation images
    "batch": ScoreConfig(bn="batch"),
    "cheap": CHEAP_SCORE,
}


def score_main(args, overrides: list[str]) -> int:
    torch.set_num_threads(args.threads)
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("search", overrides=overrides)
    data = data_spec_from(cfg)
    splits = get_dataset(data)
    model = model_spec_from(cfg, splits)
    space = make_space(name_of(cfg.space.name))
    settings = SupernetSettings(train=RECIPES[args.recipe])
    args.out.mkdir(parents=True, exist_ok=True)
    net, record = load_or_train(
        args.out / f"{args.recipe}.pt", space, model, data, settings, args.device
    )
    print(f"{args.recipe}: {record['steps']} steps in {record['seconds']:.0f} s", flush=True)
    archs = {}
    for path in args.archs:
        for t in json.loads(path.read_text())["tokens"]:
            a = space.architecture(t)
            archs[a.hash] = a
    rng = random.Random(11)
    extra = {}
    while len(extra) < args.random:
        a = space.sample(rng)
        extra.setdefault(a.hash, a)
    result = {
        "recipe": args.recipe,
        "train": asdict(settings.train),
        "record": record,
        "device": args.device,
        "random_tokens": {h: list(a.tokens) for h, a in extra.items()},
        "scores": {},
    }
    for name, sc in SCORES.items():
        todo = dict(archs)
        if name == "cheap":
            todo.update(extra)
        rows = {}
        for h, a in todo.items():
            t0 = time.perf_counter()
            acc, loss = score_subnet(net, space.decode(a.tokens), splits, sc)
            rows[h] = [acc, loss, time.perf_counter() - t0]
        result["scores"][name] = rows
        print(f"{args.recipe}/{name}: {len(rows)} scored", flush=True)
        # written after every setting: a run stopped early keeps what it scored
        (args.out / f"{args.recipe}.scores.json").write_text(json.dumps(result))
    return 0


def rank(out: Path, truth_path: Path) -> dict:
    """Kendall's tau of every recipe x setting x (accuracy, -loss) against the first seed's
    rows of ``truth_path``, in the order of the pick: highest tau first, ties to the cheaper
    scoring, then the shorter training (:func:`main` prints it; the first row is the pick).
    Run it on the tuning truth only."""
    rows = json.loads(truth_path.read_text())["rows"]
    first = min(r["seed"] for r in rows)
    truth = {r["hash"]: r["val_accuracy"] for r in rows if r["seed"] == first}
    table = {}
    for f in sorted(out.glob("*.scores.json")):
        res = json.loads(f.read_text())
        for setting, scores in res["scores"].items():
            hs = [h for h in truth if h in scores]
            if len(hs) < 10:
                continue
            t = [truth[h] for h in hs]
            for what, k, sign in (("acc", 0, 1), ("loss", 1, -1)):
                s = [sign * scores[h][k] for h in hs]
                tau = float(sstats.kendalltau(s, t).statistic)
                table[f"{res['recipe']}/{setting}/{what}"] = {
                    "tau": tau,
                    "n": len(hs),
                    "train_seconds": res["record"]["seconds"],
                    "score_seconds": sum(scores[h][2] for h in hs) / len(hs),
                }
    order = sorted(
        table,
        key=lambda k: (
            -table[k]["tau"] if table[k]["tau"] == table[k]["tau"] else math.inf,  # NaN last
            table[k]["score_seconds"],
            table[k]["train_seconds"],
        ),
    )
    return {k: table[k] for k in order}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=sorted(RECIPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path)
    p.add_argument("--archs", type=Path, action="append", default=[])
    p.add_argument("--random", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rank", type=Path, metavar="DIR", help="rank DIR's scores and stop")
    p.add_argument("--truth", type=Path, help="the tuning truth --rank uses")
    args, overrides = p.parse_known_args(argv)
    if args.rank:
        if not args.truth:
            p.error("--rank needs --truth")
        table = rank(args.rank, args.truth)
        for k, v in table.items():
            print(
                f"{k:32s} tau {v['tau']:+.3f} (n {v['n']})  train {v['train_seconds']:.0f} s"
                f"  score {v['score_seconds']:.3f} s"
            )
        return 0
    if not args.recipe or not args.out:
        p.error("--recipe and --out are needed (or --rank)")
    return score_main(args, overrides or ["experiment=fashion_mnist_proxy", "space=mnas_mbconv"])


if __name__ == "__main__":
    raise SystemExit(main())
