"""Build a latency lookup table (or, with --predictor, a latency predictor) for the search a
config describes.

    python scripts/latency_table.py experiment=fashion_mnist_proxy
    python scripts/latency_table.py --predictor --out pred.json experiment=cifar10_proxy
    python scripts/latency_table.py --predictor --refit pred.json --out pred2.json \\
        experiment=cifar10_proxy latency.threads=2          # re-fit from 10 networks
    python scripts/latency_table.py --predictor --refit p16.json p32.json p224.json \\
        --out p28.json experiment=fashion_mnist_proxy       # the base that re-fits best
    python scripts/latency_table.py --predictor --recheck pred.json \\
        experiment=cifar10_proxy                            # re-calibrate it for today
    python scripts/search.py experiment=cifar10_proxy latency=predictor \\
        latency.predictor_path=pred.json
    python scripts/latency_table.py --out tables/fmnist.json experiment=fashion_mnist_proxy
    python scripts/search.py experiment=fashion_mnist_proxy latency=lut latency.lut_path=<table>

Composes the same Hydra config as ``scripts/search.py`` (``conf/search.yaml`` with the
overrides given), so the table is built for that search's setup: image size, channels and
classes of its dataset, width multiplier, stem stride, and its latency settings (threads,
batch, drift correction, pinning). It profiles every distinct layer configuration of the
MnasNet search space at the resolution it sees (each as a tiny ONNX graph on ONNX Runtime's
CPU provider), calibrates the summed prediction against a handful of measured whole networks,
and saves JSON that ``latency=lut`` loads. With ``--predictor`` it instead times
``--networks`` random whole networks with the search's own evaluator (its latency settings,
drift-corrected against the search's cache nominal) and fits the model of
:mod:`mnas.latency.predictor` (``latency=predictor``). Run it on the device you search for;
see docs/latency.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.arguments import latency_settings
from mnas.conf.runner import latency_setup_from
from mnas.conf.validate import validate_search
from mnas.latency import (
    OrtLatency,
    build_table,
    measured_ort_latency,
    save_table,
    space_layer_configs,
)
from mnas.latency.fit import BLOCK_KINDS, MODEL_KINDS
from mnas.latency.predictor import PROFILE_RUNS, QUERY_BUDGET_US, Predictor, build_predictor
from mnas.latency.recheck import RECHECK_NETWORKS, recheck_predictor
from mnas.latency.refit import refit_predictor
from mnas.latency.settings import AUTO_MAX_SECONDS, AUTO_NETWORKS
from mnas.latency.stats import LatencyError
from mnas.latency.timed import TIMING_PASSES
from mnas.space import MnasSpace

CONF = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other arguments are Hydra overrides of conf/search.yaml, as for the search.",
    )
    p.add_argument(
        "--out",
        help="where to write the table (default: latency_table.json in "
        "outputs/latency_table/<experiment>)",
    )
    p.add_argument("--calibration", type=int, default=16, help="whole networks to fit against")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration networks")
    p.add_argument("--time-cap", type=float, default=0.5, help="seconds of timed runs per layer")
    p.add_argument("--max-runs", type=int, default=200, help="timed runs per layer, at most")
    p.add_argument("--dry-run", action="store_true", help="count the configurations and stop")
    p.add_argument(
        "--predictor",
        action="store_true",
        help="fit a latency predictor to timed whole networks instead of a lookup table",
    )
    p.add_argument(
        "--networks",
        type=int,
        default=None,
        help=f"--predictor: networks to time (default: as many as --max-minutes allows, at most "
        f"{AUTO_NETWORKS}; 10 with --refit)",
    )
    p.add_argument(
        "--refit",
        metavar="BASE",
        nargs="+",
        help="--predictor: re-fit the predictor BASE (built on this machine for another "
        "set-up: input size, threads, graph optimisation) to this config's set-up from "
        "--networks newly timed networks, instead of building one; given several, the one "
        "whose re-fit predicts left-out networks best is kept",
    )
    p.add_argument(
        "--recheck",
        metavar="PREDICTOR",
        help="--predictor: re-time --networks (default 20) of PREDICTOR's training networks "
        "on this machine now, report how far they moved, and re-calibrate it where that "
        "predicts them better; written back to PREDICTOR unless --out is given",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=TIMING_PASSES,
        help="--predictor: passes over the networks timed (each network's geometric mean; "
        f"default {TIMING_PASSES})",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=AUTO_MAX_SECONDS / 60,
        help="--predictor: stop timing networks after this many minutes (default "
        f"{AUTO_MAX_SECONDS / 60:.0f}; the first pass stops where the later passes can still "
        "re-time every network it reached)",
    )
    p.add_argument(
        "--model",
        choices=("auto", *MODEL_KINDS),
        default="auto",
        help="--predictor: the model to fit (default auto: the kind cross-validation "
        "prefers; a forest kind's query costs about twice a linear one's, while blocks "
        "and additive sum seven precomputed block values; blocks is fitted to the "
        "profiled networks' block times, additive to the whole networks' times through a "
        "learned factor per block)",
    )
    p.add_argument(
        "--query-budget-us",
        type=float,
        default=QUERY_BUDGET_US,
        help="--predictor --model auto: the slowest query kept, in microseconds per "
        f"architecture (default {QUERY_BUDGET_US:.0f}; a kind cross-validation prefers "
        "but slower is passed over for the best one within it; 0: no budget)",
    )
    p.add_argument(
        "--profile-runs",
        type=int,
        default=PROFILE_RUNS,
        help="--predictor: runs of ONNX Runtime's profiler per network, for the blocks "
        f"models (default {PROFILE_RUNS}; 0: no profiles, no blocks models)",
    )
    args, overrides = p.parse_known_args(argv)
    args.predictor = args.predictor or bool(args.recheck)  # a re-check is of a predictor
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="search", overrides=overrides)
    try:
        validate_search(cfg)
        settings = latency_settings(cfg.latency)
        # channels and classes come from the dataset itself, as in the search
        setup = latency_setup_from(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print(f"setup: {setup}, threads {settings.threads}, batch {settings.batch_size}", flush=True)
    space = MnasSpace()
    if args.predictor:
        return _predictor(args, cfg, settings, setup, space)
    if settings.graph_optimization != "all":
        print(
            f"config error: latency.graph_optimization={settings.graph_optimization!r}: a lookup "
            "table is built with all optimisations; use --predictor for another level",
            file=sys.stderr,
        )
        return 2
    configs = space_layer_configs(space, **setup)
    print(f"{len(configs)} distinct layer configurations in space {space.name!r}", flush=True)
    if args.dry_run:
        return 0
    out = Path(args.out or f"outputs/latency_table/{cfg.data.name}/latency_table.json")
    evaluator = OrtLatency(
        **setup,
        threads=settings.threads,
        batch_size=settings.batch_size,
        pin_cpu=settings.pin_cpu,
        time_cap_s=args.time_cap,
        max_runs=args.max_runs,
        clock=settings.clock,
        reference=settings.reference,
        references=settings.references,
        # the search's nominal (and its cached calibration networks): the table's scale
        cache_path=settings.cache,
    )
    rng = random.Random(args.seed)
    calibration = [space.sample(rng) for _ in range(args.calibration)]
    start = time.perf_counter()

    def progress(done: int, total: int, cfg) -> None:
        if done % 50 == 0 or done == total:
            elapsed = time.perf_counter() - start
            eta = elapsed / done * (total - done)
            print(f"  {done}/{total} layers, {elapsed:.0f} s, about {eta:.0f} s left", flush=True)

    table = build_table(evaluator, configs, calibration, progress)
    save_table(table, out)
    cal = table["calibration"]
    print(
        f"wrote {out}: {len(table['entries'])} layers, call overhead "
        f"{table['overhead_ms']:.4f} ms, calibration ({cal['kind']}) "
        f"{cal['intercept_ms']:.3f} ms + {cal['slope']:.3f} x sum + "
        f"{cal['ms_per_mparam']:.4f} ms x Mparams (in-sample MAPE {cal['mape_percent']:.1f}% on "
        f"{len(calibration)} networks), {table['build_seconds']:.0f} s"
    )
    print(f"search with: latency=lut latency.lut_path={out}")
    return 0


def _predictor(args, cfg, settings, setup: dict, space: MnasSpace) -> int:
    if args.passes < 1:
        print(f"config error: --passes={args.passes}; allowed: >= 1", file=sys.stderr)
        return 2
    if not (args.max_minutes > 0 and math.isfinite(args.max_minutes)):
        print(f"config error: --max-minutes={args.max_minutes:g}; allowed: > 0", file=sys.stderr)
        return 2
    if args.recheck:
        return _recheck(args, settings, setup)
    networks = args.networks if args.networks is not None else (10 if args.refit else AUTO_NETWORKS)
    least = 3 if args.refit else 10
    if args.refit and args.model != "auto":
        print(
            f"config error: --model={args.model}: a re-fit keeps its base's model; "
            "--model is for building a predictor",
            file=sys.stderr,
        )
        return 2
    if networks < least:
        print(f"config error: --networks={networks}; at least {least}", file=sys.stderr)
        return 2
    if args.profile_runs < 0 or (args.profile_runs == 0 and args.model in BLOCK_KINDS):
        print(
            f"config error: --profile-runs={args.profile_runs}; allowed: >= 0, and >= 1 "
            f"for --model={args.model} (fitted to profiles)",
            file=sys.stderr,
        )
        return 2
    if not args.query_budget_us >= 0:
        print(
            f"config error: --query-budget-us={args.query_budget_us}; allowed: >= 0 (0: no budget)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out or f"outputs/latency_table/{cfg.data.name}/latency_predictor.json")
    bases = []
    for path in args.refit or ():
        try:
            bases.append(Predictor.load(path))
        except (OSError, ValueError, KeyError) as e:
            print(f"config error: --refit={path}: {e}", file=sys.stderr)
            return 2
        if Path(path).resolve() == out.resolve():
            print(f"config error: --out={out} would overwrite --refit's base", file=sys.stderr)
            return 2
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(networks)]
    if args.dry_run:
        return 0
    evaluator = measured_ort_latency(settings, **setup)
    evaluator.nominal()
    if bases:
        return _refit(bases, evaluator, archs, out, args.passes)

    def progress(done: int, total: int, seconds: float) -> None:
        if done % 25 == 0 or done == total:
            print(f"  {done}/{total} timings ({args.passes} passes), {seconds:.0f} s", flush=True)

    predictor = build_predictor(
        evaluator,
        archs,
        args.max_minutes * 60,
        progress,
        args.model,
        args.profile_runs,
        args.query_budget_us or None,
        args.passes,
    )
    predictor.save(out)
    d = predictor.data
    cv = d["cross_validation"][d["model"]["kind"]]
    print(
        f"wrote {out}: model {d['model']['kind']} on {len(d['training']['archs'])} networks, "
        f"cross-validated within +-10% {100 * cv['within_10']:.0f}%, within +-5% "
        f"{100 * cv['within_5']:.0f}%, MAPE {cv['mape']:.1f}%, tau {cv['kendall_tau']:.3f}; "
        f"{d['build_seconds']:.0f} s"
    )
    print(f"search with: latency=predictor latency.predictor_path={out}")
    return 0


def _recheck(args, settings, setup: dict) -> int:
    networks = args.networks if args.networks is not None else RECHECK_NETWORKS
    try:
        predictor = Predictor.load(args.recheck)
    except (OSError, ValueError, KeyError) as e:
        print(f"config error: --recheck={args.recheck}: {e}", file=sys.stderr)
        return 2
    total = len(predictor.data["training"]["tokens"])
    if not 5 <= networks <= total:
        print(
            f"config error: --networks={networks}; allowed with --recheck: 5 .. {total}",
            file=sys.stderr,
        )
        return 2
    if args.dry_run:
        return 0
    evaluator = measured_ort_latency(settings, **setup)
    evaluator.nominal()
    try:
        checked = recheck_predictor(predictor, evaluator, networks, args.passes)
    except ValueError as e:
        print(f"config error: --recheck={args.recheck}: {e}", file=sys.stderr)
        return 2
    except LatencyError as e:
        print(f"error: --recheck={args.recheck}: {e}", file=sys.stderr)
        return 1
    out = Path(args.out or args.recheck)
    checked.save(out)
    r = checked.data["recheck"]
    print(
        f"re-timed {networks} of its networks in {r['seconds']:.0f} s: today "
        f"{r['median_ratio']:.3f}x the stored timings (median), "
        f"{100 * r['within_5_of_stored']:.0f}% within +-5% of them; "
        f"the model's MAPE on them {r['model_mape']:.1f}%, re-calibrated "
        f"({r['calibration_kind']}) {r['calibrated_loo_mape']:.1f}% (leave-one-out): "
        f"{'applied' if r['applied'] else 'not applied'}"
    )
    print(f"wrote {out}")
    return 0


def _refit(bases: list[Predictor], evaluator: OrtLatency, archs, out: Path, passes: int) -> int:
    t0 = time.perf_counter()
    try:
        refit = refit_predictor(bases, evaluator, archs, passes=passes)
    except ValueError as e:
        print(f"config error: --refit: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    refit.data["build_seconds"] = seconds
    refit.save(out)
    cal = refit.data["calibration"]
    loo = ", ".join(f"{k} {v:.1f}%" for k, v in cal["leave_one_out_mape"].items())
    if cal["kind"] == "split":
        how = f"split (per-operator x{cal['node_scale']:.3f}, work x{cal['work_scale']:.3f})"
    elif cal["kind"] == "kind_scales":
        scales = ", ".join(f"{k} x{v:.2f}" for k, v in cal["scales"].items())
        how = f"a scale per operator kind ({scales}; prior {cal['prior']})"
    else:
        how = f"{cal['kind']} (x{cal['slope']:.3f} + {cal['intercept_ms']:.4f} ms)"
    for b in cal["bases"] if len(bases) > 1 else ():
        errors = ", ".join(f"{k} {v:.1f}%" for k, v in b["leave_one_out_mape"].items())
        print(f"  base {b['path']}: leave-one-out MAPE {errors}")
    chosen = cal["from_setup"]["input_shape"]
    print(
        f"wrote {out}: the {chosen} predictor re-fitted from {len(archs)} networks timed in "
        f"{seconds:.0f} s: {how}; leave-one-out MAPE {loo}"
    )
    print(f"search with: latency=predictor latency.predictor_path={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
