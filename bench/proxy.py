"""Proxy-task figures: validation accuracy and seconds per child at the search's budget.

Composes the real search config (``conf/search.yaml`` plus the experiment given), then
trains MobileNetV2 (the space's baseline) at each width through the same code a search
uses for a child (:func:`mnas.evaluate.trained.train_child`), one thread, and prints a
table. Asserts nothing; the figures vary with load on the machine.

    .venv/bin/python bench/proxy.py                                   # digits_quick
    MNAS_DATA=../shared/datasets .venv/bin/python bench/proxy.py \\
        --experiment fashion_mnist_proxy
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.arguments import train_config
from mnas.conf.runner import data_spec_from
from mnas.conf.validate import validate_search
from mnas.data import get_dataset
from mnas.evaluate.trained import ModelSpec, TrainTask, train_child
from mnas.space import MnasSpace

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="digits_quick")
    p.add_argument("--widths", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--repeats", type=int, default=2, help="trainings per width (seconds: median)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. data.image_size=16")
    args = p.parse_args()

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[f"experiment={args.experiment}", *args.overrides])
    validate_search(cfg)
    data = data_spec_from(cfg)
    splits = get_dataset(data)
    train = train_config(cfg.trainer)
    space = MnasSpace()
    arch = space.architecture(space.baseline_tokens())
    print(
        f"{args.experiment}: {cfg.data.name} {cfg.data.image_size}px, "
        f"{len(splits.train_y)} train / {len(splits.val_y)} val images, "
        f"{train.epochs:g} epochs at batch {train.batch_size}, {train.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'model':<22} {'val acc %':>10} {'s / child':>10}  (runs)")
    for width in args.widths:
        model = ModelSpec(
            num_classes=splits.num_classes,
            in_channels=splits.in_channels,
            width_mult=width,
            stem_stride=cfg.model.stem_stride,
            dropout=cfg.model.dropout,
            bn_momentum=cfg.model.bn_momentum,
        )
        task = TrainTask(arch, model, data, train, cfg.data.image_size)
        outcomes = [train_child(task) for _ in range(args.repeats)]
        secs = [o.seconds for o in outcomes]
        accs = {round(100 * o.accuracy, 2) for o in outcomes}
        print(
            f"{'MobileNetV2 x' + format(width, 'g'):<22} "
            f"{'/'.join(str(a) for a in sorted(accs)):>10} {statistics.median(secs):>10.2f}"
            f"  ({', '.join(f'{s:.2f}' for s in secs)}; status {outcomes[0].status})"
        )


if __name__ == "__main__":
    main()
