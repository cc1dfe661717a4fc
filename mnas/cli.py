"""``python -m mnas``: small commands for people and scripts.

Subcommands register themselves in :data:`COMMANDS` as ``name -> (add_arguments, run)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from mnas.space import resolve_arch


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "arch",
        help="reference name (mobilenetv2, mnasnet_a1, mnasnet_b1) or "
        "comma-separated block strings",
    )
    _add_setup_args(p)


def _add_setup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--stem-stride", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _describe(args: argparse.Namespace) -> int:
    from mnas.nn import build_model, model_stats

    arch = resolve_arch(args.arch)
    model = build_model(
        arch,
        num_classes=args.num_classes,
        in_channels=args.in_channels,
        width_mult=args.width_mult,
        stem_stride=args.stem_stride,
    )
    stats = model_stats(model, args.input_size, args.in_channels)
    record = {
        "hash": arch.hash,
        "blocks": list(arch.blocks),
        "params": stats.params,
        "macs": stats.macs,
        "input_size": args.input_size,
        "num_classes": args.num_classes,
        "in_channels": args.in_channels,
        "width_mult": args.width_mult,
    }
    if args.json:
        print(json.dumps(record))
    else:
        print(f"hash     {arch.hash}")
        print(f"params   {stats.params:,}")
        print(
            f"MACs     {stats.macs:,} "
            f"({stats.macs / 1e6:.1f}M at {args.input_size}x{args.input_size})"
        )
        print("blocks")
        for b in arch.blocks:
            print(f"  {b}")
    return 0


COMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
] = {
    "describe": (_add_model_args, _describe, "parameters, MACs, block strings and hash"),
}


def _register_optional() -> None:
    # Later modules add their subcommands here; a missing optional module is not an error.
    for module in ("mnas.latency",):
        try:
            mod = __import__(module, fromlist=["register_cli"])
        except ImportError:
            continue
        register = getattr(mod, "register_cli", None)
        if register is not None:
            register(COMMANDS, _add_model_args, _add_setup_args)


def main(argv: list[str] | None = None) -> int:
    _register_optional()
    parser = argparse.ArgumentParser(prog="mnas", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except ValueError as e:
        print(f"mnas {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
