"""Latency predictor benchmark (issue 19): held-out accuracy, noise floor, build time, query
time, few-shot re-fit.

    taskset -c 0 python bench/predictor.py --out bench/out/pred            # everything
    taskset -c 0 python bench/predictor.py --out DIR --stage heldout       # only time held-out
    taskset -c 0 python bench/predictor.py --out DIR --stage drift         # re-time them later

For each set-up (``16``: the default search, digits 16x16x1, width 0.5, stride-1 stem;
``32``: ``experiment=cifar10_proxy``, 32x32x3; ``224``: ``experiment=cifar10_proxy
model=imagenet data.image_size=224``) it

1. times ``--n-heldout`` random architectures (a seed the predictor never sees) twice,
   one pass after the other, with the search's own evaluator (its settings from the
   config, drift-corrected against the nominal in the search's cache, never answered from
   the cache): the second pass against the first is the measurement's noise floor;
2. builds the predictor with the same code as ``scripts/latency_table.py --predictor``
   (times its own training networks) and records the build's seconds;
3. compares predictions with the first pass: share within +-10% and +-5%, Kendall tau,
   MAPE, and the same for pass 2 against pass 1 (``noise_floor_*``); and the same for the
   predictor re-fitted to the first 200, 400 and 600 of its training networks
   (``fewer_networks``: what the default's extra networks give, on the same timings);
4. times the query (``predict(arch)`` over the held-out set, many times);
5. few-shot: re-fits the 16x16 and 32x32 predictors to another set-up from ``--few-shot``
   timed networks, keeps the re-fit with the lowest leave-one-out error, and checks it on
   held-out networks of that set-up.

Measurements are stored in ``DIR`` as they are made (``heldout_<size>.json``,
``table_<size>.json``); a later run reuses what is there, so the stages can run apart
(``--stage drift`` adds a pass of the same held-out networks, to show drift over time).
From every two passes it estimates what a noise-free predictor could reach against one
timing (``ceiling``: the goal's figures have no meaning above it), and with three passes it
scores the predictor against their mean.
Writes ``DIR/predictor.json`` and prints the same as a table. Pin it to one core
(``taskset -c 0``): timing on one core with one ORT thread is what the predictor predicts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.arguments import latency_settings
from mnas.conf.runner import latency_setup_from
from mnas.latency import (
    Predictor,
    fit_predictor,
    machine_description,
    measured_ort_latency,
    refit_predictor,
)
from mnas.latency.features import FEATURES, BlockFeatures
from mnas.latency.fit import kendall_tau, pearson_from_tau, scores, tau_from_pearson
from mnas.latency.predictor import net_setup, with_layout
from mnas.latency.settings import AUTO_NETWORKS
from mnas.space import MnasSpace

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZES = {
    "16": [],
    "32": ["experiment=cifar10_proxy"],
    "224": ["experiment=cifar10_proxy", "model=imagenet", "data.image_size=224"],
}
HELDOUT_SEED = 1_000_019


def compose_setup(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    return cfg, latency_settings(cfg.latency), latency_setup_from(cfg)


def heldout_archs(size: str, n: int) -> list:
    space = MnasSpace()
    rng = random.Random(HELDOUT_SEED + int(size))
    seen, out = set(), []
    while len(out) < n:
        arch = space.sample(rng)
        if arch.key not in seen:
            seen.add(arch.key)
            out.append(arch)
    return out


# result keys of the re-fits (``--few-shot-to`` items)
FEW_SHOT_NAMES = {
    "experiment=fashion_mnist_proxy": "input_size_28",
    "latency.threads=2": "threads_2",
    "experiment=cifar10_proxy model=imagenet data.image_size=192": "input_size_192",
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, data: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def time_pass(path: Path, label: str, archs, settings, setup) -> list[dict]:
    """One pass of the search's evaluator over ``archs``, saved after every network (a
    killed run resumes where it stopped)."""
    data = _load(path)
    passes = data.setdefault("passes", {})
    records = passes.setdefault(label, [])
    ev = measured_ort_latency(settings, **setup)
    ev.nominal()
    for arch in archs[len(records) :]:
        s = ev.measure_afresh(arch)
        records.append(
            {
                "key": arch.key,
                "median_ms": s.median_ms,
                "ci_rel": s.ci_rel,
                "raw_median_ms": s.raw_median_ms,
                "wall_median_ms": s.wall_median_ms,
                "drift_factor": s.drift_factor,
                "runs": s.runs,
                "t": time.time(),
                "load": os.getloadavg()[0],
            }
        )
        if len(records) % 20 == 0 or len(records) == len(archs):
            data["nominal_ms"] = s.nominal_ms
            data["setup"] = setup
            _save(path, data)
            print(f"  {path.name} {label}: {len(records)}/{len(archs)}", flush=True)
    return records


def refit_from(out: Path, size: str, source: Path) -> None:
    """``out``'s predictor for ``size`` fitted afresh, with this mnas's features and model
    choice, to the training timings of the one built in ``source`` (the same networks and
    measurements; its build's seconds kept, the fit's added), and ``source``'s held-out
    timings copied beside it, unless ``out`` already holds them."""
    path = out / f"predictor_{size}.json"
    if not (out / f"heldout_{size}.json").exists():
        shutil.copy(source / f"heldout_{size}.json", out / f"heldout_{size}.json")
    if path.exists():
        return
    # the raw file: a predictor of older features is refused by Predictor.load
    old = json.loads((source / f"predictor_{size}.json").read_text())
    space, t = MnasSpace(), old["training"]
    predictor = fit_predictor(
        with_layout(old["setup"]),
        [space.architecture(tokens) for tokens in t["tokens"]],
        t["measured_ms"],
        timing_seconds=old.get("timing_seconds"),
        block_ms=t.get("block_ms"),
        passes_ms=t.get("passes_ms"),
    )
    seconds = float((source / f"build_{size}.seconds").read_text())
    seconds += predictor.data["fit_seconds"] - old.get("fit_seconds", 0.0)
    predictor.data["build_seconds"] = seconds
    predictor.data["refitted_from"] = str(source / f"predictor_{size}.json")
    predictor.save(path)
    (out / f"build_{size}.seconds").write_text(f"{seconds:.1f}\n")


def build(out: Path, size: str, networks: int) -> tuple[Path, float]:
    """The predictor for ``size``, built by the command a user runs (its own process),
    unless ``out`` already holds it; returns its path and the command's seconds."""
    path = out / f"predictor_{size}.json"
    log = out / f"build_{size}.log"
    if not path.exists():
        cmd = [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "scripts" / "latency_table.py"),
            "--predictor",
            "--networks",
            str(networks),
            "--out",
            str(path),
            *SIZES[size],
        ]
        print("  $", " ".join(cmd[1:]), flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
        (out / f"build_{size}.seconds").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return path, float((out / f"build_{size}.seconds").read_text())


def query_us(predictor: Predictor, archs, blocks: int = 5, reps: int = 4) -> dict:
    """Microseconds per ``predict(arch)``: the first pass over ``archs`` (block vectors
    computed), the mean of ``blocks`` x ``reps`` later passes (from the precomputed blocks)
    and the fastest of those blocks (what the code costs when nothing else holds the core;
    the mean also holds the machine's interruptions)."""
    fresh = Predictor(predictor.data, predictor.path)
    t0 = time.perf_counter()
    for a in archs:
        fresh.predict(a)
    cold = (time.perf_counter() - t0) / len(archs) * 1e6
    per_block = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(reps):
            for a in archs:
                fresh.predict(a)
        per_block.append((time.perf_counter() - t0) / (reps * len(archs)) * 1e6)
    # the machine's speed at that moment: one small numpy addition (~0.4 us on an idle core)
    x = np.ones(len(FEATURES))
    t0 = time.perf_counter()
    for _ in range(20_000):
        x + x  # noqa: B018
    numpy_add = (time.perf_counter() - t0) / 20_000 * 1e6
    return {
        "first_pass": cold,
        "repeated": sum(per_block) / blocks,
        "repeated_best_block": min(per_block),
        "numpy_add_us": numpy_add,
    }


def by_kind(predictor: Predictor, archs, measured: list[float]) -> dict:
    """Held-out :func:`scores` of every model kind the predictor's cross-validation
    compared, each fitted to the same training networks (and block times)."""
    train = predictor.data["training"]
    space = MnasSpace()
    fitted = [space.architecture(t) for t in train["tokens"]]
    out = {}
    for kind in predictor.data["cross_validation"]:
        p = fit_predictor(
            predictor.setup,
            fitted,
            train["measured_ms"],
            model=kind,
            block_ms=train.get("block_ms"),
        )
        out[kind] = scores([p.predict(a) for a in archs], measured)
    return out


def training_data(predictor: Predictor):
    """Features, measured ms and ``(block features, block times)`` of the predictor's
    training networks (block times None where they were not profiled)."""
    train = predictor.data["training"]
    space = MnasSpace()
    archs = [space.architecture(t) for t in train["tokens"]]
    feats = BlockFeatures(net_setup(predictor.setup), space)
    x = np.array([feats(a) for a in archs])
    y = np.asarray(train["measured_ms"], dtype=np.float64)
    block_x = feats.matrix[np.asarray([feats.rows(a) for a in archs])]
    block_ms = train.get("block_ms")
    return x, y, (block_x, None if not block_ms else np.asarray(block_ms, dtype=np.float64))


def fewer_networks(
    predictor: Predictor, archs, measured: list[float], mean: list[float] | None = None
) -> dict:
    """The predictor re-fitted (``model=auto``, the same code as the build) to the first
    200, 400 and 600 of its own training networks, where it has more: what the extra
    networks gave, on the same timings. Each row: the kind cross-validation chose, its
    cross-validated scores and its scores on the held-out networks' first pass (and,
    given, on the mean of their passes: ``heldout_vs_mean``)."""
    train = predictor.data["training"]
    total = len(train["archs"])
    space = MnasSpace()
    blocks = train.get("block_ms")
    rows = {}
    for n in (200, 400, 600):
        if n >= total:
            continue
        fitted = fit_predictor(
            predictor.setup,
            [space.architecture(t) for t in train["tokens"][:n]],
            train["measured_ms"][:n],
            block_ms=None if blocks is None else blocks[:n],
        )
        kind = fitted.model.kind
        pred = [fitted.predict(a) for a in archs]
        rows[str(n)] = {
            "model": kind,
            "cross_validation": fitted.data["cross_validation"][kind],
            "heldout": scores(pred, measured),
        }
        if mean is not None:
            rows[str(n)]["heldout_vs_mean"] = scores(pred[: len(mean)], mean)
    return rows


def drift_row(pred: list[float], pass1: list[dict], drift: list[dict]) -> dict:
    """How the held-out networks' later timing (``drift``, the first ``len(drift)`` of them)
    differs from their first (``pass1``), and how the predictions ``pred`` agree with the
    later timing and with the mean of both."""
    m = len(drift)
    first = [r["median_ms"] for r in pass1[:m]]
    later = [r["median_ms"] for r in drift]
    hours = (np.median([r["t"] for r in drift]) - np.median([r["t"] for r in pass1[:m]])) / 3600
    return {
        "n": m,
        "hours_after_pass1": float(hours),
        "median_diff_pct": float(np.median(np.abs(np.divide(later, first) - 1)) * 100),
        "median_ratio": float(np.median(np.divide(later, first))),
        "vs_pass1": scores(later, first),
        "predictor_vs_drift_pass": scores(pred[:m], later),
        # two timings hours apart, averaged: less noise than either
        "predictor_vs_mean_of_pass1_and_drift": scores(
            pred[:m], (np.add(first, later) / 2).tolist()
        ),
    }


def timing_ceiling(first: Sequence[float], second: Sequence[float]) -> dict:
    """What a noise-free predictor could reach against *one* timing, estimated from two
    timings of the same networks.

    Model: each timing is the network's latency times ``exp(e)``, ``e`` independent, with
    one distribution symmetric about 0 for every timing. The log ratio of two timings is then
    ``e1 - e2``; divided by sqrt(2) it has the variance of one ``e`` (its shape is closer to
    a normal one than ``e``'s, so heavy tails make the true ceiling lower, not higher). A
    predictor that knew every latency exactly would be off a timing by ``exp(-e)``: the
    share within +-10% / +-5% is counted over both signs of each scaled log ratio. Kendall
    tau from the normal model: the two timings correlate at ``r = sin(pi tau / 2)``, the
    latency with one timing at ``sqrt(r)``."""
    d = np.log(np.divide(first, second)) / np.sqrt(2)
    rel = np.abs(np.exp(np.concatenate([d, -d])) - 1)
    r = pearson_from_tau(kendall_tau(first, second))
    return {
        "n": len(d),
        "within_10": float(np.mean(rel <= 0.10)),
        "within_5": float(np.mean(rel <= 0.05)),
        "kendall_tau": tau_from_pearson(math.sqrt(max(r, 0.0))),
    }


def passes_rows(pred: list[float], passes: dict[str, list[dict]]) -> dict:
    """For every two timing passes of the held-out networks (on the networks both timed),
    :func:`timing_ceiling`; and the predictions against the mean of all passes, on the
    networks every pass timed."""
    timed = {k: [r["median_ms"] for r in v] for k, v in passes.items() if v}
    names = list(timed)
    rows: dict = {"ceiling": {}}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            m = min(len(timed[a]), len(timed[b]))
            rows["ceiling"][f"{a}-{b}"] = timing_ceiling(timed[a][:m], timed[b][:m])
    if len(names) > 2:
        m = min(len(v) for v in timed.values())
        mean = np.mean([timed[k][:m] for k in names], axis=0)
        rows["predictor_vs_mean_of_all_passes"] = {
            "passes": names,
            **scores(pred[:m], mean.tolist()),
        }
    return rows


def evaluate(out: Path, size: str, archs, build_seconds: float) -> dict:
    data = _load(out / f"heldout_{size}.json")
    passes = data["passes"]
    n = len(passes["pass1"])
    later = passes.get("pass2", [])  # (none with --n-noise 0: the drift pass then)
    k = min(n, len(later))
    archs = archs[:n]
    for a, r in zip(archs, passes["pass1"], strict=False):
        assert a.key == r["key"], "held-out networks changed since they were timed"
    predictor = Predictor.load(out / f"predictor_{size}.json")
    predicted = [predictor.predict_detail(a) for a in archs]
    pred = [p.ms for p in predicted]
    first = [r["median_ms"] for r in passes["pass1"][:n]]
    second = [r["median_ms"] for r in later[:k]]
    s = scores(pred, first)
    row = {
        "n_heldout": n,
        **{k: s[k] for k in ("within_10", "within_5", "kendall_tau", "mape")},
        "out_of_range": sum(not p.in_range for p in predicted),
        "model": predictor.model.kind,
        "by_kind": by_kind(predictor, archs, first),
        "training_networks": len(predictor.data["training"]["archs"]),
        "timing_passes": max(map(len, predictor.data["training"].get("passes_ms") or [[0]])),
        "cross_validation": predictor.data["cross_validation"],
        "build_seconds": build_seconds,
        "query_us": query_us(predictor, archs),
        "median_ms": float(np.median(first)),
        "median_ci_rel": float(np.median([r["ci_rel"] or np.nan for r in passes["pass1"][:n]])),
        "median_load": float(np.median([r["load"] for r in passes["pass1"][:n]])),
    }
    mean = (np.add(first[:k], second) / 2).tolist() if k >= 3 else None
    if mean is not None:
        row.update(
            noise_floor_pct=float(np.median(np.abs(np.divide(second, first[:k]) - 1)) * 100),
            noise_floor=scores(second, first[:k]),
            vs_pass2=scores(pred[:k], second),
            vs_mean_of_passes=scores(pred[:k], mean),
        )
    row["fewer_networks"] = fewer_networks(predictor, archs, first, mean)
    drift = passes.get("drift", [])
    if len(drift) >= n // 2:
        row["drift"] = drift_row(pred, passes["pass1"], drift)
    row.update(passes_rows(pred, passes))
    return row


# what a re-fit's calibration holds (``split``: two scales; ``kind_scales``: one per
# operator kind, the prior and the network's scale; else slope and intercept)
SCALE_KEYS = (
    "node_scale",
    "work_scale",
    "slope",
    "intercept_ms",
    "scales",
    "prior",
    "network_intercept_ms",
    "network_scale",
)


def bases_suffix(base_sizes: Sequence[str]) -> str:
    """What names a re-fit from other bases than the 16x16 predictor alone (files, keys)."""
    return "" if list(base_sizes) == ["16"] else "_from_" + "_".join(base_sizes)


def few_shot(
    out: Path,
    base_sizes: Sequence[str],
    overrides: list[str],
    n_fit: int,
    n_check: int,
    n_noise: int = 0,
    common: Sequence[str] = (),
) -> dict:
    """Re-fit the ``base_sizes`` predictors (the one that re-fits best, by leave-one-out) to
    another set-up from ``n_fit`` networks timed there; checked on ``n_check`` other
    networks timed there, the first ``n_noise`` of them timed a second time for the noise
    floor. ``common``: overrides of every set-up (e.g. ``latency.repeats=3``), for the
    re-fit's timings too."""
    cfg, settings, setup = compose_setup([*common, *overrides])
    tag = "fewshot_" + "_".join(
        o.replace("=", "-").replace("/", "-") for o in [*overrides, *common]
    )
    space = MnasSpace()
    rng = random.Random(7)
    fit_archs = [space.sample(rng) for _ in range(n_fit)]
    check_archs = heldout_archs(str(setup["input_size"]), n_check)
    check = time_pass(out / f"{tag}.json", "check", check_archs, settings, setup)
    present = [size for size in base_sizes if (out / f"predictor_{size}.json").exists()]
    if not present:
        raise SystemExit(f"few-shot: no predictor_<size>.json in {out} for sizes {base_sizes}")
    if present != list(base_sizes):
        print(f"  few-shot: re-fitting the {', '.join(present)} predictors (the others not built)")
    bases = [Predictor.load(out / f"predictor_{size}.json") for size in present]
    ev = measured_ort_latency(settings, **setup)
    t0 = time.perf_counter()
    refit = refit_predictor(bases, ev, fit_archs)
    seconds = time.perf_counter() - t0
    refit.save(out / f"{tag}{bases_suffix(base_sizes)}_predictor.json")
    measured = [r["median_ms"] for r in check]
    cal = refit.data["calibration"]
    chosen = bases[[b["chosen"] for b in cal["bases"]].index(True)]
    unrefit = Predictor({**chosen.data, "setup": refit.setup}, None)
    predicted = [refit.predict_detail(a) for a in check_archs]
    row = {
        "from": list(base_sizes),
        "chosen_base": chosen.setup["input_shape"],
        "bases_leave_one_out_mape": {
            str(b["input_shape"][2]): b["leave_one_out_mape"] for b in cal["bases"]
        },
        "to": " ".join(overrides),
        "overrides": list(common),
        "setup": {
            k: refit.setup[k]
            for k in ("input_shape", "num_classes", "width_mult", "stem_stride", "threads")
        },
        "timed_networks": n_fit,
        "refit_seconds": seconds,
        "calibration": cal["kind"],
        "leave_one_out_mape": cal["leave_one_out_mape"],
        "scales": {k: cal[k] for k in SCALE_KEYS if k in cal},
        "n_check": len(check),
        "check_in_range": sum(p.in_range for p in predicted),
        "refit": scores([p.ms for p in predicted], measured),
        "base_model_unchanged": scores([unrefit.predict(a) for a in check_archs], measured),
    }
    if n_noise:
        again = time_pass(out / f"{tag}.json", "check2", check_archs[:n_noise], settings, setup)
        row["noise_floor"] = scores([r["median_ms"] for r in again], measured[:n_noise])
    return row


def agreement_text(k: dict, mape: bool = True) -> str:
    """One line's worth of :func:`scores`: shares within +-10% and +-5%, tau (and MAPE)."""
    text = (
        f"within +-10% {100 * k['within_10']:.1f}%, +-5% {100 * k['within_5']:.1f}%, "
        f"tau {k['kendall_tau']:.3f}"
    )
    return f"{text}, MAPE {k['mape']:.1f}%" if mape else text


def print_table(result: dict) -> None:
    print(f"\nCPU {result['cpu']}, onnxruntime {result['onnxruntime']}, 1 thread, ORT_ENABLE_ALL")
    head = (
        f"{'size':>5} {'n':>4} {'<=10%':>6} {'<=5%':>6} {'tau':>6} {'MAPE':>6} | "
        f"{'noise: median':>13} {'<=10%':>6} {'<=5%':>6} {'tau':>6} | "
        f"{'model':>12} {'build s':>7} {'query us':>8}"
    )
    print(head)
    for size, r in result["sizes"].items():
        if "noise_floor" in r:
            nf = r["noise_floor"]
            noise = (
                f"{r['noise_floor_pct']:>12.1f}% {100 * nf['within_10']:>5.1f}% "
                f"{100 * nf['within_5']:>5.1f}% {nf['kendall_tau']:>6.3f}"
            )
        else:  # no second pass right after the first (--n-noise 0)
            noise = f"{'(no pass 2)':>13} {'':>6} {'':>6} {'':>6}"
        print(
            f"{size:>5} {r['n_heldout']:>4} {100 * r['within_10']:>5.1f}% "
            f"{100 * r['within_5']:>5.1f}% {r['kendall_tau']:>6.3f} {r['mape']:>5.1f}% | "
            f"{noise} | "
            f"{r['model']:>12} {r['build_seconds']:>7.0f} {r['query_us']['repeated']:>8.1f}"
        )
        for kind, k in r.get("by_kind", {}).items():
            print(f"      {kind:>12} fitted to the same networks: {agreement_text(k)}")
        for n, k in r.get("fewer_networks", {}).items():
            vs_mean = k.get("heldout_vs_mean")
            print(
                f"      re-fitted to its first {n} training networks ({k['model']}): "
                f"{agreement_text(k['heldout'])}"
                + ("" if vs_mean is None else f"; vs mean of passes {agreement_text(vs_mean)}")
            )
        if "drift" in r:
            d = r["drift"]
            print(
                f"      drift: re-timed {d['hours_after_pass1']:.2f} h later, n={d['n']}: "
                f"median diff {d['median_diff_pct']:.1f}%, median ratio "
                f"{d['median_ratio']:.3f}, tau {d['vs_pass1']['kendall_tau']:.3f}"
            )
            for what, key in (
                ("that later pass", "predictor_vs_drift_pass"),
                ("the mean of both passes", "predictor_vs_mean_of_pass1_and_drift"),
            ):
                k = d.get(key)
                if k:
                    print(f"      the predictor against {what}: {agreement_text(k)}")
        for pair, c in r.get("ceiling", {}).items():
            print(
                f"      a noise-free predictor against one timing, from {pair}: "
                f"{agreement_text(c, mape=False)} (n={c['n']})"
            )
        k = r.get("predictor_vs_mean_of_all_passes")
        if k:
            print(
                f"      the predictor against the mean of {len(k['passes'])} passes "
                f"(n={k['n']}): {agreement_text(k)}"
            )
    for name, f in result.get("few_shot", {}).items():
        print(
            f"few-shot {name} ({f['to']}), {f['timed_networks']} networks: "
            f"{agreement_text(f['refit'])} on {f['n_check']} "
            f"(unchanged model: MAPE {f['base_model_unchanged']['mape']:.1f}%); re-fit "
            f"{f.get('calibration', '?')}"
        )
        if "noise_floor" in f:
            nf = f["noise_floor"]
            print(f"      noise floor (the first {nf['n']} timed twice): {agreement_text(nf)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for predictor.json and raw timings")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--n-heldout", type=int, default=200)
    p.add_argument("--n-noise", type=int, default=200, help="held-out networks timed twice")
    p.add_argument("--n-drift", type=int, default=200, help="held-out networks re-timed later")
    p.add_argument(
        "--networks",
        type=int,
        default=AUTO_NETWORKS,
        help=f"training networks per build (default {AUTO_NETWORKS}, as the user's command)",
    )
    p.add_argument("--few-shot", type=int, default=10, help="networks timed for a re-fit")
    p.add_argument("--few-shot-check", type=int, default=60)
    p.add_argument(
        "--few-shot-from",
        nargs="+",
        default=["16", "32"],
        choices=list(SIZES),
        help="predictors (built in --out; default 16 32, those of them there) a re-fit may "
        "start from; the one whose re-fit "
        "predicts left-out networks best is kept",
    )
    p.add_argument(
        "--few-shot-noise",
        type=int,
        default=60,
        help="check networks of a re-fit timed a second time (its noise floor)",
    )
    p.add_argument(
        "--few-shot-to",
        nargs="+",
        default=["experiment=fashion_mnist_proxy"],
        help="set-ups the 16x16 predictor is re-fitted to, one re-fit each (an item is "
        "space-separated overrides, e.g. 'latency.threads=2')",
    )
    p.add_argument(
        "--stage", choices=("heldout", "drift", "build", "few-shot", "all"), default="all"
    )
    p.add_argument(
        "--refit-from",
        metavar="DIR",
        help="--stage build: instead of timing a build, re-fit each size's predictor to the "
        "training timings of the one in DIR (with its held-out timings): what a change of "
        "features or model does on the same measurements",
    )
    p.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="Hydra overrides added to every size's set-up, for timing and building alike "
        "(e.g. latency.repeats=3); recorded in predictor.json",
    )
    args = p.parse_args(argv)
    least = {"n_heldout": 10, "n_noise": 0, "n_drift": 0, "networks": 10, "few_shot": 3}
    for name, low in least.items():
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}; allowed: >= {low}")
    for size in SIZES:
        SIZES[size] = [*SIZES[size], *args.override]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = {"heldout", "build", "few-shot"} if args.stage == "all" else {args.stage}
    result = {
        "cpu": machine_description()["cpu"],
        "machine": machine_description(),
        "onnxruntime": ort.__version__,
        "threads": 1,
        "graph_optimization": "ORT_ENABLE_ALL",
        "affinity": sorted(os.sched_getaffinity(0)),
        "overrides": args.override,
        "sizes": {},
    }
    for size in args.sizes:
        cfg, settings, setup = compose_setup(SIZES[size])
        archs = heldout_archs(size, args.n_heldout)
        path = out / f"heldout_{size}.json"
        if "heldout" in stages:
            time_pass(path, "pass1", archs, settings, setup)
            time_pass(path, "pass2", archs[: args.n_noise], settings, setup)
        if "drift" in stages:
            time_pass(path, "drift", archs[: args.n_drift], settings, setup)
        if "build" in stages:
            if args.refit_from:
                refit_from(out, size, Path(args.refit_from))
            _, seconds = build(out, size, args.networks)
            result["sizes"][size] = {
                "setup": {**setup, "threads": settings.threads},
                **evaluate(out, size, archs, seconds),
            }
    if "few-shot" in stages:
        result["few_shot"] = {
            FEW_SHOT_NAMES.get(item, item.replace(" ", "_"))
            + bases_suffix(args.few_shot_from): few_shot(
                out,
                args.few_shot_from,
                item.split(),
                args.few_shot,
                args.few_shot_check,
                args.few_shot_noise,
                args.override,
            )
            for item in args.few_shot_to
        }
        if not result["sizes"]:  # the re-fits alone: merged into an earlier predictor.json
            saved = _load(out / "predictor.json")
            saved.setdefault("few_shot", {}).update(result["few_shot"])
            _save(out / "predictor.json", saved)
            print_table(result)
            print(f"wrote {out / 'predictor.json'}")
    if result["sizes"]:
        sizes = result["sizes"].values()
        result["build_seconds"] = max(r["build_seconds"] for r in sizes)
        result["query_us"] = max(r["query_us"]["repeated"] for r in sizes)
        if "few_shot" not in result:  # keep the re-fits an earlier run wrote here
            earlier = _load(out / "predictor.json").get("few_shot")
            if earlier:
                result["few_shot"] = earlier
        _save(out / "predictor.json", result)
        print_table(result)
        print(f"wrote {out / 'predictor.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
