"""What scoring a trained child costs on the CPU: the plain evaluation against the folded,
channels-last copy that ``train_and_evaluate`` scores on the CPU.

    MNAS_DATA=../shared/datasets taskset -c 0 .venv/bin/python bench/eval_cpu.py \\
        --n 8 experiment=fashion_mnist_proxy

For ``--n`` random architectures of the experiment's space (``--seed``): build the child as a
search does, train it ``--steps`` steps with the search's trainer (so that its scores mean
something), then score it on the whole validation split, one thread: ``evaluate`` on the
model itself at ``trainer.eval_batch_size`` images per pass, or on
:func:`mnas.training.trainer.cpu_inference_copy` at ``CPU_CHUNK`` (making the copy is
counted). Each way scores its own, identically trained child (the CPU trains
deterministically), so both are timed as a search child pays them — the first evaluation
after training, its one-time set-up included — in alternating order (``--flip 1``: the other
order). Prints CPU seconds of each, the ratio, and how far the two scores differ (accuracy
must agree to the image, the loss to float rounding); ``--out`` writes the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.arguments import name_of, train_config
from mnas.conf.runner import data_spec_from, model_spec_from
from mnas.conf.validate import validate_search
from mnas.data import get_dataset
from mnas.space import make_space
from mnas.training.trainer import CPU_CHUNK, cpu_inference_copy, evaluate, fit_model

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="random architectures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30, help="training steps before scoring")
    p.add_argument(
        "--flip", type=int, default=0, help="1: the other way first on every architecture"
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("overrides", nargs="*", help="Hydra overrides (default: fashion_mnist_proxy)")
    args = p.parse_args(argv)
    if args.n < 1 or args.steps < 1:
        p.error(f"--n={args.n} and --steps={args.steps} must be >= 1")
    overrides = args.overrides or ["experiment=fashion_mnist_proxy"]
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=overrides)
    validate_search(cfg)
    splits = get_dataset(data_spec_from(cfg))
    model_spec = model_spec_from(cfg, splits)
    train = dataclasses.replace(train_config(cfg.trainer), max_steps=args.steps)
    space = make_space(name_of(cfg.space.name))
    torch.set_num_threads(1)
    x, y = splits.val_x, splits.val_y
    rng = random.Random(args.seed)
    rows = []
    print(f"{len(y)} validation images, {cfg.data.image_size} px, one thread")
    head = ("arch", "plain s", "copy s", "ratio", "acc", "d acc", "d loss")
    print("{:<10} {:>8} {:>8} {:>6} {:>7} {:>6} {:>8}".format(*head))
    for i in range(args.n):
        arch = space.sample(rng)

        def trained(arch=arch, i=i):
            # a fresh, identically trained child for each way of scoring it: each is timed
            # as a search child pays it, the first evaluation after training
            torch.manual_seed(i)
            net = model_spec.build(arch)
            fit_model(net, splits, train)
            return net

        def copied():
            net = trained()
            start = time.thread_time()
            fast = cpu_inference_copy(net)
            out = evaluate(fast, x, y, splits.mean, splits.std, CPU_CHUNK, train.amp)
            return out, time.thread_time() - start

        def plain():
            net = trained()
            start = time.thread_time()
            out = evaluate(net, x, y, splits.mean, splits.std, train.eval_batch_size, train.amp)
            return out, time.thread_time() - start

        order = [plain, copied] if (i + args.flip) % 2 == 0 else [copied, plain]
        got = {fn: fn() for fn in order}
        (acc, loss), t_plain = got[plain]
        (acc2, loss2), t_fast = got[copied]
        row = {
            "hash": arch.hash,
            "plain_cpu_s": t_plain,
            "copy_cpu_s": t_fast,
            "ratio": t_plain / t_fast,
            "accuracy": acc,
            "accuracy_diff": acc2 - acc,
            "loss_diff": loss2 - loss,
        }
        rows.append(row)
        print(
            f"{arch.hash[:8]:<10} {t_plain:>8.2f} {t_fast:>8.2f} {row['ratio']:>6.2f} "
            f"{100 * acc:>7.2f} {100 * row['accuracy_diff']:>6.2f} {row['loss_diff']:>8.1e}",
            flush=True,
        )
    total = sum(r["plain_cpu_s"] for r in rows) / sum(r["copy_cpu_s"] for r in rows)
    print(
        f"total: plain {sum(r['plain_cpu_s'] for r in rows):.1f} CPU s, copy "
        f"{sum(r['copy_cpu_s'] for r in rows):.1f} CPU s: {total:.2f}x; median ratio "
        f"{statistics.median(r['ratio'] for r in rows):.2f}; largest accuracy difference "
        f"{max(abs(r['accuracy_diff']) for r in rows):.4f}, loss "
        f"{max(abs(r['loss_diff']) for r in rows):.1e}"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": "bench/eval_cpu.py " + " ".join(argv or sys.argv[1:])}
        args.out.write_text(json.dumps({**meta, "total_ratio": total, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
