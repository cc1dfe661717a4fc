"""PPO vs random on the digits proxy at a fixed budget, and the loop's own overhead.

For each strategy and seed a real search runs (proxy training + latency); the script
prints, per budget (architectures evaluated so far): best reward, hypervolume (reference
(2T, 0)) and front size, mean +- std over seeds; and the share of wall time spent outside
training and latency measurement (the coordinator's overhead: sampling, PPO updates,
results, checkpoints, TensorBoard).

    python bench/search.py                      # 3 seeds x 4 steps x 8 archs, latency=macs
    python bench/search.py --seeds 5 --latency measured --steps 6

It asserts nothing about speed; figures vary with the machine's load.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.runner import build_search
from mnas.search import load_results
from mnas.search.pareto import hypervolume, pareto_indices
from mnas.search.records import latency_of

ROOT = Path(__file__).resolve().parents[1]


def run_one(strategy: str, seed: int, args, run_dir: Path) -> dict:
    overrides = [
        f"strategy={strategy}",
        f"seed={seed}",
        f"steps={args.steps}",
        f"batch_size={args.batch}",
        f"latency={args.latency}",
        f"trainer.epochs={args.epochs}",
        f"data.image_size={args.image_size}",
        f"tensorboard={'true' if args.tensorboard else 'false'}",
        "latency.cache=null",
    ]
    if args.target is not None:
        overrides.append(f"reward.target_ms={args.target}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    start = time.perf_counter()
    search = build_search(cfg, run_dir)
    summary = search.run()
    if search.tb is not None:
        search.tb.close()
    wall = time.perf_counter() - start
    recs = [r.to_dict() for r in load_results(run_dir)]
    inside = sum(r["train_seconds"] + r["latency_seconds"] for r in recs)
    # the loop proper: everything in run() that is not training or timing a child
    loop_overhead = summary.seconds - inside
    curve = {}
    for b in args.budgets:
        head = [r for r in recs[:b] if r["status"] == "ok"]
        pts = [(latency_of(r), r["accuracy"]) for r in head]
        curve[b] = {
            "best_reward": max((r["reward"] for r in head), default=0.0),
            "hv": hypervolume(pts, 2 * search.target, 0.0),
            "front": len(pareto_indices(pts)),
        }
    return {
        "curve": curve,
        "wall": wall,
        "loop": summary.seconds,
        "overhead": loop_overhead,
        "target": search.target,
        "n": len(recs),
    }


def fmt(xs: list[float], scale: float = 1.0, digits: int = 3) -> str:
    xs = [x * scale for x in xs]
    if len(xs) < 2:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--strategies", default="ppo,random")
    p.add_argument("--latency", default="macs", choices=["macs", "measured"])
    p.add_argument("--target", type=float, default=None, help="T (default: auto)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--tensorboard", action="store_true", help="include TensorBoard writing")
    args = p.parse_args()
    args.budgets = sorted({args.batch * k for k in range(1, args.steps + 1)})
    register_configs()
    torch.set_num_threads(1)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies.split(","):
            for seed in range(args.seeds):
                res = run_one(strategy, seed, args, Path(tmp) / f"{strategy}-{seed}")
                results.setdefault(strategy, []).append(res)
                print(
                    f"{strategy} seed {seed}: {res['n']} archs in {res['wall']:.0f} s, "
                    f"T = {res['target']:.4g}, best reward "
                    f"{res['curve'][args.budgets[-1]]['best_reward']:.4f}",
                    flush=True,
                )
    print()
    print(
        f"digits proxy, {args.seeds} seeds, latency={args.latency}, "
        f"{args.steps} steps x {args.batch} archs, mean ± std over seeds"
    )
    print(f"{'strategy':<10} {'budget':>6} {'best reward':>18} {'hypervolume':>18} {'front':>12}")
    for strategy, runs in results.items():
        for b in args.budgets:
            print(
                f"{strategy:<10} {b:>6} {fmt([r['curve'][b]['best_reward'] for r in runs]):>18} "
                f"{fmt([r['curve'][b]['hv'] for r in runs], digits=4):>18} "
                f"{fmt([r['curve'][b]['front'] for r in runs], digits=1):>12}"
            )
    print()
    for strategy, runs in results.items():
        share = [r["overhead"] / r["loop"] for r in runs if r["loop"] > 0]
        print(
            f"{strategy:<10} loop overhead outside training and latency: "
            f"{fmt(share, 100, 2)} % of the search's wall time "
            f"({fmt([r['overhead'] for r in runs], digits=2)} s of "
            f"{fmt([r['loop'] for r in runs], digits=1)} s)"
        )
    if not math.isfinite(sum(r["overhead"] for rs in results.values() for r in rs)):
        print("warning: non-finite timing")


if __name__ == "__main__":
    main()
