"""Stand-alone proxy accuracy of random architectures: the ground truth accuracy sources are
ranked against (the supernet's Kendall tau, zero-cost proxies).

    MNAS_DATA=../shared/datasets .venv/bin/python bench/standalone_truth.py \\
        --n 120 --repeat 24 --device cuda --per-gpu 8 \\
        --out bench/data/standalone_fashion_mnist.json experiment=fashion_mnist_proxy

Architectures: ``--pool`` random MnasNet-space architectures (``--seed``) are sized (MACs at
the search's set-up), sorted, cut into ``--n`` equal-count strata, and one is drawn from each:
the sample covers the whole cost range the search sees, not only the bulk of the uniform
distribution (MACs stand in for latency, which cannot be measured on every host this runs on).
Every ``n // repeat``-th of them is trained a second time with trainer seed + 1: the noise
ceiling (how well the ground truth agrees with itself); ``--seeds K`` trains every one of them
with K seeds (the mean over seeds is a less noisy truth). They are trained in a shuffled order
of strata, each second seed right after the first, so that a run stopped early (the rows go
to ``<out>.partial.jsonl``) is still a sample of the whole range.

Each one is trained exactly as a search child: :func:`mnas.evaluate.trained.train_child`
(the search's proxy budget, initial weights from the architecture's hash) through the process
pool, on ``--device``, and scored on the search's validation split. Other arguments are Hydra
overrides of conf/search.yaml, as for the search (default: ``experiment=fashion_mnist_proxy``).

Resumable: finished rows go to ``<out>.partial.jsonl`` as they come, and a re-run skips them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.arguments import name_of, plain, train_config
from mnas.conf.runner import data_spec_from, model_spec_from
from mnas.conf.validate import validate_search
from mnas.data.spec import get_dataset
from mnas.evaluate.executors import make_executor
from mnas.evaluate.trained import ModelSpec, TrainTask, train_child
from mnas.nn.stats import model_stats
from mnas.space import make_space

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def stratified_sample(
    space, model: ModelSpec, input_size: int, n: int, pool: int, seed: int, table=None
):
    """``n`` architectures, one from each of ``n`` equal-count strata of a random pool, by
    latency predicted by ``table`` (a :class:`mnas.latency.lut.LutLatency`), else by MACs."""
    if pool < n:
        raise ValueError(f"--pool={pool} must be >= --n={n}")
    rng = random.Random(seed)
    seen, cands = set(), []
    while len(cands) < pool:
        a = space.sample(rng)
        if a.hash in seen:
            continue
        seen.add(a.hash)
        if table is not None:
            cost = table.measure(a).median_ms
        else:
            with torch.random.fork_rng(devices=[]):
                cost = model_stats(model.build(a), input_size, model.in_channels).macs
        cands.append((cost, a.hash, a))
    cands.sort(key=lambda c: (c[0], c[1]))
    edges = [round(i * pool / n) for i in range(n + 1)]
    return [cands[rng.randrange(lo, hi)][2] for lo, hi in itertools.pairwise(edges)]


def job_order(archs: list, twice: set[str], seed: int, seeds: int, shuffle_seed: int) -> list:
    """(architecture, trainer seed) pairs in training order. Strata in a shuffled order,
    each second seed of the ``twice`` hashes right after its first, so that a run stopped
    early still covers the whole cost range and has its share of the noise ceiling; then one
    round per further seed (``seeds`` in all) over every architecture, in the same order,
    so a run stopped early keeps whole rounds (a mean over seeds is the less noisy truth)."""
    order = list(archs)
    random.Random(shuffle_seed).shuffle(order)
    jobs = []
    for a in order:
        jobs.append((a, seed))
        if a.hash in twice:
            jobs.append((a, seed + 1))
    queued = {(a.hash, s) for a, s in jobs}
    for extra in range(1, seeds):
        jobs.extend((a, seed + extra) for a in order if (a.hash, seed + extra) not in queued)
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other arguments are Hydra overrides of conf/search.yaml.",
    )
    p.add_argument("--n", type=int, default=120, help="architectures (strata)")
    p.add_argument("--repeat", type=int, default=24, help="of them trained again, seed + 1")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="train every architecture with this many trainer seeds (seed, seed + 1, ...); "
        "the extra seeds come after the first round, so a stopped run keeps the first",
    )
    p.add_argument("--pool", type=int, default=1200, help="random candidates to stratify")
    p.add_argument("--seed", type=int, default=2026, help="seed of the candidates")
    p.add_argument(
        "--strata-table",
        type=Path,
        help="a latency table (scripts/latency_table.py): strata by its predicted latency "
        "instead of MACs (sizing hundreds of candidates by MACs takes ~1 s each)",
    )
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--per-gpu", type=int, default=8, help="children trained at once per GPU")
    p.add_argument("--workers", type=int, default=None, help="CPU workers (default: cores)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--select-only",
        action="store_true",
        help="draw the architectures, write <out>.archs.json and stop",
    )
    p.add_argument(
        "--write-partial",
        action="store_true",
        help="write <out> from the rows <out>.partial.jsonl holds and train nothing more",
    )
    args, overrides = p.parse_known_args(argv)
    if not overrides:
        overrides = ["experiment=fashion_mnist_proxy"]
    if not 0 <= args.repeat <= args.n:
        p.error(f"--repeat={args.repeat} must lie in [0, --n={args.n}]")
    if args.seeds < 1:
        p.error(f"--seeds={args.seeds} must be >= 1")

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    try:
        validate_search(cfg)
        data = data_spec_from(cfg)
        splits = get_dataset(data)
    except (ValueError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    model = model_spec_from(cfg, splits)
    train = train_config(cfg.trainer)
    size = cfg.data.image_size
    space = make_space(name_of(cfg.space.name))
    # The draw is the slow, host-independent part: it is kept beside the output and reused.
    chosen = args.out.with_suffix(".archs.json")
    key = {"n": args.n, "pool": args.pool, "seed": args.seed, "input_size": size}
    if args.strata_table:
        key["strata_table"] = args.strata_table.name
    if space.name != "mnas":
        key["space"] = space.name
    saved = json.loads(chosen.read_text()) if chosen.exists() else {}
    if saved.get("key") == key:
        archs = [space.architecture(t) for t in saved["tokens"]]
        print(f"{len(archs)} architectures from {chosen}")
    else:
        start = time.perf_counter()
        table = None
        if args.strata_table:
            from mnas.latency.lut import LutLatency

            table = LutLatency(args.strata_table)
        archs = stratified_sample(space, model, size, args.n, args.pool, args.seed, table)
        took = time.perf_counter() - start
        print(f"{len(archs)} architectures from {args.pool} candidates in {took:.0f} s")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        chosen.write_text(json.dumps({"key": key, "tokens": [list(a.tokens) for a in archs]}))
    strata = f"latency predicted by {args.strata_table.name}" if args.strata_table else "MACs"
    if args.select_only:
        return 0
    step = max(1, args.n // args.repeat) if args.repeat else 0
    twice = {a.hash for a in archs[::step][: args.repeat]} if step else set()
    jobs = job_order(archs, twice, train.seed, args.seeds, args.seed)
    partial = args.out.with_suffix(".partial.jsonl")
    done: dict[tuple[str, int], dict] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed run: that child is trained again
            done[(row["hash"], row["seed"])] = row
    todo = [(a, s) for a, s in jobs if (a.hash, s) not in done]
    print(f"{len(jobs)} trainings, {len(jobs) - len(todo)} already done, {len(todo)} to go")

    if args.write_partial:
        todo = []
    if not todo:  # nothing left to train: no workers, and any host may write the rows out
        ex = make_executor("serial", device="cpu")
    elif args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available()):
        ex = make_executor("pool", workers=args.workers, threads_per_worker=1, device="cpu")
    else:
        ex = make_executor("pool", device=args.device, gpus_per_worker=1 / args.per_gpu)
    tasks = [TrainTask(a, model, data, replace(train, seed=s), size, ex.device) for a, s in todo]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    with partial.open("a") as f:

        def finished(k: int, out) -> None:
            a, s = todo[k]
            row = {
                "hash": a.hash,
                "blocks": list(a.blocks),
                "tokens": list(a.tokens),
                "seed": s,
                "val_accuracy": getattr(out, "accuracy", float("nan")),
                "status": getattr(out, "status", "failed"),
                "reason": getattr(out, "reason", str(out)),
                "params": getattr(out, "params", 0),
                "macs": getattr(out, "macs", 0),
                "seconds": getattr(out, "seconds", float("nan")),
            }
            f.write(json.dumps(row) + "\n")
            f.flush()
            done[(a.hash, s)] = row
            n = len(done)
            print(
                f"[{n}/{len(jobs)}] {a.hash[:8]} seed {s}: {row['status']} "
                f"acc {row['val_accuracy']:.4f} ({row['seconds']:.1f} s) "
                f"[{time.perf_counter() - t0:.0f} s]",
                flush=True,
            )

        try:
            if tasks:
                ex.map(train_child, tasks, finished)
        finally:
            ex.close()

    rows = [done[(a.hash, s)] for a, s in jobs if (a.hash, s) in done]
    if not tasks:  # the rows were trained by earlier runs, on --device
        trained_on, device_name = args.device, "(earlier runs; see note)"
    else:
        trained_on = ex.device
        device_name = (
            torch.cuda.get_device_name(0) if ex.device.startswith("cuda") else platform.processor()
        )
    meta = {
        "command": "bench/standalone_truth.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "overrides": overrides,
        "space": space.name,
        "data": plain(cfg.data),
        "model": plain(cfg.model),
        "trainer": plain(cfg.trainer),
        "num_classes": splits.num_classes,
        "in_channels": splits.in_channels,
        "input_size": size,
        "n": args.n,
        "repeat": args.repeat,
        "seeds": args.seeds,
        "pool": args.pool,
        "seed": args.seed,
        "strata": f"{strata} (equal-count strata of the candidate pool)",
        "device": trained_on,
        "device_name": device_name,
        "torch": torch.__version__,
        "wall_seconds": time.perf_counter() - t0,
        "complete": len(rows) == len(jobs),
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"wrote {args.out}: {len(rows)} rows ({len(ok)} ok) in {meta['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
