"""A short check of the supernet on a GPU: same networks as on the CPU, training and scoring
speed there.

    MNAS_DATA=/path/to/datasets PYTHONPATH=$PWD python bench/supernet_gpu.py --device cuda

1. A sub-network on the device gives the logits of the stand-alone network built from the
   same architecture (extracted weights, batch statistics), within bf16/float32 tolerance.
2. ``--steps`` supernet steps on Fashion-MNIST 10k (digits without ``MNAS_DATA``) at the
   ``fashion_mnist_proxy`` set-up: seconds per step.
3. ``--archs`` random architectures scored (BN re-estimation + validation subset): seconds
   per architecture and architectures per hour, without and with the training amortised.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time

import torch

from mnas.data import DataSpec, get_dataset
from mnas.nn.supernet import Supernet
from mnas.space import MnasSpace
from mnas.training.supernet import ScoreConfig, SupernetTrainConfig, score_subnet, train_supernet


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--subnets", type=int, default=4)
    p.add_argument("--archs", type=int, default=200)
    p.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = p.parse_args()
    root = os.environ.get("MNAS_DATA")
    spec = (
        DataSpec("fashion_mnist", root, 28, 10000, 5000, 0, 0)
        if root
        else DataSpec("digits", None, 16, test_size=0)
    )
    data = get_dataset(spec)
    space = MnasSpace()
    torch.manual_seed(0)
    net = Supernet(space, data.num_classes, data.in_channels, 0.5, 1, dropout=0.0)
    net.to(args.device)
    rng = random.Random(0)
    x = torch.randn(32, data.in_channels, spec.image_size, spec.image_size, device=args.device)
    worst = 0.0
    for _ in range(5):
        specs = space.decode(space.sample(rng).tokens)
        sub = net.extract(specs).train()
        with torch.no_grad():
            worst = max(worst, (net(x, specs) - sub(x)).abs().max().item())
    print(f"sub-network vs stand-alone network on {args.device}: max |logit diff| {worst:.2e}")

    steps_per_epoch = len(data.train_y) / 64
    cfg = SupernetTrainConfig(
        epochs=args.steps / steps_per_epoch,
        subnets_per_step=args.subnets,
        sandwich=args.subnets >= 2,
        distill=args.subnets >= 2,
    )
    result = train_supernet(net, data, cfg)
    print(
        f"training: {result.steps} steps x {args.subnets} sub-networks in {result.seconds:.1f} s "
        f"({result.seconds / max(1, result.steps):.3f} s/step), loss {result.loss:.3f}"
    )
    score = ScoreConfig()
    archs = [space.decode(space.sample(rng).tokens) for _ in range(args.archs)]
    score_subnet(net, archs[0], data, score)  # cuDNN picks its kernels once
    sync(args.device)
    start = time.perf_counter()
    accs = [score_subnet(net, s, data, score)[0] for s in archs]
    sync(args.device)
    per = (time.perf_counter() - start) / len(archs)
    figures = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "max_logit_diff": worst,
        "train_seconds_per_step": result.seconds / max(1, result.steps),
        "train_seconds": result.seconds,
        "score_seconds_per_arch": per,
        "archs_per_hour_scoring_only": 3600 / per,
        "archs_per_hour_amortised_10000": 10000 / (result.seconds + 10000 * per) * 3600,
        "mean_score": sum(accs) / len(accs),
        "train": dataclasses.asdict(cfg),
        "score": dataclasses.asdict(score),
        "data": dataclasses.asdict(spec),
    }
    print(
        f"scoring: {per * 1000:.1f} ms per architecture, {3600 / per:,.0f} per hour; "
        f"amortised over 10,000: {figures['archs_per_hour_amortised_10000']:,.0f} per hour"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
