"""Design data for the block models of the latency predictor (issue 19).

Three steps, each its own sub-command:

``collect``: time ``--n`` random architectures with the search's own evaluator (the
set-up of ``bench/predictor.py``'s ``--size``, plus ``--override``) and profile each with ONNX
Runtime's profiler, keeping each network's time per block
(:func:`mnas.latency.profile.block_times`); resumable, saved every 10 networks::

    MNAS_DATA=../shared/datasets PYTHONPATH=$PWD taskset -c 0 python bench/predictor_blocks.py \\
        collect --size 224 --n 300 --seed 7 --out D.json --override latency.repeats=3

``compare D.json``: every model kind fitted to ``--train`` random networks of the file and
scored on the rest, ``--reps`` random splits (no timing).

``refit D.json --base P.json``: a predictor built at another set-up re-fitted to 10 random
networks of the file, without and with their block times (the ``kind_scales`` candidate),
scored on the rest (``--reps`` splits; no timing).

These networks are for choosing designs: ``bench/predictor.py``'s held-out networks (another
seed) are what is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor import SIZES, compose_setup  # noqa: E402

from mnas.latency import Predictor, fit_predictor, measured_ort_latency  # noqa: E402
from mnas.latency.fit import MODEL_KINDS, scores  # noqa: E402
from mnas.latency.profile import block_times  # noqa: E402
from mnas.latency.refit import refit_to_timings  # noqa: E402
from mnas.space import MnasSpace, specs_of  # noqa: E402


def collect(size: str, n: int, seed: int, out: Path, overrides: list[str]) -> None:
    _, settings, setup = compose_setup([*SIZES[size], *overrides])
    ev = measured_ort_latency(settings, **setup)
    ev.nominal()
    data = json.loads(out.read_text()) if out.exists() else {}
    data.update(size=size, setup=setup, overrides=overrides, seed=seed)
    records = data.setdefault("records", [])
    rng = random.Random(seed)
    space = MnasSpace()
    archs = [space.sample(rng) for _ in range(n)]
    for arch in archs[len(records) :]:
        t0 = time.perf_counter()
        stats, profile = ev.measure_profiled(arch)
        records.append(
            {
                "key": arch.key,
                "tokens": list(arch.tokens),
                "median_ms": stats.median_ms,
                "blocks_us": block_times(profile, [s.repeats for s in specs_of(arch)]),
                "run_us": profile.run_us,
                "node_us": profile.node_us,
                "seconds": time.perf_counter() - t0,
                "load": os.getloadavg()[0],
            }
        )
        if len(records) % 10 == 0 or len(records) == n:
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, out)
            print(f"  {len(records)}/{n}", flush=True)


def _fit_setup(setup: dict) -> dict:
    """What a predictor records of the collected set-up (the evaluator's keywords)."""
    size, chans = setup["input_size"], setup["in_channels"]
    return {
        "input_shape": [1, chans, size, size],
        "num_classes": setup["num_classes"],
        "width_mult": setup["width_mult"],
        "stem_stride": setup["stem_stride"],
        "threads": 1,
    }


def _load(path: Path):
    data = json.loads(path.read_text())
    space = MnasSpace()
    recs = data["records"]
    archs = [space.architecture(r["tokens"]) for r in recs]
    y = np.array([r["median_ms"] for r in recs])
    blocks = np.array([r["blocks_us"] for r in recs]) / 1000
    return data, archs, y, blocks


def _summary(rows: dict[str, list[dict]]) -> dict:
    keys = ("within_10", "within_5", "mape", "kendall_tau")
    out = {name: {k: float(np.mean([s[k] for s in ss])) for k in keys} for name, ss in rows.items()}
    for name, s in out.items():
        print(
            f"  {name:>22}: within +-10% {100 * s['within_10']:5.1f}%, +-5% "
            f"{100 * s['within_5']:5.1f}%, MAPE {s['mape']:4.1f}%, tau {s['kendall_tau']:.3f}"
        )
    return out


def compare(path: Path, train: int, reps: int) -> dict:
    data, archs, y, blocks = _load(path)
    rng = np.random.default_rng(0)
    rows: dict[str, list[dict]] = {}
    for _ in range(reps):
        perm = rng.permutation(len(y))
        tr, te = perm[:train], perm[train:]
        for kind in MODEL_KINDS:
            p = fit_predictor(
                _fit_setup(data["setup"]),
                [archs[i] for i in tr],
                y[tr].tolist(),
                model=kind,
                block_ms=blocks[tr].tolist(),
            )
            rows.setdefault(kind, []).append(scores([p.predict(archs[i]) for i in te], y[te]))
        # each network's own profile, summed and scaled (a, c fitted on the training split)
        total = blocks.sum(axis=1)
        design = np.column_stack([np.ones(len(tr)), total[tr]]) / y[tr][:, None]
        (a, c), *_ = np.linalg.lstsq(design, np.ones(len(tr)), rcond=None)
        rows.setdefault("own profile, scaled", []).append(scores(a + c * total[te], y[te]))
    print(f"{path}: {len(y)} networks, {reps} splits of {train} fitted / {len(y) - train} scored")
    return {"train": train, "reps": reps, "kinds": _summary(rows)}


def refit(path: Path, base_path: Path, reps: int, n_fit: int = 10) -> dict:
    data, archs, y, blocks = _load(path)
    base = Predictor.load(base_path)
    setup = {**base.setup, **_fit_setup(data["setup"])}
    rng = np.random.default_rng(1)
    rows: dict[str, list[dict]] = {}
    chosen: dict[str, list[str]] = {}
    for _ in range(reps):
        perm = rng.permutation(len(y))
        tr, te = perm[:n_fit], perm[n_fit:]
        for name, blk in (("without profiles", None), ("with profiles", blocks[tr].tolist())):
            p = refit_to_timings(base, setup, [archs[i] for i in tr], y[tr].tolist(), blk)
            rows.setdefault(name, []).append(scores([p.predict(archs[i]) for i in te], y[te]))
            chosen.setdefault(name, []).append(p.data["calibration"]["kind"])
    print(f"{base_path} re-fitted to {path} from {n_fit} networks, {reps} splits")
    out = _summary(rows)
    for name, c in chosen.items():
        out[name]["chosen"] = {k: c.count(k) for k in sorted(set(c))}
        print(f"  {name}: chosen {out[name]['chosen']}")
    return {"n_fit": n_fit, "reps": reps, "base": str(base_path), "results": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--size", choices=list(SIZES), required=True)
    c.add_argument("--n", type=int, default=300)
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--override", nargs="*", default=[])
    m = sub.add_parser("compare")
    m.add_argument("data", type=Path)
    m.add_argument("--train", type=int, default=200)
    m.add_argument("--reps", type=int, default=3)
    r = sub.add_parser("refit")
    r.add_argument("data", type=Path)
    r.add_argument("--base", type=Path, required=True)
    r.add_argument("--reps", type=int, default=10)
    for q in (m, r):
        q.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.cmd == "collect":
        collect(args.size, args.n, args.seed, args.out, args.override)
        return 0
    if args.cmd == "compare":
        if not 10 <= args.train:
            p.error(f"--train={args.train}; allowed: >= 10")
        result = compare(args.data, args.train, args.reps)
    else:
        result = refit(args.data, args.base, args.reps)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
