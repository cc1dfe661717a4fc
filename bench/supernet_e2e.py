"""End to end on Fashion-MNIST: PPO + supernet against PPO + stand-alone training, the same
wall clock and the same cores each, over the same space; then each front's top
architectures re-trained under one budget and timed on the real runtime.

    MNAS_DATA=../shared/datasets PYTHONPATH=$PWD python bench/supernet_e2e.py search \\
        --arm standalone --cpus 1 --seconds 1500 --lut TABLE --out DIR
    ... search --arm supernet --cpus 0 --seconds 1500 --lut TABLE --out DIR
    ... retrain --out DIR --top 3 --workers 2 [--arm ARM]
    ... time --out DIR
    ... report --out DIR

``search`` runs ``scripts/search.py`` for one arm pinned to ``--cpus`` (one torch thread per
core), stops it with SIGINT at ``--seconds`` (the search finishes the step it is in and
writes its outputs) and records the wall time. Both arms search ``space=mnas_mbconv`` at
the ``fashion_mnist_proxy`` set-up with PPO, the same seed and the same latency lookup table
(``--lut``, built by ``scripts/latency_table.py experiment=fashion_mnist_proxy``), so they
differ only in the accuracy source: ``experiment=fashion_mnist_supernet`` (its supernet is
trained inside the budget; its own end-of-search check is off, the re-training here replaces
it) against ``experiment=fashion_mnist_proxy`` (every child trained stand-alone).

``retrain`` takes each arm's ``--top`` front points by reward and trains them from scratch with
the project's proxy trainer (the search's ``trainer``; seed 1, which neither search used),
scored on ``--test-images`` images of the **test** split neither search saw
(``DIR/retrained_<arm>.json``); ``time`` then times each on ONNX Runtime with the search's
measured-latency settings (on a quiet machine). ``report`` writes ``DIR/e2e.json``
and ``DIR/e2e.md``: per arm, children, wall time, the picks, and the hypervolume of the
re-trained picks (test accuracy, measured latency) against one reference corner for both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnas.evaluate.trained import TrainTask, train_child  # noqa: E402
from mnas.search.pareto import hypervolume, pareto_indices  # noqa: E402
from mnas.search.records import load_result_rows  # noqa: E402
from mnas.space import make_space  # noqa: E402

ARMS = {
    "supernet": [
        "experiment=fashion_mnist_supernet",
        "evaluator.supernet.standalone_top_k=0",
    ],
    "standalone": ["experiment=fashion_mnist_proxy", "space=mnas_mbconv"],
}


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def search(args) -> None:
    run = args.out / args.arm
    cpus = [int(c) for c in args.cpus.split(",")]
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "search.py"),
        *ARMS[args.arm],
        "latency=lut",
        f"latency.lut_path={args.lut.resolve()}",
        f"trainer.threads={len(cpus)}",
        "device=cpu",
        "executor=serial",
        f"steps={args.steps}",
        f"seed={args.seed}",
        f"hydra.run.dir={run}",
        *args.override,
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    print(" ".join(cmd[1:]), flush=True)
    start = time.monotonic()
    with open(args.out / f"search_{args.arm}.log", "w") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: _child_setup(cpus),
            env={**os.environ, "OMP_NUM_THREADS": str(len(cpus))},
        )
        while proc.poll() is None and time.monotonic() - start < args.seconds:
            time.sleep(2)
        stopped = proc.poll() is None
        # what was finished within the budget: the child in flight at the stop is not counted
        at_budget = len(load_result_rows(run))
        if stopped:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(args.grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - start
    rows = load_result_rows(run)
    write_json(
        args.out / f"search_{args.arm}.json",
        {
            "arm": args.arm,
            "command": " ".join(cmd[1:]),
            "cpus": cpus,
            "budget_seconds": args.seconds,
            "wall_seconds": wall,
            "stopped_at_budget": stopped,
            "children": len(rows),
            "children_at_budget": at_budget,
            "children_ok": sum(r["status"] == "ok" for r in rows),
        },
    )
    print(f"{args.arm}: {len(rows)} children in {wall:.0f} s", flush=True)


def _child_setup(cpus: list[int]) -> None:
    os.sched_setaffinity(0, cpus)
    # A shell without job control starts background commands with SIGINT ignored, and an
    # ignored SIGINT survives exec: the search would never see the stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def picks(rows: list[dict], top: int) -> list[dict]:
    """The ``top`` Pareto-front points (search accuracy vs latency) with the highest reward."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("accuracy") is not None]
    ok.sort(key=lambda r: (r["latency_ms"], -r["accuracy"]))
    front = [ok[i] for i in pareto_indices([(r["latency_ms"], r["accuracy"]) for r in ok])]
    return sorted(front, key=lambda r: -r["reward"])[:top]


def _setup(test_images: int):
    from hydra import compose, initialize_config_dir

    from mnas.conf import register_configs
    from mnas.conf.arguments import train_config
    from mnas.conf.runner import data_spec_from, model_spec_from
    from mnas.data import get_dataset

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("search", overrides=ARMS["standalone"])
    data = dataclasses.replace(data_spec_from(cfg), test_size=test_images)
    splits = get_dataset(data)
    return cfg, data, model_spec_from(cfg, splits), train_config(cfg.trainer)


def _retrain_one(task) -> dict:
    """One pick trained by the search's own child trainer, scored on the test split."""
    out = train_child(task)
    return {
        "hash": task.arch.hash,
        "test_accuracy": out.accuracy,
        "diverged": out.status != "ok",
        "status": out.status,
        "train_seconds": out.seconds,
    }


