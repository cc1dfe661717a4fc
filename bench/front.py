"""CIFAR-10 front against the MobileNetV2 family: search, retrain with one recipe, time in one
run on this CPU, report.

    D=bench/out/front; export MNAS_DATA=../shared/datasets
    python bench/front.py targets --out $D                 # time the references here (T values)
    python bench/front.py search  --out $D --device cuda --seconds 240 --lut-dir TABLES
    python bench/front.py select  --out $D                 # >= 4 searched architectures
    python bench/front.py train   --out $D --device cuda --jobs 6 --which all
    python bench/front.py time    --out $D                 # every network, one run, this CPU
    python bench/front.py report  --out $D                 # docs/results/cifar10_front.json

Every step is resumable: ``train`` keeps one file per network under ``$D/rows/`` and skips
those that exist; ``search`` keeps each search's run directory (a search killed at its time
limit keeps every child it finished).

- **Set-up**: CIFAR-10 at 32x32, stride-1 stem (``model=small``'s stem), 10 classes.
- **References**: MobileNetV2 at widths 0.35, 0.5, 0.75 and 1.0, MnasNet-A1 and -B1 at 1.0.
- **Search**: single-T searches (``scripts/search.py experiment=cifar10_proxy``, PPO, soft
  reward, the search's trained proxy children: 45,000 images, one epoch at batch 256, scored on
  5,000 held-out ones; ``PROXY``) with T = the latency of MobileNetV2 x0.35 and x0.5 at width
  0.35, of x0.75 at width 0.5 and of x1.0 at width 0.75 (``SEARCHES``), side by side, each
  with its own seed and, on a GPU, ``--workers`` children at once. Latency comes from lookup
  tables built on this CPU (``--lut-dir``: ``cifar10_w{width}.json``, made by
  ``scripts/latency_table.py``); each table's scale is tied to the measured one by MobileNetV2
  at the search's width (the factors are kept in ``lut_scale.json``): targets are converted to
  the table's scale, and predicted latencies back, with it.
- **Selection**: ``--max`` (5) searched architectures: for every MobileNetV2 width the best
  (proxy accuracy) predicted at least 1.3x faster that is not picked already, then for every
  width the best predicted no slower (skipped when it is picked already). A network keeps the
  label of an earlier selection, so re-selecting after more search renames no trained row.
- **Recipe** (one for all): ``--epochs`` (15) on all 50,000 training images, batch 256, SGD
  Nesterov lr 0.2 with 1 warm-up epoch and cosine decay, weight decay 5e-4, label smoothing
  0.1, crop + flip; scored once on the 10,000 test images. ``--repeat-seed`` trains the first
  searched architecture again with seed 1 (the noise a reader needs).
- **Latency**: ONNX Runtime CPU, one thread, batch 1, the search's measured settings, every
  network in one run on one drift-corrected scale (reference: MobileNetV2 at width 1.0):
  ``--passes`` (5) interleaved passes over the distinct networks, the median of each one's
  pass medians (``latency.json`` keeps the passes).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = [
    ("MobileNetV2 x0.35", "mobilenetv2", 0.35),
    ("MobileNetV2 x0.5", "mobilenetv2", 0.5),
    ("MobileNetV2 x0.75", "mobilenetv2", 0.75),
    ("MobileNetV2 x1.0", "mobilenetv2", 1.0),
    ("MnasNet-A1 x1.0", "mnasnet_a1", 1.0),
    ("MnasNet-B1 x1.0", "mnasnet_b1", 1.0),
]
# (search width, MobileNetV2 width whose latency is T). Sampled networks of this space are
# slower than MobileNetV2 at the same width (median 0.85 ms at width 0.35 vs 0.55 ms for x0.35,
# 1.03 ms at 0.5 vs 0.76 ms; lookup tables, 3,000 samples), so the fast targets are searched at
# width 0.35 and the slowest at 0.75, where the wider networks can match its accuracy.
SEARCHES = [(0.35, 0.35), (0.35, 0.5), (0.5, 0.75), (0.75, 1.0)]
# The search's proxy training (overridable with --override): every training image but the
# 5,000 held out for validation, one epoch at batch 256 (176 steps). On a GPU a step of these
# small networks costs about the same at batch 64 or 256, so this reads more images than
# experiment=cifar10_proxy (10,000 images, 2 epochs at batch 64: 312 steps) in less time.
PROXY = [
    "data.train_size=45000",
    "data.val_size=5000",
    "trainer.epochs=1",
    "trainer.batch_size=256",
    "trainer.lr=0.2",
    "trainer.warmup_epochs=0.2",
]
SETUP = dict(input_size=32, in_channels=3, num_classes=10, stem_stride=1)
SPEEDUP = 1.3


def data_root() -> str:
    root = os.environ.get("MNAS_DATA")
    if not root:
        sys.exit("set MNAS_DATA to the folder that holds cifar10-jpeg/ (or cifar-10-batches-py/)")
    return root


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def build(blocks, width: float):
    from mnas.nn import build_model
    from mnas.space import Architecture

    return build_model(
        Architecture.from_blocks(list(blocks)),
        width_mult=width,
        dropout=0.2,
        **{k: v for k, v in SETUP.items() if k != "input_size"},
    )


def latency_evaluator(reference_width: float = 1.0):
    from mnas.latency import LatencySettings
    from mnas.latency.settings import measured_ort_latency

    return measured_ort_latency(
        LatencySettings(kind="measured"),
        SETUP["input_size"],
        SETUP["in_channels"],
        num_classes=SETUP["num_classes"],
        width_mult=reference_width,
        stem_stride=SETUP["stem_stride"],
    )


def reference_rows() -> list[dict]:
    from mnas.space.references import reference

    return [
        {"label": label, "source": "reference", "blocks": list(reference(name).blocks), "width": w}
        for label, name, w in REFERENCES
    ]


# --- targets -------------------------------------------------------------------------------
def cmd_targets(args) -> None:
    ev = latency_evaluator()
    out = {}
    for row in reference_rows():
        stats = ev.measure_model(build(row["blocks"], row["width"]), row["label"])
        out[row["label"]] = stats.median_ms
        print(f"{row['label']:<20} {stats.median_ms:8.3f} ms")
    write_json(args.out / "targets.json", out)


# --- search --------------------------------------------------------------------------------
def cmd_search(args) -> None:
    targets = json.loads((args.out / "targets.json").read_text())
    scale = {}
    if args.lut_dir:
        from mnas.latency.lut import LutLatency
        from mnas.space.references import reference

        for width in sorted({w for w, _ in SEARCHES}):
            lut = LutLatency(args.lut_dir / f"cifar10_w{width}.json", width_mult=width)
            predicted = lut.measure(reference("mobilenetv2")).median_ms
            scale[str(width)] = predicted / targets[f"MobileNetV2 x{width}"]
    write_json(args.out / "lut_scale.json", scale)
    procs = []
    for i, (width, ref_width) in enumerate(SEARCHES):
        target = targets[f"MobileNetV2 x{ref_width}"] * scale.get(str(width), 1.0)
        name = f"w{width}_T{ref_width}"
        run = args.out / "search" / name
        if args.lut_dir:
            table = (args.lut_dir / f"cifar10_w{width}.json").resolve()
            latency = ["latency=lut", f"latency.lut_path={table}"]
        else:  # plumbing checks only: T is then read as MMACs
            latency = ["latency=macs"]
        if args.device.startswith("cuda"):  # children side by side on the GPU
            executor = ["executor=pool", f"executor.gpus_per_worker={1 / args.workers:.4g}"]
        else:
            executor = ["executor=serial"]
        cmd = [
            sys.executable,
            str(ROOT / "scripts" / "search.py"),
            "experiment=cifar10_proxy",
            f"model.width_mult={width}",
            f"reward.target_ms={target:.6g}",
            *latency,
            f"device={args.device}",
            *executor,
            *PROXY,
            f"steps={args.steps}",
            f"seed={args.seed + i}",  # one seed each: the same seed samples the same children
            "tensorboard=false",
            f"hydra.run.dir={run}",
            *args.override,
        ]
        print(" ".join(cmd[1:]), flush=True)
        log = open(args.out / f"search_{name}.log", "w")  # noqa: SIM115 (kept open while it runs)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    start = time.monotonic()
    deadline = start + args.seconds
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(2)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    write_json(
        args.out / "search_meta.json",
        {
            "wall_seconds": time.monotonic() - start,
            "device": args.device,
            "device_name": _device_name(args.device),
            "workers_per_search": args.workers if args.device.startswith("cuda") else 1,
            "searches": [{"width": w, "target": f"MobileNetV2 x{r}"} for w, r in SEARCHES],
            "proxy": PROXY,
        },
    )


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def searched_children(out: Path) -> list[dict]:
    from mnas.search.records import latency_of

    scale = json.loads((out / "lut_scale.json").read_text())
    rows = []
    for results in sorted((out / "search").glob("*/results.jsonl")):
        for line in results.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a search stopped at its time limit
            # latency_ms, or latency_mmacs in a plumbing check with latency=macs
            if r.get("status") == "ok" and latency_of(r):
                run = json.loads((results.parent / "run.json").read_text())
                width = run["model"]["width_mult"]
                # predicted latency on the measured scale of targets.json
                ms = latency_of(r) / scale.get(str(width), 1.0)
                rows.append({**r, "latency_ms": ms, "width": width, "run": results.parent.name})
    return rows


# --- select --------------------------------------------------------------------------------
def cmd_select(args) -> None:
    targets = json.loads((args.out / "targets.json").read_text())
    children = searched_children(args.out)
    if not children:
        sys.exit(f"no finished search children under {args.out / 'search'}")
    # A network keeps the label an earlier selection gave it (its trained row is named by it).
    before = args.out / "selected.json"
    labels = (
        {f"{r['hash']}@{r['width']}": r["label"] for r in json.loads(before.read_text())}
        if before.exists()
        else {}
    )
    used = set(labels.values())
    chosen: dict[str, dict] = {}
    # For every width the best (proxy accuracy) predicted >= 1.3x faster that is not picked
    # already, then the best predicted as fast (skipped when picked already), up to --max.
    mobilenets = [label for label, _, _ in REFERENCES[:4]]
    wanted = [(m, targets[m] / SPEEDUP, f">= {SPEEDUP}x faster than", True) for m in mobilenets]
    wanted += [(m, targets[m], "as fast as", False) for m in mobilenets]
    for label, bound, why, distinct in wanted:
        if len(chosen) >= args.max:
            print(f"{label}: not picked for '{why}' it (--max {args.max} reached)")
            continue
        fits = [c for c in children if c["latency_ms"] <= bound]
        if distinct:
            fits = [c for c in fits if f"{c['hash']}@{c['width']}" not in chosen]
        if not fits:
            more = " and not picked already" if distinct else ""
            print(f"{label}: no searched child predicted {why} it ({bound:.3f} ms){more}")
            continue
        best = max(fits, key=lambda c: (c["accuracy"], -c["latency_ms"]))
        key = f"{best['hash']}@{best['width']}"
        if key not in chosen:
            name = labels.get(key)
            if name is None:
                name = next(f"searched {i}" for i in range(1, 100) if f"searched {i}" not in used)
                used.add(name)
            chosen[key] = {
                "label": name,
                "source": "search",
                "blocks": best["blocks"],
                "width": best["width"],
                "hash": best["hash"],
                "run": best["run"],
                "proxy_accuracy": best["accuracy"],
                "predicted_latency_ms": best["latency_ms"],
                "chosen_for": f"{why} {label}",
            }
    rows = list(chosen.values())
    for r in rows:
        print(
            f"{r['label']:<11} w{r['width']} proxy {r['proxy_accuracy']:.3f} "
            f"predicted {r['predicted_latency_ms']:.3f} ms  ({r['chosen_for']})"
        )
    print(f"{len(rows)} architectures chosen from {len(children)} searched children")
    write_json(args.out / "selected.json", rows)


# --- train ---------------------------------------------------------------------------------
def recipe(args) -> dict:
    return dict(
        epochs=args.epochs,
        batch_size=256,
        optimizer="sgd",
        lr=0.2,
        warmup_epochs=1.0,
        weight_decay=5e-4,
        label_smoothing=0.1,
        augment=True,
        bn_recalibrate=False,
        threads=args.threads,
    )


_SPLITS = None


def _train_one(job: tuple[dict, dict, str, str]) -> str:
    import torch

    from mnas.nn.stats import model_stats
    from mnas.training import TrainConfig, train_and_evaluate
    from mnas.training.device import resolve_device

    row, rec, device, path = job
    device = resolve_device(device)
    torch.manual_seed(row["seed"])
    model = build(row["blocks"], row["width"])
    stats = model_stats(model, SETUP["input_size"], SETUP["in_channels"])
    config = TrainConfig(**rec, seed=row["seed"])
    result = train_and_evaluate(model, _SPLITS, config, eval_split="test", device=device)
    out = {
        **row,
        "test_accuracy": result.accuracy,
        "diverged": result.diverged,
        "params": stats.params,
        "macs": stats.macs,
        "train_seconds": result.seconds,
        "device": result.device,
        "precision": result.precision,
        "device_name": _device_name(device),
        "recipe": asdict(config),
    }
    write_json(Path(path), out)
    return f"{row['label']} seed {row['seed']}: test {result.accuracy:.4f} ({result.seconds:.0f} s)"


def _load_splits(path: str) -> None:
    import torch

    global _SPLITS
    _SPLITS = torch.load(path, weights_only=False)


def cmd_train(args) -> None:
    import torch

    from mnas.data import load_dataset

    # In the order they are started, so a run stopped at a time limit has trained what the
    # verdict needs most: the searched networks, MobileNetV2 x1.0 (the widest reference), the
    # second seed, then the rest of the references.
    rows = []
    if args.which in ("searched", "all"):
        selected = json.loads((args.out / "selected.json").read_text())
        rows += selected
        if args.repeat_seed and selected:
            rows.append({**selected[0], "label": f"{selected[0]['label']} (seed 1)", "seed": 1})
    if args.which in ("references", "all"):
        rows += reference_rows()

    def rank(r: dict) -> int:
        if r["source"] == "search" and "seed" not in r:
            return 0
        return 1 if r["label"] == "MobileNetV2 x1.0" else 2  # then the second seed, the rest

    rows.sort(key=rank)  # stable
    rows = [{"seed": 0, **r} for r in rows]
    (args.out / "rows").mkdir(parents=True, exist_ok=True)
    jobs = []
    for r in rows:
        path = (
            args.out
            / "rows"
            / (r["label"].replace(" ", "_").replace("(", "").replace(")", "") + ".json")
        )
        if not path.exists():
            jobs.append((r, recipe(args), args.device, str(path)))
    print(f"{len(rows)} networks, {len(rows) - len(jobs)} done, {len(jobs)} to train", flush=True)
    if not jobs:
        return
    start = time.perf_counter()
    # Loaded (and its JPEGs decoded) once; workers are spawned (a fork after torch has
    # started its thread pool can hang) and read the tensors from one file.
    splits = load_dataset(
        "cifar10",
        root=data_root(),
        image_size=32,
        train_size=args.train_size,
        val_size=0,
        test_size=args.test_size,
    )
    cache = args.out / "splits.pt"
    torch.save(splits, cache)
    print(
        f"data: {len(splits.train_y)} train / {len(splits.test_y)} test images "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    ctx = mp.get_context("spawn")
    with ctx.Pool(
        min(args.jobs, len(jobs)), initializer=_load_splits, initargs=(str(cache),)
    ) as pool:
        for msg in pool.imap_unordered(_train_one, jobs):
            print(f"[{time.perf_counter() - start:5.0f} s] {msg}", flush=True)


# --- time ----------------------------------------------------------------------------------
def all_rows(out: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted((out / "rows").glob("*.json"))]
    order = {label: i for i, (label, _, _) in enumerate(REFERENCES)}
    return sorted(
        rows, key=lambda r: (r["source"] != "reference", order.get(r["label"], 0), r["label"])
    )


def cmd_time(args) -> None:
    """Every distinct network (a second seed is the same network) timed in ``--passes``
    interleaved passes; its latency is the median of its pass medians, its spread the
    range of those, relative to it."""
    import numpy as np

    ev = latency_evaluator()
    rows = all_rows(args.out)
    nets: dict[str, list[str]] = {}  # architecture -> the labels that share it
    models = {}
    for row in rows:
        key = ",".join(row["blocks"]) + f"@{row['width']}"
        nets.setdefault(key, []).append(row["label"])
        models.setdefault(key, build(row["blocks"], row["width"]))
    passes: dict[str, list] = {key: [] for key in nets}
    for i in range(args.passes):
        for key, labels in nets.items():
            passes[key].append(ev.measure_model(models[key], labels[0]))
        print(f"pass {i + 1}/{args.passes} done", flush=True)
    out = {}
    for key, labels in nets.items():
        ms = np.array([s.median_ms for s in passes[key]])
        med = float(np.median(ms))
        for label in labels:
            out[label] = {
                "latency_ms": med,
                "pass_ms": ms.round(4).tolist(),
                "spread_rel": float((ms.max() - ms.min()) / med),
                "scale": passes[key][0].scale,
            }
        print(f"{' = '.join(labels):<36} {med:8.3f} ms  (passes {ms.min():.3f}-{ms.max():.3f})")
    write_json(args.out / "latency.json", out)


# --- report --------------------------------------------------------------------------------
def cmd_report(args) -> None:
    lat = json.loads((args.out / "latency.json").read_text())
    rows = []
    for r in all_rows(args.out):
        rows.append(
            {
                "label": r["label"],
                "source": r["source"],
                "blocks": r["blocks"],
                "width_mult": r["width"],
                "latency_ms": lat[r["label"]]["latency_ms"],
                "test_accuracy": r["test_accuracy"],
                "params": r["params"],
                "macs": r["macs"],
                "seed": r["seed"],
                "latency_passes_ms": lat[r["label"]].get("pass_ms"),
                "device": r["device_name"],
                "precision": r["precision"],
                "train_seconds": r["train_seconds"],
                **{
                    k: r[k]
                    for k in ("proxy_accuracy", "predicted_latency_ms", "chosen_for")
                    if k in r
                },
            }
        )
    budget = compute_budget(args.out)
    refs = [r for r in rows if r["source"] == "reference" and r["label"].startswith("MobileNetV2")]
    found = [r for r in rows if r["source"] == "search"]
    verdicts = []
    for ref in refs:
        faster = [
            f
            for f in found
            if f["test_accuracy"] >= ref["test_accuracy"]
            and ref["latency_ms"] / f["latency_ms"] >= SPEEDUP
        ]
        better = [
            f
            for f in found
            if f["latency_ms"] <= ref["latency_ms"]
            and f["test_accuracy"] - ref["test_accuracy"] >= 0.01
        ]
        verdicts.append(
            {
                "reference": ref["label"],
                "beaten_faster": [f["label"] for f in faster],
                "beaten_more_accurate": [f["label"] for f in better],
            }
        )
    doc = {"budget": budget, "rows": rows, "verdicts": verdicts}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, doc)
    print(f"{'label':<24} {'source':<9} {'ms':>7} {'test acc':>8} {'MMACs':>7} {'params':>8}")
    for r in rows:
        print(
            f"{r['label']:<24} {r['source']:<9} {r['latency_ms']:7.3f} "
            f"{100 * r['test_accuracy']:8.2f} {r['macs'] / 1e6:7.1f} {r['params']:8d}"
        )
    for v in verdicts:
        print(
            f"{v['reference']}: faster+as accurate {v['beaten_faster'] or '-'}; "
            f"as fast+1pt {v['beaten_more_accurate'] or '-'}"
        )
    fig = plot(rows, args.figure)
    tensorboard(fig, rows, verdicts, args.out / "tensorboard")
    print(f"wrote {args.json}, {args.figure} and {args.out / 'tensorboard'}")


def compute_budget(out: Path) -> dict:
    """The recipe (the same for every row), the set-up, and the compute spent: the search's
    wall time and children, and the training seconds per device."""
    trained = [json.loads(p.read_text()) for p in sorted((out / "rows").glob("*.json"))]
    recipes = {
        json.dumps({k: v for k, v in r["recipe"].items() if k not in ("seed", "threads")})
        for r in trained
    }
    if len(recipes) != 1:
        raise SystemExit(f"rows were trained with {len(recipes)} different recipes: {recipes}")
    seconds: dict[str, float] = {}
    for r in trained:
        seconds[r["device_name"]] = seconds.get(r["device_name"], 0.0) + r["train_seconds"]
    children = searched_children(out) if (out / "lut_scale.json").exists() else []
    meta = out / "search_meta.json"
    search = json.loads(meta.read_text()) if meta.exists() else {}
    search["children"] = len(children)
    search["child_train_seconds"] = sum(c.get("train_seconds", 0.0) for c in children)
    return {
        "recipe": json.loads(recipes.pop()),
        "setup": SETUP,
        "search": search,
        "training_seconds": seconds,
        "networks_trained": len(trained),
    }


def tensorboard(fig, rows: list[dict], verdicts: list[dict], logdir: Path) -> None:
    """The figure, the table and the verdicts under ``IMAGES``/``TEXT`` of ``logdir``."""
    from torch.utils.tensorboard import SummaryWriter

    table = ["| label | source | latency ms | test acc % | MMACs | params |", "|---" * 6 + "|"]
    table += [
        f"| {r['label']} | {r['source']} | {r['latency_ms']:.3f} | "
        f"{100 * r['test_accuracy']:.2f} | {r['macs'] / 1e6:.1f} | {r['params']:,} |"
        for r in rows
    ]
    said = [
        f"- {v['reference']}: faster and as accurate: {', '.join(v['beaten_faster']) or 'none'}; "
        f"as fast and 1 point better: {', '.join(v['beaten_more_accurate']) or 'none'}"
        for v in verdicts
    ]
    with SummaryWriter(str(logdir)) as writer:
        writer.add_figure("front/accuracy_vs_latency", fig, 0)
        writer.add_text("front/table", "\n".join(table), 0)
        writer.add_text("front/verdicts", "\n".join(said), 0)


def plot(rows: list[dict], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for source, marker, color in (("reference", "s", "tab:gray"), ("search", "o", "tab:blue")):
        pts = [r for r in rows if r["source"] == source]
        ax.scatter(
            [r["latency_ms"] for r in pts],
            [100 * r["test_accuracy"] for r in pts],
            marker=marker,
            color=color,
            label=source,
        )
        for r in pts:
            ax.annotate(
                r["label"].replace("MobileNetV2 ", "MBv2 ").replace("searched ", "S"),
                (r["latency_ms"], 100 * r["test_accuracy"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("latency, ms (ONNX Runtime CPU, 1 thread, batch 1, this machine)")
    ax.set_ylabel("CIFAR-10 test accuracy, %")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return fig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("targets", "search", "select", "train", "time", "report"):
        s = sub.add_parser(name)
        s.add_argument("--out", type=Path, required=True)
        if name in ("search", "train"):
            s.add_argument("--device", default="auto")
        if name == "select":
            s.add_argument("--max", type=int, default=5, help="searched networks to retrain")
        if name == "search":
            s.add_argument("--seconds", type=float, default=240)
            s.add_argument("--steps", type=int, default=100)
            s.add_argument("--seed", type=int, default=0, help="of the first search (+1 each)")
            s.add_argument(
                "--workers", type=int, default=4, help="children at once per search (GPU)"
            )
            s.add_argument("--lut-dir", type=Path, help="default: latency=macs (checks only)")
            s.add_argument("--override", action="append", default=[], help="search override")
        if name == "train":
            s.add_argument("--jobs", type=int, default=4)
            s.add_argument("--threads", type=int, default=1, help="torch threads per job")
            s.add_argument("--epochs", type=float, default=15)
            s.add_argument("--train-size", type=int, help="checks only (default: all)")
            s.add_argument("--test-size", type=int, help="checks only (default: all)")
            s.add_argument("--which", choices=("references", "searched", "all"), default="all")
            s.add_argument("--repeat-seed", action=argparse.BooleanOptionalAction, default=True)
        if name == "time":
            s.add_argument("--passes", type=int, default=5, help="interleaved timing passes")
        if name == "report":
            s.add_argument("--json", type=Path, default=ROOT / "docs/results/cifar10_front.json")
            s.add_argument("--figure", type=Path, default=ROOT / "docs/img/cifar10_front.png")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    globals()[f"cmd_{args.cmd}"](args)


if __name__ == "__main__":
    main()
