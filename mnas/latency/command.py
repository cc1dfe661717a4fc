"""``python -m mnas latency``: time one architecture and print its statistics;
``python -m mnas latency-nominal``: re-time the reference that sets the drift-corrected scale.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from collections.abc import Callable

from mnas.latency.cache import DEFAULT_CACHE_PATH
from mnas.latency.ort import OrtLatency
from mnas.latency.references import DEFAULT_REFERENCES, references_label
from mnas.latency.session import GRAPH_OPTIMIZATION
from mnas.latency.settings import LatencySettings, make_latency_evaluator
from mnas.latency.stats import LatencyError
from mnas.nn import build_model
from mnas.space import resolve_arch

AddArgs = Callable[[argparse.ArgumentParser], None]
# One figure for a person, not one of a search's stream: time until the 95% interval of the
# median is within --rel-ci, which a quiet machine reaches in well under a second; the cap
# only binds on a noisy one, which needs the runs (on our 2-core VM at load 14-23, a 2 s
# cap left +-6% and pass-to-pass differences of 6.3%).
CLI_TIME_CAP_S = 5.0
CLI_MAX_RUNS = 20_000


def _add_timing_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument(
        "--clock",
        choices=("auto", "cpu", "wall"),
        default="auto",
        help="cpu: the timing thread's CPU time (one thread; other processes' time is not "
        "counted); wall: elapsed time; auto (default): cpu with one thread",
    )
    p.add_argument(
        "--cache",
        default=DEFAULT_CACHE_PATH,
        help=f"SQLite file that keeps the reference's nominal (default: the search's, "
        f"{DEFAULT_CACHE_PATH}); measurements are never answered from it",
    )
    p.add_argument("--pin-cpu", type=int, help="pin timing to this CPU (Linux)")
    p.add_argument(
        "--references",
        type=lambda text: tuple(text.split(",")),
        default=DEFAULT_REFERENCES,
        help="reference networks of the drift correction, comma-separated: auto (default: "
        "space:7,space:11 up to 32x32, mobilenetv2 above) or names, mobilenetv2 or "
        "space:SEED, as the search's latency.references",
    )
    p.add_argument(
        "--graph-optimization",
        choices=tuple(GRAPH_OPTIMIZATION),
        default="all",
        help="ONNX Runtime graph optimisation level (default: all, the search's)",
    )


def _add_args(add_model_args: AddArgs) -> AddArgs:
    def add(p: argparse.ArgumentParser) -> None:
        add_model_args(p)
        _add_timing_args(p)
        p.add_argument(
            "--kind",
            choices=("measured", "lut", "predictor", "macs"),
            default="measured",
            help="measure on ONNX Runtime, predict from a table or a predictor (--table), or "
            "count MACs",
        )
        p.add_argument(
            "--table",
            help="--kind lut: a latency table JSON; --kind predictor: a latency predictor JSON "
            "(both from scripts/latency_table.py)",
        )
        p.add_argument(
            "--time-cap",
            type=float,
            default=CLI_TIME_CAP_S,
            help=f"seconds of timed runs at most (default {CLI_TIME_CAP_S:g})",
        )
        p.add_argument(
            "--rel-ci",
            type=float,
            default=0.01,
            help="stop once the 95%% CI of the median is within this fraction of it",
        )
        p.add_argument(
            "--raw",
            action="store_true",
            help="no drift correction: time the network alone (default: drift-corrected, "
            "the search's scale)",
        )

    return add


def _net(args: argparse.Namespace) -> dict:
    return dict(
        input_size=args.input_size,
        in_channels=args.in_channels,
        num_classes=args.num_classes,
        width_mult=args.width_mult,
        stem_stride=args.stem_stride,
    )


def _when(nominal) -> str:
    if nominal.created is None:
        return "given"
    when = datetime.datetime.fromtimestamp(nominal.created).strftime("%Y-%m-%d %H:%M")
    load = "" if nominal.load is None else f" at load {nominal.load:.1f}"
    return f"timed {when}{load}"


def _run(args: argparse.Namespace) -> int:
    arch = resolve_arch(args.arch)
    net = _net(args)
    if args.kind in ("lut", "predictor") and not args.table:
        flag = " --predictor" if args.kind == "predictor" else ""
        raise ValueError(
            f"--kind {args.kind} needs --table PATH (build one with scripts/latency_table.py{flag})"
        )
    settings = LatencySettings(
        kind=args.kind,
        threads=args.threads,
        batch_size=args.batch_size,
        max_runs=CLI_MAX_RUNS,
        rel_ci=args.rel_ci,
        time_cap_s=args.time_cap,
        clock=args.clock,
        pin_cpu=args.pin_cpu,
        reference=not args.raw,
        references=args.references,
        cache=args.cache,
        lut_path=args.table if args.kind == "lut" else None,
        predictor_path=args.table if args.kind == "predictor" else None,
        graph_optimization=args.graph_optimization,
    )
    evaluator = make_latency_evaluator(settings, **net)
    try:
        if args.kind == "measured":
            # measured now, whatever the cache holds: a user timing twice times twice
            model = build_model(
                arch,
                num_classes=args.num_classes,
                in_channels=args.in_channels,
                width_mult=args.width_mult,
                stem_stride=args.stem_stride,
            )
            stats = evaluator.measure_model(model, f"architecture {arch.hash} ({arch.key})")
        else:
            stats = evaluator.measure(arch)
    except LatencyError as e:
        print(f"mnas latency: error: {e}", file=sys.stderr)
        return 1
    record = {"hash": arch.hash, "blocks": list(arch.blocks), **net, **stats.to_dict()}
    if args.kind != "macs":
        record["threads"] = args.threads
        record["batch_size"] = args.batch_size
    if args.kind == "predictor":
        record["in_range"] = evaluator.predictor.predict_detail(arch).in_range
    nominal = evaluator.nominal() if args.kind == "measured" and not args.raw else None
    if args.kind == "measured":
        half = stats.ci_rel if stats.ci_rel is not None else math.inf
        record.update(
            ci_low_ms=stats.median_ms * (1 - half) if math.isfinite(half) else None,
            ci_high_ms=stats.median_ms * (1 + half) if math.isfinite(half) else None,
            ci_target=args.rel_ci,
            ci_met=half <= args.rel_ci,
            time_cap_s=args.time_cap,
            nominal_when=None if nominal is None else _when(nominal),
        )
    refs = ""
    if nominal is not None:
        refs = references_label(evaluator.references)
        record["references"] = list(evaluator.references)
    if args.json:
        print(json.dumps(record))
        return 0
    _print(args, arch, stats, record, nominal, refs)
    return 0


def _print(args, arch, stats, record: dict, nominal, refs: str) -> None:
    unit = "M MACs" if stats.source == "macs" else "ms"
    print(f"hash     {arch.hash}")
    shape = f"{args.batch_size}x{args.in_channels}x{args.input_size}x{args.input_size}"
    if stats.runs:
        shape += f", {args.threads} thread(s), {stats.clock} clock"
    print(f"input    {shape}")
    if stats.source in ("lut", "predictor"):
        source = "table" if stats.source == "lut" else "predictor"
        label = f"predicted, {stats.scale} scale of the {source}"
        if record.get("in_range") is False:
            label += " (outside the range it was fitted on: an extrapolation)"
    elif stats.scale == "drift-corrected":
        label = (
            f"drift-corrected: ms at this machine's speed when {refs} took "
            f"{nominal.ms:.3f} ms ({_when(nominal)})"
        )
    else:
        label = stats.scale
    print(f"median   {stats.median_ms:.3f} {unit}  {label}")
    if not stats.runs:
        return
    half = stats.ci_rel
    if record["ci_low_ms"] is not None:
        print(
            f"95% CI   {record['ci_low_ms']:.3f} - {record['ci_high_ms']:.3f} ms "
            f"(median +-{half:.1%})"
        )
    else:
        print("95% CI   none: too few runs for an interval of the median")
    raw = f"raw      {stats.raw_median_ms:.3f} ms {stats.clock} time uncorrected"
    if stats.scale == "drift-corrected":
        raw += f" (drift factor {stats.drift_factor:.3f})"
    print(raw + f", {stats.wall_median_ms:.3f} ms elapsed")
    print(f"p10-p90  {stats.p10_ms:.3f} - {stats.p90_ms:.3f} ms, cv {stats.cv:.1%}")
    print(f"runs     {stats.runs}, export + session {stats.export_seconds:.2f} s")
    if not record["ci_met"]:
        reached = "no interval" if half is None else f"+-{half:.1%}"
        print(
            f"note     the machine was too noisy to reach +-{args.rel_ci:.1%} within the "
            f"{args.time_cap:g} s time cap ({reached}); a longer --time-cap narrows it"
        )


def _add_nominal_args(add_setup_args: AddArgs) -> AddArgs:
    def add(p: argparse.ArgumentParser) -> None:
        add_setup_args(p)
        _add_timing_args(p)
        p.add_argument("--seconds", type=float, default=10.0, help="how long to time the reference")

    return add


def _run_nominal(args: argparse.Namespace) -> int:
    ev = OrtLatency(
        **_net(args),
        threads=args.threads,
        batch_size=args.batch_size,
        clock=args.clock,
        pin_cpu=args.pin_cpu,
        cache_path=args.cache,
        reference=True,
        references=args.references,
        graph_optimization=args.graph_optimization,
    )
    try:
        previous, new = ev.remeasure_nominal(args.seconds)
    except LatencyError as e:
        print(f"mnas latency-nominal: error: {e}", file=sys.stderr)
        return 1
    record = {
        "nominal_ms": new.ms,
        "previous_ms": None if previous is None else previous.ms,
        "load": new.load,
        "cache": ev.cache.file,
        "key": ev.nominal_key(),
        **ev.setup(),
    }
    if args.json:
        print(json.dumps(record))
        return 0
    before = "none" if previous is None else f"{previous.ms:.4f} ms ({_when(previous)})"
    refs = references_label(ev.references)
    print(f"nominal  {new.ms:.4f} ms ({refs}, {_when(new)}); was {before}")
    print(f"stored   in {ev.cache.file}: figures cached on the old scale are no longer used")
    cpus = os.cpu_count() or 1
    if new.load is not None and new.load > 0.5 * cpus:
        print(
            f"warning  load average {new.load:.1f} on {cpus} CPUs: the machine was busy, so "
            "the nominal may be slow; re-run this on an idle machine"
        )
    return 0


def register_cli(commands: dict, add_model_args: AddArgs, add_setup_args: AddArgs) -> None:
    """Add the ``latency`` and ``latency-nominal`` subcommands to ``mnas.cli.COMMANDS``."""
    commands["latency"] = (
        _add_args(add_model_args),
        _run,
        "time one architecture on ONNX Runtime (or predict it: --kind lut/predictor/macs)",
    )
    commands["latency-nominal"] = (
        _add_nominal_args(add_setup_args),
        _run_nominal,
        "re-time the reference network whose nominal sets the drift-corrected scale",
    )
