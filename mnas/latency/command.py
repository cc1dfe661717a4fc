"""``python -m mnas latency``: time one architecture and print its statistics."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from mnas.latency.settings import LatencySettings, make_latency_evaluator
from mnas.latency.stats import LatencyError
from mnas.space import resolve_arch


def _add_args(add_model_args: Callable[[argparse.ArgumentParser], None]):
    def add(p: argparse.ArgumentParser) -> None:
        add_model_args(p)
        p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
        p.add_argument("--batch-size", type=int, default=1)
        p.add_argument(
            "--kind",
            choices=("measured", "lut", "macs"),
            default="measured",
            help="measure on ONNX Runtime, predict from a table (--table), or count MACs",
        )
        p.add_argument("--table", help="latency table JSON for --kind lut")
        p.add_argument("--cache", help="SQLite cache file for --kind measured")
        p.add_argument("--pin-cpu", type=int, help="pin timing to this CPU (Linux)")
        p.add_argument("--time-cap", type=float, default=0.6, help="seconds of timed runs, max")
        p.add_argument(
            "--reference",
            action="store_true",
            help="interleave a reference network and correct for the machine's speed drift",
        )

    return add


def _run(args: argparse.Namespace) -> int:
    arch = resolve_arch(args.arch)
    net = dict(
        input_size=args.input_size,
        in_channels=args.in_channels,
        num_classes=args.num_classes,
        width_mult=args.width_mult,
        stem_stride=args.stem_stride,
    )
    if args.kind == "lut" and not args.table:
        raise ValueError("--kind lut needs --table PATH (build one with scripts/latency_table.py)")
    settings = LatencySettings(
        kind=args.kind,
        threads=args.threads,
        batch_size=args.batch_size,
        time_cap_s=args.time_cap,
        pin_cpu=args.pin_cpu,
        reference=args.reference,
        cache=args.cache,
        lut_path=args.table,
    )
    evaluator = make_latency_evaluator(settings, **net)
    try:
        stats = evaluator.measure(arch)
    except LatencyError as e:
        print(f"mnas latency: error: {e}", file=sys.stderr)
        return 1
    record = {"hash": arch.hash, "blocks": list(arch.blocks), **net, **stats.to_dict()}
    if args.kind != "macs":
        record["threads"] = args.threads
        record["batch_size"] = args.batch_size
    if args.json:
        print(json.dumps(record))
        return 0
    unit = "M MACs" if stats.source == "macs" else "ms"
    print(f"hash     {arch.hash}")
    print(f"input    {args.batch_size}x{args.in_channels}x{args.input_size}x{args.input_size}")
    print(f"median   {stats.median_ms:.3f} {unit} ({stats.source})")
    if stats.runs:
        print(f"p10-p90  {stats.p10_ms:.3f} - {stats.p90_ms:.3f} ms, cv {stats.cv:.1%}")
        print(f"runs     {stats.runs}, export + session {stats.export_seconds:.2f} s")
    return 0


def register_cli(commands: dict, add_model_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the ``latency`` subcommand to ``mnas.cli.COMMANDS``."""
    commands["latency"] = (
        _add_args(add_model_args),
        _run,
        "time one architecture on ONNX Runtime (or predict it: --kind lut/macs)",
    )
