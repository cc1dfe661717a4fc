"""Parallel evaluation: throughput of serial vs pool vs Ray, and latency isolation.

1. Throughput. The same N random architectures of the default search (digits proxy at 16 px,
   MobileNetV2 x0.5 skeleton, 2 epochs, one torch thread per trainer) are trained through
   ``serial``, ``pool`` and ``ray`` executors in one run. Each parallel executor runs the batch
   twice: the first pass includes starting its workers and loading the data in each ("cold"),
   the second is the steady state of a search ("warm"). Reported: architectures per minute
   and the ratio to serial, and whether every accuracy equals the serial one.
2. Latency isolation. The same architectures timed with ONNX Runtime (the search's
   ``latency=measured`` settings, no cache) alone, alone again (the noise floor), while
   ``--workers`` background processes train children (what overlapping timing with training
   would measure), and in the phase-based flow of ``TrainedEvaluator`` with a pool executor
   (timing while the pool's workers wait between batches). Reported: per-architecture median
   and the relative difference to the first alone pass.

Prints figures and the load average; asserts nothing about speed.

    .venv/bin/python bench/parallel.py --archs 8 --workers 2
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.runner import build_search
from mnas.evaluate.executors import PoolExecutor, make_executor
from mnas.evaluate.trained import TrainedEvaluator, TrainTask, train_child

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def train_forever(tasks: list[TrainTask], stop) -> None:
    """Background trainer: children one after another until ``stop`` is set."""
    k = 0
    while not stop.is_set():
        train_child(tasks[k % len(tasks)])
        k += 1


def throughput(name: str, tasks: list[TrainTask], workers: int, passes: int) -> tuple:
    """(architectures per minute of each pass, accuracies of the last pass by hash)."""
    kwargs = {} if name == "serial" else {"workers": workers, "threads_per_worker": 1}
    start = time.perf_counter()
    executor = make_executor(name, **kwargs)
    setup = time.perf_counter() - start
    rates, acc = [], {}
    try:
        for _ in range(passes):
            start = time.perf_counter()
            executor.map(
                train_child,
                tasks,
                lambda k, out: acc.__setitem__(tasks[k].arch.hash, out.accuracy),
            )
            rates.append(60 * len(tasks) / (time.perf_counter() - start))
    finally:
        executor.close()
    return setup, rates, acc


def time_all(latency, archs) -> list[float]:
    return [latency.measure(a).median_ms for a in archs]


def rel(a: list[float], b: list[float]) -> list[float]:
    return [100 * (y / x - 1) for x, y in zip(a, b, strict=True)]


def summary(diffs: list[float]) -> str:
    med = statistics.median(abs(d) for d in diffs)
    worst = max(diffs, key=abs)
    return f"median |diff| {med:5.2f}%, worst {worst:+6.2f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", type=int, default=8, help="architectures per batch")
    p.add_argument("--workers", type=int, default=2, help="pool and Ray workers")
    p.add_argument("--seed", type=int, default=0, help="seed of the random architectures")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument(
        "--no-reference", action="store_true", help="time without drift correction (raw runs)"
    )
    args = p.parse_args()
    overrides = ["latency.cache=null", "tensorboard=false"]
    if args.no_reference:
        overrides.append("latency.reference=false")

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    search = build_search(cfg, tempfile.mkdtemp(prefix="mnas-bench-parallel-"))
    ev: TrainedEvaluator = search.evaluator
    rng = random.Random(args.seed)
    archs = [search.space.sample(rng) for _ in range(args.archs)]
    tasks = [TrainTask(a, ev.model, ev.data, ev.train, ev.input_size) for a in archs]
    print(
        f"{len(archs)} random architectures; data {cfg.data.name} {cfg.data.image_size}px, "
        f"width {cfg.model.width_mult}, {cfg.trainer.epochs} epochs, trainer.threads "
        f"{cfg.trainer.threads}; {os.cpu_count()} CPUs; {load()}"
    )

    if not args.skip_throughput:
        print("\n## Throughput (architectures per minute)")
        _, rates, serial_acc = throughput("serial", tasks, args.workers, passes=1)
        serial = rates[0]
        print(f"serial     : {serial:6.2f} arch/min                      [{load()}]")
        names = ["pool"]
        try:
            import ray  # noqa: F401

            names.append("ray")
        except ImportError:
            print('ray        : not installed (pip install "mnas[ray]")')
        for name in names:
            setup, (cold, warm), acc = throughput(name, tasks, args.workers, passes=2)
            same = acc.keys() == serial_acc.keys() and all(
                acc[h] == serial_acc[h] or (math.isnan(acc[h]) and math.isnan(serial_acc[h]))
                for h in acc
            )
            print(
                f"{name}({args.workers})    : {warm:6.2f} arch/min warm = {warm / serial:4.2f}x "
                f"serial; cold {cold:6.2f} ({cold / serial:4.2f}x), setup {setup:4.1f}s; "
                f"accuracies identical to serial: {same}   [{load()}]"
            )

    if not args.skip_latency:
        from mnas.conf.arguments import latency_settings
        from mnas.latency import make_latency_evaluator

        mode = "raw" if args.no_reference else "drift-corrected"
        print(f"\n## Latency isolation ({mode} ONNX Runtime median per architecture, ms)")
        lat_cfg = compose_latency(cfg, overrides)
        latency = make_latency_evaluator(
            latency_settings(lat_cfg.latency),
            input_size=cfg.data.image_size,
            in_channels=ev.model.in_channels,
            num_classes=ev.model.num_classes,
            width_mult=lat_cfg.model.width_mult,
            stem_stride=lat_cfg.model.stem_stride,
        )
        time_all(latency, archs[:1])  # warm ORT itself up
        alone = time_all(latency, archs)
        print(f"alone            : {' '.join(f'{x:.4f}' for x in alone)}   [{load()}]")
        again = time_all(latency, archs)
        print(f"alone again      : {summary(rel(alone, again))}   [{load()}]")

        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        trainers = [
            ctx.Process(target=train_forever, args=(tasks[i:] + tasks[:i], stop))
            for i in range(args.workers)
        ]
        for t in trainers:
            t.start()
        time.sleep(15)  # let them import, load the data and start training
        busy = time_all(latency, archs)
        print(f"while training   : {summary(rel(alone, busy))}   [{load()}]")
        stop.set()
        for t in trainers:
            t.join()

        pool = PoolExecutor(workers=args.workers, threads_per_worker=1)
        phased = TrainedEvaluator(latency, pool, ev.model, ev.data, ev.train, ev.input_size)
        try:
            phased.evaluate(archs, lambda r: None)  # start the workers, load the data
            results = phased.evaluate(archs, lambda r: None)
        finally:
            phased.close()
        by_hash = {r.arch.hash: r.latency_ms for r in results}
        phase = [by_hash[a.hash] for a in archs]
        print(f"phase-based pool : {summary(rel(alone, phase))}   [{load()}]")


def compose_latency(cfg, overrides: list[str]):
    """The search config with the measured latency group (the default search uses it)."""
    if cfg.latency.kind == "measured":
        return cfg
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            config_name="search",
            overrides=["latency=measured", *overrides],
        )


if __name__ == "__main__":
    main()
