"""Which decisions of the MnasNet space can share weights? Training-loss curves of the supernet
when only some decisions vary between steps (docs/results/supernet-notebook.md, "Why it does
not learn").

    PYTHONPATH=$PWD python bench/supernet_sharing.py --mode decisions --steps 100
    PYTHONPATH=$PWD python bench/supernet_sharing.py --mode progressive --steps 150
    PYTHONPATH=$PWD python bench/supernet_sharing.py --mode spaces --steps 400

``decisions``: one run per row; the decisions named in the row are drawn at random for every
block at every step, the others stay at one fixed random architecture. ``progressive``: one
run that starts from the largest network and opens the decisions stage by stage
(once-for-all's order: kernel and SE, then layers and filters, then the conv op, then the
skip op), ``--steps`` per stage, and at the end scores ``--probe`` random sub-networks of the
full space on the validation split (BN re-estimated, as the search scores a child).
``spaces``: one run per (space, learning rate) of :data:`SPACE_ROWS` with every decision of
that space drawn at random at every step, then ``--probe`` random sub-networks of it scored
the same way: does the space share weights at all, and at which step size.

One path per step, batch 64, SGD with Nesterov momentum, no sandwich rule: the point is
whether shared weights serve several paths at all. Prints an exponential average (0.95) of
the training loss; chance is ln(classes).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.runner import data_spec_from, model_spec_from
from mnas.data import get_dataset
from mnas.nn.supernet import Supernet, largest_specs
from mnas.space import MnasSpace, make_space
from mnas.training.batches import Normalizer
from mnas.training.supernet import ScoreConfig, probe_subnets

CONF = Path(__file__).resolve().parents[1] / "conf"
ROWS = [
    [],
    ["kernel"],
    ["se_ratio"],
    ["layers"],
    ["filters"],
    ["skip"],
    ["conv_op"],
    ["kernel", "se_ratio", "layers", "filters"],
    ["kernel", "se_ratio", "layers", "filters", "skip", "conv_op"],
]
STAGES = [["kernel", "se_ratio"], ["layers", "filters"], ["conv_op"], ["skip"]]
SPACE_ROWS = [
    ("mnas", 0.01),
    ("mnas_mbconv", 0.05),
    ("mnas_mbconv", 0.01),
    ("mnas_mbconv", 0.003),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("decisions", "progressive", "spaces"), default="decisions")
    p.add_argument("--experiment", default="digits_quick", help="conf/experiment/ name")
    p.add_argument("--steps", type=int, default=100, help="steps per row (or per stage)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--probe", type=int, default=12, help="sub-networks scored at the end")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


class Run:
    def __init__(self, args, start_tokens: list[int], space: str = "mnas") -> None:
        register_configs()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("search", overrides=[f"experiment={args.experiment}"])
        self.splits = get_dataset(data_spec_from(cfg))
        model = model_spec_from(cfg, self.splits)
        self.space = make_space(space)
        torch.manual_seed(0)
        self.net = Supernet(
            self.space, model.num_classes, model.in_channels, model.width_mult, model.stem_stride
        )
        self.norm = Normalizer(self.splits.mean, self.splits.std, torch.device("cpu"))
        self.opt = torch.optim.SGD(
            self.net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=4e-5
        )
        self.rng = random.Random(0)
        self.gen = torch.Generator().manual_seed(0)
        self.base = start_tokens
        self.chance = math.log(model.num_classes)

    def train(self, varying: set[str], steps: int) -> list[float]:
        names, k = self.space.DECISION_NAMES, len(self.space.DECISION_NAMES)
        x_all, y_all = self.splits.train_x, self.splits.train_y
        ema, curve = None, []
        for _ in range(steps):
            tokens = list(self.base)
            for i, d in enumerate(self.space.decisions):
                if names[i % k] in varying:
                    tokens[i] = self.rng.randrange(len(d.choices))
            idx = torch.randint(len(y_all), (64,), generator=self.gen)
            self.opt.zero_grad(set_to_none=True)
            logits = self.net(self.norm(x_all[idx]), self.space.decode(tuple(tokens)))
            loss = F.cross_entropy(logits, y_all[idx])
            loss.backward()
            self.opt.step()
            ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
            curve.append(ema)
        return curve


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    space = MnasSpace()
    start = time.perf_counter()
    if args.mode == "decisions":
        fixed = list(space.sample(random.Random(0)).tokens)
        marks = sorted({min(50, args.steps), args.steps})
        print("| what varies between steps | " + " | ".join(f"loss @{m}" for m in marks) + " |")
        print("|---|" + "---|" * len(marks))
        for row in ROWS:
            run = Run(args, fixed)
            curve = run.train(set(row), args.steps)
            label = ", ".join(row) if row else "nothing (one fixed path)"
            print(f"| {label} | " + " | ".join(f"{curve[m - 1]:.2f}" for m in marks) + " |")
        print(f"chance {run.chance:.2f}; {time.perf_counter() - start:.0f} s")
        return
    if args.mode == "spaces":
        n = args.steps
        print(f"| space | lr | loss @100 | loss @{n} | random sub-networks after {n} steps |")
        print("|---|---|---|---|---|")
        for name, lr in SPACE_ROWS:
            args.lr = lr
            sub = make_space(name)
            run = Run(args, list(sub.sample(random.Random(0)).tokens), name)
            curve = run.train(set(sub.DECISION_NAMES), args.steps)
            run.net.eval()
            accs = probe_subnets(
                run.net, run.splits, ScoreConfig(val_images=0), n=args.probe, seed=123
            )
            print(
                f"| {name} | {lr} | {curve[min(100, args.steps) - 1]:.2f} | {curve[-1]:.2f} | "
                f"{min(accs):.1%}-{max(accs):.1%} (mean {sum(accs) / len(accs):.1%}) |",
                flush=True,
            )
        print(
            f"chance {run.chance:.2f} / {1 / run.net.setup['num_classes']:.1%}; "
            f"{time.perf_counter() - start:.0f} s"
        )
        return
    largest = list(space.encode(largest_specs(space)))
    run = Run(args, largest)
    opened: set[str] = set()
    print(f"| stage | open decisions | loss after {args.steps} steps |")
    print("|---|---|---|")
    for i, stage in enumerate([[], *STAGES]):
        opened |= set(stage)
        curve = run.train(opened, args.steps)
        print(
            f"| {i} | {', '.join(sorted(opened)) or 'none (largest network)'} | {curve[-1]:.2f} |"
        )
    run.net.eval()
    accs = probe_subnets(run.net, run.splits, ScoreConfig(val_images=0), n=args.probe, seed=123)
    print(
        f"{args.probe} random sub-networks, validation accuracy: "
        + ", ".join(f"{a:.3f}" for a in accs)
        + f" (chance {1 / run.net.setup['num_classes']:.3f}); "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
