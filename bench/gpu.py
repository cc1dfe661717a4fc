"""Search children per hour on the CPU and on a GPU, and their accuracy on both, in one run.

    .venv/bin/python bench/gpu.py                     # any machine; the GPU part needs CUDA
    .venv/bin/python bench/gpu.py --json gpu.json --override experiment=fashion_mnist_proxy

A fixed set of 8 architectures (the MnasNet space sampled with ``--seed``, hashes printed) is
trained as search children: the trained evaluator's own task (``train_child``) through the
process pool, on the search's default proxy task (digits at 16 px, MobileNetV2-skeleton children
at width 0.5, 2 epochs, one torch thread per trainer) or whatever ``--override`` composes.

- CPU: a pool of one worker per usable core (the search's CPU default). A first pass over other
  architectures starts the workers and loads the data (not timed); then the 8 are timed
  (children per hour), and trained once more with trainer seed + 1: the seed-to-seed spread of
  the proxy accuracy, the noise any device difference is judged against.
- GPU, if there is one: a pool with ``k`` children per GPU for each ``--per-gpu k``
  (``executor.gpus_per_worker = 1/k``), warmed up the same way, then the 8 timed; with the first
  ``k`` the 8 are trained again with the same seed: the GPU's run-to-run spread (the
  repeatability tolerance). ``trainer.amp`` is ``auto`` (bf16 where the GPU has it) unless
  ``--amp`` says otherwise.

Without a GPU the CPU part runs and the GPU part is reported as skipped. Prints the figures,
the machine and its load; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.runner import build_search
from mnas.evaluate.executors import make_executor
from mnas.evaluate.executors.base import usable_cores
from mnas.evaluate.trained import TrainedEvaluator, TrainTask, train_child
from mnas.training.device import resolve_device

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def tasks_for(ev: TrainedEvaluator, archs, device: str, seed: int | None = None):
    train = ev.train if seed is None else replace(ev.train, seed=seed)
    return [TrainTask(a, ev.model, ev.data, train, ev.input_size, device) for a in archs]


def run_pass(executor, tasks) -> tuple[float, dict[str, float], dict[str, float]]:
    """(wall seconds, accuracy by hash, training seconds by hash) of one map over ``tasks``."""
    acc, secs = {}, {}

    def done(k, out) -> None:
        h = tasks[k].arch.hash
        acc[h] = getattr(out, "accuracy", float("nan"))
        secs[h] = getattr(out, "seconds", float("nan"))
        if getattr(out, "status", "ok") != "ok":
            print(f"  child {h[:8]}: {out.status} {out.reason}")

    start = time.perf_counter()
    executor.map(train_child, tasks, done)
    return time.perf_counter() - start, acc, secs


def measure(label, executor, ev, archs, warmup, repeat_seed=None) -> dict:
    """Warm ``executor`` up on ``warmup`` architectures, then time ``archs``; optionally train
    them again with trainer seed ``repeat_seed``."""
    device = executor.device
    start = time.perf_counter()
    run_pass(executor, tasks_for(ev, warmup, device))
    cold = time.perf_counter() - start
    seconds, acc, secs = run_pass(executor, tasks_for(ev, archs, device))
    out = {
        "label": label,
        "device": device,
        "workers": executor.workers,
        "warmup_seconds": cold,
        "seconds": seconds,
        "children_per_hour": 3600 * len(archs) / seconds,
        "train_seconds_per_child": statistics.mean(secs.values()),
        "accuracy": acc,
    }
    if repeat_seed is not None:
        out["repeat_seed"] = repeat_seed
        out["accuracy_repeat"] = run_pass(executor, tasks_for(ev, archs, device, repeat_seed))[1]
    print(
        f"{label:<22} {out['children_per_hour']:8.0f} children/h  ({executor.workers} workers, "
        f"{out['train_seconds_per_child']:.2f} s training per child, warm-up {cold:.1f} s) "
        f"[{load()}]"
    )
    return out


def mean_abs(a: dict[str, float], b: dict[str, float]) -> float:
    return statistics.mean(abs(a[h] - b[h]) for h in a)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", type=int, default=8, help="architectures in the fixed set")
    p.add_argument("--seed", type=int, default=14, help="seed of the fixed set")
    p.add_argument("--cpu-workers", type=int, default=None, help="default: usable cores")
    p.add_argument("--per-gpu", type=int, nargs="+", default=[1, 4], help="children per GPU")
    p.add_argument("--amp", default="auto", help="trainer.amp: auto | bf16 | fp16 | off")
    p.add_argument("--override", action="append", default=[], help="search config override")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args()

    overrides = [
        "latency=macs",  # only the children's training is measured here
        "tensorboard=false",
        "device=cpu",
        f"trainer.amp={args.amp}",
        *args.override,
    ]
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    search = build_search(cfg, tempfile.mkdtemp(prefix="mnas-bench-gpu-"))
    ev: TrainedEvaluator = search.evaluator
    rng = random.Random(args.seed)
    archs = [search.space.sample(rng) for _ in range(args.archs)]
    cores = usable_cores()
    cpu_workers = args.cpu_workers or cores
    warm_rng = random.Random(args.seed + 1000)
    warmup = [search.space.sample(warm_rng) for _ in range(max(cpu_workers, *args.per_gpu))]

    print(
        f"{len(archs)} architectures (seed {args.seed}); data {cfg.data.name} "
        f"{cfg.data.image_size}px, width {cfg.model.width_mult}, {cfg.trainer.epochs} epochs, "
        f"batch {cfg.trainer.batch_size}, trainer.threads {cfg.trainer.threads}, "
        f"trainer.amp {args.amp}"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} usable cores, "
        f"torch {torch.__version__}; {load()}"
    )
    for a in archs:
        print(f"  {a.hash[:8]}  {' '.join(a.blocks)}")
    print()

    results = {"archs": [a.hash for a in archs], "overrides": overrides, "runs": []}
    cpu_ex = make_executor("pool", workers=cpu_workers, threads_per_worker=1, device="cpu")
    try:
        cpu = measure(
            f"cpu pool({cpu_workers})",
            cpu_ex,
            ev,
            archs,
            warmup[:cpu_workers],
            repeat_seed=ev.train.seed + 1,
        )
    finally:
        cpu_ex.close()
    results["runs"].append(cpu)

    gpu = None
    try:
        resolve_device("cuda")
    except ValueError as e:
        print(f"GPU part skipped: {e}")
        results["gpu_skipped"] = str(e)
    else:
        count = torch.cuda.device_count()
        names = sorted({torch.cuda.get_device_name(i) for i in range(count)})
        print(f"GPUs: {count} x {', '.join(names)}")
        results["gpus"] = {"count": count, "names": names}
        for i, k in enumerate(args.per_gpu):
            ex = make_executor("pool", device="cuda", gpus_per_worker=1 / k)
            try:
                run = measure(
                    f"gpu pool({k}/GPU)",
                    ex,
                    ev,
                    archs,
                    warmup[: ex.workers],
                    repeat_seed=ev.train.seed if i == 0 else None,
                )
            finally:
                ex.close()
            results["runs"].append(run)
            gpu = gpu or run
    search.evaluator.close()

    print()
    header = f"{'arch':<9} {'cpu acc':>8} {'cpu seed+1':>10}"
    if gpu:
        header += f" {'gpu acc':>8} {'gpu again':>9} {'gpu-cpu':>8}"
    print(header)
    print("-" * len(header))
    for a in archs:
        h = a.hash
        line = (
            f"{h[:8]:<9} {100 * cpu['accuracy'][h]:7.2f}% {100 * cpu['accuracy_repeat'][h]:9.2f}%"
        )
        if gpu:
            line += (
                f" {100 * gpu['accuracy'][h]:7.2f}% {100 * gpu['accuracy_repeat'][h]:8.2f}%"
                f" {100 * (gpu['accuracy'][h] - cpu['accuracy'][h]):+7.2f}"
            )
        print(line)
    seed_noise = mean_abs(cpu["accuracy"], cpu["accuracy_repeat"])
    summary = {
        "cpu_mean_accuracy": statistics.mean(cpu["accuracy"].values()),
        "cpu_seed_noise_mean_abs": seed_noise,
    }
    print()
    print(
        f"CPU: mean accuracy {100 * summary['cpu_mean_accuracy']:.2f}%; seed noise (mean "
        f"|seed - seed+1|) {100 * seed_noise:.2f} points"
    )
    if gpu:
        summary.update(
            gpu_mean_accuracy=statistics.mean(gpu["accuracy"].values()),
            gpu_vs_cpu_mean_abs=mean_abs(gpu["accuracy"], cpu["accuracy"]),
            gpu_repeat_max_abs=max(
                abs(gpu["accuracy"][h] - gpu["accuracy_repeat"][h]) for h in gpu["accuracy"]
            ),
            best_gpu_children_per_hour=max(
                r["children_per_hour"] for r in results["runs"] if r["device"] != "cpu"
            ),
        )
        print(
            f"GPU: mean accuracy {100 * summary['gpu_mean_accuracy']:.2f}%; mean |GPU - CPU| "
            f"{100 * summary['gpu_vs_cpu_mean_abs']:.2f} points (seed noise "
            f"{100 * seed_noise:.2f}); same seed twice on the GPU: max |diff| "
            f"{100 * summary['gpu_repeat_max_abs']:.2f} points"
        )
        print(
            f"children per hour: CPU {cpu['children_per_hour']:.0f}, best GPU "
            f"{summary['best_gpu_children_per_hour']:.0f} "
            f"({summary['best_gpu_children_per_hour'] / cpu['children_per_hour']:.2f}x)"
        )
    else:
        print(f"children per hour: CPU {cpu['children_per_hour']:.0f}; GPU: skipped (no GPU)")
    results["summary"] = summary
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures in {args.json}")


if __name__ == "__main__":
    main()
