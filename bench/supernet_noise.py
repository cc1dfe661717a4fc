"""How much of a supernet's score is the architecture, and how much the images it is scored on.

    MNAS_DATA=../shared/datasets PYTHONPATH=$PWD python bench/supernet_noise.py \\
        --out DIR --epochs 4 --subnets 1 --no-sandwich --lr 0.02 space=mnas_mbconv

A child's supernet score depends on two draws besides the architecture: the training images
its BN statistics are re-estimated on (``bn_batches`` x ``bn_batch_size``, the same for every
child) and the validation images it is scored on (the first ``val_images``). This bench
scores every architecture of the stand-alone truth (``--truth``) on **every** validation
image, once per BN setting (``--bn``, e.g. ``256x2,64x2``), keeping each image's correctness
and loss, and ``--probes`` random architectures of the space (another draw) the same way.
Then, with the validation split cut in two halves, it ranks the scores a setting gives on
the first half — its first *n* images, or the *n* images the probes disagree on most
(``informative``: largest p(1-p), p the share of probes right) — against the reference: the
first ``--bn`` setting's accuracy (and loss) on the **second** half. A score that agrees
with the reference at Kendall tau 1 would be the architecture's own; the shortfall is the
draw of images. Every row is also ranked against the truth (mean over ``truth_seeds``), for
reading, not for choosing.

The supernet is ``DIR/supernet_<dataset>[_<space>].pt``, trained (or reused) with the
``bench/supernet.py`` arguments given. Per-image results are kept in
``DIR/perimage_<bs>x<nb>.json`` (one architecture at a time: a stopped run goes on where it
stopped); the report goes to ``DIR/supernet_noise.json`` and the console.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats as sstats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from supernet import (  # noqa: E402
    EXPERIMENTS,
    add_training_args,
    rows_by_seed,
    seed_noise,
    settings_from,
    setup,
    space_and_truth,
)

from mnas.evaluate.supernet import load_or_train  # noqa: E402
from mnas.space import parse_blocks  # noqa: E402
from mnas.training.batches import Normalizer  # noqa: E402
from mnas.training.supernet import ScoreConfig, recalibrated  # noqa: E402

SIZES = (125, 250, 500, 1000)  # validation images per score (of the first half)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(EXPERIMENTS), default="fashion_mnist")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--truth", type=Path, default=None)
    p.add_argument("--bn", default="256x2,64x2", help="BN settings: batch size x batches")
    p.add_argument("--probes", type=int, default=32)
    p.add_argument("--part", default="0/1", help="score only every k-th architecture: i/k")
    p.add_argument("--report-only", action="store_true")
    add_training_args(p)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the search config")
    args = p.parse_args()
    try:
        args.bn = [tuple(int(v) for v in s.split("x")) for s in args.bn.split(",")]
        i, k = (int(v) for v in args.part.split("/"))
    except ValueError:
        p.error(f"--bn {args.bn!r} / --part {args.part!r}: expected e.g. 256x2,64x2 and 0/2")
    if not 0 <= i < k:
        p.error(f"--part {args.part!r}: need 0 <= i < k")
    if args.probes < 2:
        p.error(f"--probes {args.probes}: need >= 2 (they pick the informative images)")
    args.part = (i, k)
    return args


def per_image(net, sub_specs, splits, bn: tuple[int, int]) -> dict:
    """Correctness (packed bits, hex) and loss of one sub-network on every validation image,
    its BN statistics re-estimated as the search does (same images for every child)."""
    start = time.process_time()
    config = ScoreConfig(bn_batch_size=bn[0], bn_batches=bn[1])
    sub, chunk = recalibrated(net.extract(sub_specs), splits, config)
    norm = Normalizer(splits.mean, splits.std, torch.device("cpu"))
    correct, losses = [], []
    with torch.no_grad():
        for s in range(0, len(splits.val_y), chunk):
            logits = sub(norm(splits.val_x[s : s + chunk])).float()
            y = splits.val_y[s : s + chunk]
            correct.append((logits.argmax(1) == y).numpy())
            losses.append(F.cross_entropy(logits, y, reduction="none").numpy())
    c = np.concatenate(correct)
    return {
        "correct": np.packbits(c).tobytes().hex(),
        "n": int(c.size),
        "loss": [round(float(v), 4) for v in np.concatenate(losses)],
        "cpu_seconds": time.process_time() - start,
    }


def collect(args, net, splits, items: dict[str, tuple], bn: tuple[int, int]) -> None:
    path = args.out / f"perimage_{bn[0]}x{bn[1]}.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    i, k = args.part
    for j, (key, specs) in enumerate(sorted(items.items())):
        if j % k != i or key in done:
            continue
        done[key] = per_image(net, specs, splits, bn)
        # re-read first: another --part may have written its rows since
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged.update(done)
        tmp = path.with_suffix(f".tmp{i}")
        tmp.write_text(json.dumps(merged))
        tmp.replace(path)
        print(f"{bn[0]}x{bn[1]} {key}: {done[key]['cpu_seconds']:.1f} CPU s", flush=True)


def matrices(rows: dict, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    n = rows[keys[0]]["n"]
    bits = [np.frombuffer(bytes.fromhex(rows[h]["correct"]), np.uint8) for h in keys]
    c = np.array([np.unpackbits(b)[:n] for b in bits])
    return c.astype(np.float64), np.array([rows[h]["loss"] for h in keys])


def tau(a, b) -> float:
    return round(float(sstats.kendalltau(a, b).statistic), 3)


def report(args, truth_keys: list[str], truth: np.ndarray, probe_keys: list[str]) -> dict:
    per_bn = {}
    for bn in args.bn:
        path = args.out / f"perimage_{bn[0]}x{bn[1]}.json"
        rows = json.loads(path.read_text()) if path.exists() else {}
        missing = [h for h in truth_keys + probe_keys if h not in rows]
        if missing:
            raise SystemExit(f"{path}: {len(missing)} architectures not scored yet")
        c, loss = matrices(rows, truth_keys)
        pc, _ = matrices(rows, probe_keys)
        per_bn[bn] = (c, loss, pc, float(np.mean([rows[h]["cpu_seconds"] for h in truth_keys])))
    c0, l0, _, _ = per_bn[args.bn[0]]
    half = c0.shape[1] // 2
    first, second = np.arange(half), np.arange(half, 2 * half)
    ref_acc, ref_loss = c0[:, second].mean(1), -l0[:, second].mean(1)
    out = {
        "reference": f"bn {args.bn[0][0]}x{args.bn[0][1]}, validation images {half}-{2 * half}",
        "n_archs": len(truth_keys),
        "n_probes": len(probe_keys),
        "reference_acc_vs_loss": tau(ref_acc, ref_loss),
        "reference_vs_truth": {"accuracy": tau(ref_acc, truth), "loss": tau(ref_loss, truth)},
        "rows": [],
    }
    print(
        f"reference ({out['reference']}): accuracy vs -loss tau {out['reference_acc_vs_loss']}; "
        f"against the truth {out['reference_vs_truth']}"
    )
    print(f"{'bn':>6} {'images':>12} {'n':>5} {'score':>6}  tau vs ref acc / -loss / truth")
    for bn, (c, loss, pc, cpu) in per_bn.items():
        p = pc[:, first].mean(0)
        informative = first[np.argsort(-p * (1 - p), kind="stable")]
        for n in [n for n in SIZES if n < half] + [half]:
            for how, idx in (("first", first[:n]), ("informative", informative[:n])):
                if n == half and how == "informative":
                    continue  # the same images
                for what, s in (("acc", c[:, idx].mean(1)), ("-loss", -loss[:, idx].mean(1))):
                    row = {
                        "bn": f"{bn[0]}x{bn[1]}",
                        "images": how,
                        "n": int(n),
                        "score": what,
                        "tau_vs_reference_acc": tau(s, ref_acc),
                        "tau_vs_reference_loss": tau(s, ref_loss),
                        "tau_vs_truth": tau(s, truth),
                    }
                    out["rows"].append(row)
                    print(
                        f"{row['bn']:>6} {how:>12} {n:>5} {what:>6}  "
                        f"{row['tau_vs_reference_acc']:+.3f} / {row['tau_vs_reference_loss']:+.3f}"
                        f" / {row['tau_vs_truth']:+.3f}"
                    )
        if bn != args.bn[0]:
            same = {"accuracy": tau(c.mean(1), c0.mean(1)), "loss": tau(-loss.mean(1), -l0.mean(1))}
            out.setdefault("bn_vs_reference_bn_all_images", {})[f"{bn[0]}x{bn[1]}"] = same
            print(f"{bn[0]}x{bn[1]} against {args.bn[0][0]}x{args.bn[0][1]}, all images: {same}")
        out.setdefault("cpu_seconds_per_arch_all_images", {})[f"{bn[0]}x{bn[1]}"] = cpu
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg, data, splits, model = setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    space, suffix, truth_path = space_and_truth(args, cfg)
    by_seed = rows_by_seed(json.loads(truth_path.read_text())["rows"])
    seed0 = by_seed[min(by_seed)]
    truth_keys = sorted(seed0)
    noise = seed_noise(by_seed)
    truth = np.array([noise["mean"][h] for h in truth_keys])
    rng = random.Random(777)
    probes = {}
    while len(probes) < args.probes:
        a = space.sample(rng)
        if a.hash not in seed0:
            probes["probe_" + a.hash] = space.decode(a.tokens)
    if not args.report_only:
        ckpt = args.out / f"supernet_{args.dataset}{suffix}.pt"
        net, _ = load_or_train(ckpt, space, model, data, settings_from(args), "cpu")
        items = {h: parse_blocks(seed0[h]["blocks"]) for h in truth_keys} | probes
        for bn in args.bn:
            collect(args, net, splits, items, bn)
        if args.part[1] > 1:
            return  # the parts report once all have run: --report-only
    result = report(args, truth_keys, truth, sorted(probes))
    result["truth"] = str(truth_path.relative_to(ROOT))
    result["truth_seeds"] = noise["truth_seeds"]
    (args.out / "supernet_noise.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