def retrain(args) -> None:
    cfg, data, model, train = _setup(args.test_images)
    train = dataclasses.replace(train, seed=args.train_seed, threads=1)
    space = make_space("mnas_mbconv")
    arms = [args.arm] if args.arm else list(ARMS)
    for arm in arms:
        meta_path = args.out / f"search_{arm}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        budget = meta.get("children_at_budget")
        chosen = picks(load_result_rows(args.out / arm)[:budget], args.top)
        jobs = [
            TrainTask(
                space.architecture(r["tokens"]),
                model,
                data,
                train,
                data.image_size,
                "cpu",
                eval_split="test",
            )
            for r in chosen
        ]
        print(f"{arm}: re-training {len(jobs)} architectures on {args.workers} workers")
        table = []
        # spawn, not fork: this process has started torch's thread pool (loading the data),
        # and a forked child can hang in it (it did here, with both workers idle)
        with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            for r, out in zip(chosen, pool.map(_retrain_one, jobs), strict=True):
                print(f"{arm} {out['hash'][:8]}: test {out['test_accuracy']:.4f}", flush=True)
                table.append(
                    {
                        "arm": arm,
                        "hash": r["hash"],
                        "tokens": r["tokens"],
                        "blocks": r["blocks"],
                        "search_accuracy": r["accuracy"],
                        "lut_latency_ms": r["latency_ms"],
                        "reward": r["reward"],
                        **{k: v for k, v in out.items() if k != "hash"},
                    }
                )
        write_json(
            args.out / f"retrained_{arm}.json",
            {
                "train": dataclasses.asdict(train),
                "test_images": args.test_images,
                "top": args.top,
                "rows": table,
            },
        )


def time_picks(args) -> None:
    """Every re-trained network timed on ONNX Runtime with the search's measured settings
    (run it on a quiet machine), written into its ``retrained_<arm>.json`` row."""
    from mnas.conf.arguments import latency_settings
    from mnas.conf.runner import latency_setup_from
    from mnas.latency import make_latency_evaluator

    cfg, *_ = _setup(args.test_images)
    timer = make_latency_evaluator(latency_settings(cfg.latency), **latency_setup_from(cfg))
    space = make_space("mnas_mbconv")
    for path in sorted(args.out.glob("retrained_*.json")):
        saved = json.loads(path.read_text())
        for r in saved["rows"]:
            r["measured_latency_ms"] = timer.measure(space.architecture(r["tokens"])).median_ms
            print(f"{r['arm']} {r['hash'][:8]}: {r['measured_latency_ms']:.3f} ms", flush=True)
        write_json(path, saved)


def report(args) -> None:
    rows = [
        r
        for path in sorted(args.out.glob("retrained_*.json"))
        for r in json.loads(path.read_text())["rows"]
    ]
    ok = [r for r in rows if not r["diverged"]]
    ref_lat = 1.1 * max(r["measured_latency_ms"] for r in ok)
    ref_acc = min(r["test_accuracy"] for r in ok) - 0.01
    arms = {}
    for arm in ARMS:
        meta_path = args.out / f"search_{arm}.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        mine = [r for r in ok if r["arm"] == arm]
        arms[arm] = {
            **meta,
            "hypervolume": hypervolume(
                [(r["measured_latency_ms"], r["test_accuracy"]) for r in mine], ref_lat, ref_acc
            ),
            "best_test_accuracy": max((r["test_accuracy"] for r in mine), default=None),
        }
    out = {"reference": {"latency_ms": ref_lat, "accuracy": ref_acc}, "arms": arms, "rows": rows}
    write_json(args.out / "e2e.json", out)
    lines = [
        "| arm | children within the budget | budget s | hypervolume (test acc x ms) |",
        "|---|---|---|---|",
    ]
    for arm, a in arms.items():
        lines.append(
            f"| {arm} | {a.get('children_at_budget', a.get('children'))} "
            f"| {a.get('budget_seconds', 0):.0f} "
            f"| {a['hypervolume']:.4f} |"
        )
    lines += [
        "",
        "| arm | network | search acc | LUT ms | measured ms | re-trained test acc |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['hash'][:8]} | {r['search_accuracy']:.4f} "
            f"| {r['lut_latency_ms']:.3f} | {r['measured_latency_ms']:.3f} "
            f"| {r['test_accuracy']:.4f} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "e2e.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search")
    s.add_argument("--arm", choices=sorted(ARMS), required=True)
    s.add_argument("--cpus", default="0", help="cores the arm is pinned to (comma-separated)")
    s.add_argument("--seconds", type=float, default=1500)
    s.add_argument("--grace", type=float, default=600, help="seconds to finish after SIGINT")
    s.add_argument("--steps", type=int, default=1000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--lut", type=Path, required=True)
    s.add_argument("--override", action="append", default=[])
    r = sub.add_parser("retrain")
    r.add_argument("--top", type=int, default=3)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--test-images", type=int, default=5000)
    r.add_argument("--train-seed", type=int, default=1)
    r.add_argument("--arm", choices=sorted(ARMS), help="this arm only (default: both)")
    t = sub.add_parser("time")
    t.add_argument("--test-images", type=int, default=5000)
    sub.add_parser("report")
    for q in sub.choices.values():
        q.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    {"search": search, "retrain": retrain, "time": time_picks, "report": report}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
