"""Images per second of mnas.training against a bare hand-written PyTorch loop.

Both train the same model (same initial weights) on the same data at the same batch size and
step count; runs are interleaved (bare, trainer, bare, trainer, ...) so that load from other
processes hits both alike. The bare loop pre-normalises the whole training set to float once and
does nothing but forward, loss, backward and step. Reported: median images/second of each, the
trainer's overhead, and the cost of the evaluation extras (BN recalibration + validation pass)
that ``train_and_evaluate`` adds after training. Asserts nothing about speed.

    .venv/bin/python bench/trainer.py --arch mobilenetv2 --width 0.5 --image-size 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mnas.data import load_dataset
from mnas.nn import build_model
from mnas.training import TrainConfig, evaluate, fit_model, recalibrate_bn


def bare_loop(model, x, y, steps: int, batch: int, lr: float, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    model.train()
    start = time.perf_counter()
    done = 0
    while done < steps:
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y) - batch + 1, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default="mobilenetv2")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=36)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-size", type=int, default=None)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, image_size=args.image_size, train_size=args.train_size)
    torch.manual_seed(0)
    model = build_model(
        args.arch,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        width_mult=args.width,
        stem_stride=1,
    )
    init = {k: v.clone() for k, v in model.state_dict().items()}
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x_float = ((data.train_x.float() / 255 - mean) / std).contiguous()
    fit_cfg = TrainConfig(
        max_steps=args.steps,
        epochs=1e9,
        batch_size=args.batch,
        lr=0.01,
        weight_decay=0.0,
        bn_recalibrate=False,
        threads=args.threads,
    )
    images = args.steps * args.batch
    bare, fit, full = [], [], []
    for r in range(args.repeats + 1):  # the first round warms up and is dropped
        model.load_state_dict(init)
        t_bare = bare_loop(model, x_float, data.train_y, args.steps, args.batch, 0.01, r)
        model.load_state_dict(init)
        start = time.perf_counter()
        fit_model(model, data, fit_cfg)
        t_fit = time.perf_counter() - start
        start = time.perf_counter()
        recalibrate_bn(model, data.train_x, data.mean, data.std, args.batch, 8)
        t_recal = time.perf_counter() - start
        start = time.perf_counter()
        evaluate(model, data.val_x, data.val_y, data.mean, data.std)
        t_eval = time.perf_counter() - start
        if r:
            bare.append(images / t_bare)
            fit.append(images / t_fit)
            full.append((t_fit, t_recal, t_eval))
    b, f = statistics.median(bare), statistics.median(fit)
    print(
        f"{args.dataset} {args.image_size}px {args.arch} x{args.width}, batch {args.batch}, "
        f"{args.steps} steps, {args.threads} thread(s), {args.repeats} interleaved repeats"
    )
    print(f"bare loop        {b:8.1f} images/s  (runs: {', '.join(f'{v:.0f}' for v in bare)})")
    print(f"mnas.training fit {f:8.1f} images/s  (runs: {', '.join(f'{v:.0f}' for v in fit)})")
    print(f"trainer/bare     {f / b:8.3f}  -> overhead {100 * (b / f - 1):+.1f}%")
    t_fit, t_recal, t_eval = (statistics.median(t[i] for t in full) for i in range(3))
    print(
        f"per child: fit {t_fit:.2f} s, BN recalibration (8 batches) {t_recal:.2f} s, "
        f"{len(data.val_y)}-image validation pass {t_eval:.2f} s"
    )


if __name__ == "__main__":
    main()
