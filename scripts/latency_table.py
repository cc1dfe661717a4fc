"""Build a latency lookup table for this machine: ``python scripts/latency_table.py --out T.json``.

Profiles every distinct layer configuration of the MnasNet search space at the resolution it
sees (each as a tiny ONNX graph on ONNX Runtime's CPU provider), calibrates the summed
prediction against a handful of measured whole networks, and saves JSON that
``LutLatency(path)`` / ``latency=lut`` loads. Run it on the device you search for; see
docs/latency.md.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time

from mnas.latency import OrtLatency, build_table, save_table, space_layer_configs
from mnas.space import MnasSpace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="where to write the table (JSON)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--stem-stride", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--calibration", type=int, default=16, help="whole networks to fit against")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration networks")
    p.add_argument("--pin-cpu", type=int, help="pin timing to this CPU (Linux)")
    p.add_argument("--time-cap", type=float, default=0.5, help="seconds of timed runs per layer")
    p.add_argument("--max-runs", type=int, default=200, help="timed runs per layer, at most")
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="raw timings, without the reference network's drift correction (the search's "
        "latency.reference=true default uses it, so keep both the same)",
    )
    p.add_argument("--dry-run", action="store_true", help="count the configurations and stop")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    setup = dict(
        input_size=args.input_size,
        in_channels=args.in_channels,
        num_classes=args.num_classes,
        width_mult=args.width_mult,
        stem_stride=args.stem_stride,
    )
    space = MnasSpace()
    configs = space_layer_configs(space, **setup)
    print(f"{len(configs)} distinct layer configurations in space {space.name!r}", flush=True)
    if args.dry_run:
        return 0
    evaluator = OrtLatency(
        **setup,
        threads=args.threads,
        batch_size=args.batch_size,
        pin_cpu=args.pin_cpu,
        time_cap_s=args.time_cap,
        max_runs=args.max_runs,
        reference=not args.no_reference,
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
    save_table(table, args.out)
    cal = table["calibration"]
    print(
        f"wrote {args.out}: {len(table['entries'])} layers, call overhead "
        f"{table['overhead_ms']:.4f} ms, calibration ({cal['kind']}) "
        f"{cal['intercept_ms']:.3f} ms + {cal['slope']:.3f} x sum + "
        f"{cal['ms_per_mparam']:.4f} ms x Mparams (in-sample MAPE {cal['mape_percent']:.1f}% on "
        f"{len(calibration)} networks), {table['build_seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
