"""Which reference network corrects the drift best? (issue 19)

    MNAS_DATA=../shared/datasets taskset -c 0 python bench/latency_references.py --size 32 \
        --n 100 --refs mobilenetv2 space:7 space:11 --out DIR/refs_32.json

The evaluator divides the machine's moment out of every timing with one reference, the
space's MobileNetV2, timed in blocks alternating with the candidate's
(docs/latency.md, "Drift correction"). This bench times ``--n`` of ``bench/predictor.py``'s
held-out networks of a set-up (``16``, ``32``, ``224``) beside *several* references at once —
``mobilenetv2`` and ``space:SEED`` (a random network of the space, drawn with that seed) —
in cycles of one block of 8 timed runs each (every block after one untimed run, the
evaluator's blocks), ``--timings`` timings of ``--cycles`` cycles per network, on the
evaluator's clock; then it times the same networks again (``--passes``). A correction is
the candidate's median over the geometric mean of some references' medians (each timing
corrected by its own, the median of the timings kept); the better correction is the one
whose two passes agree more. Pin it to one core and keep the other idle.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from predictor import SIZES, compose_setup, heldout_archs  # noqa: E402

from mnas.latency.fit import kendall_tau  # noqa: E402
from mnas.latency.references import reference_network  # noqa: E402
from mnas.latency.session import export_onnx, make_session, torch_threads  # noqa: E402
from mnas.latency.timing import REFERENCE_BLOCK, bound_runner, resolve_clock  # noqa: E402
from mnas.nn import build_model  # noqa: E402


def corrected(timings: list[list[float]], refs: tuple[int, ...]) -> float:
    """A network's corrected time from its timings (rows: the candidate's median, then each
    reference's): the median over timings of candidate / geometric mean of ``refs``
    (indices of references; empty: uncorrected)."""
    t = np.asarray(timings, dtype=np.float64)
    if not refs:
        return float(np.median(t[:, 0]))
    geo = np.exp(np.mean(np.log(t[:, [1 + r for r in refs]]), axis=1))
    return float(np.median(t[:, 0] / geo))


def agreement(first: list, second: list, refs: tuple[int, ...]) -> dict:
    """How two passes of the same networks agree under one correction, after dividing out
    the median ratio between the passes (the scale a nominal would pin)."""
    x = np.array([corrected(t, refs) for t in first])
    y = np.array([corrected(t, refs) for t in second])
    r = x / y
    r = r / np.median(r)
    rel = np.abs(r - 1)
    return {
        "within_10": float(np.mean(rel <= 0.10)),
        "within_5": float(np.mean(rel <= 0.05)),
        "sd_log_ratio": float(np.std(np.log(r))),
        "kendall_tau": kendall_tau(x, y),
    }


def corrections(names: list[str]) -> dict[str, tuple[int, ...]]:
    """Every single reference, every pair, all of them, and none."""
    out = {"none": ()}
    for k in range(1, len(names) + 1):
        if k in (1, 2, len(names)):
            for c in itertools.combinations(range(len(names)), k):
                out[" x ".join(names[i] for i in c)] = c
    return out


def time_network(run, refs, timings: int, cycles: int, read) -> list[list[float]]:
    def block(fn) -> float:
        fn()
        out = []
        for _ in range(REFERENCE_BLOCK):
            t0 = read()
            fn()
            out.append((read() - t0) / 1e6)
        return out

    for _ in range(5):
        run()
        for r in refs:
            r()
    rows = []
    gc.disable()
    try:
        for _ in range(timings):
            runs: list[list[float]] = [[] for _ in range(1 + len(refs))]
            for _ in range(cycles):
                for i, fn in enumerate([run, *refs]):
                    runs[i].extend(block(fn))
            rows.append([float(np.median(r)) for r in runs])
    finally:
        gc.enable()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=list(SIZES), default="32")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--refs", nargs="+", default=["mobilenetv2", "space:7", "space:11"])
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--timings", type=int, default=3)
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.passes < 2:
        p.error(f"--passes {args.passes}: two passes at least are compared")
    archs_of_refs = [reference_network(r) for r in args.refs]  # bad names fail before any work
    _, settings, setup = compose_setup(SIZES[args.size])
    size, chans = setup["input_size"], setup["in_channels"]
    shape = (1, chans, size, size)
    read = (
        time.thread_time_ns
        if resolve_clock(settings.clock, settings.threads) == "cpu"
        else time.perf_counter_ns
    )

    def runner(arch):
        model = build_model(
            arch,
            num_classes=setup["num_classes"],
            in_channels=chans,
            width_mult=setup["width_mult"],
            stem_stride=setup["stem_stride"],
        ).eval()
        with torch_threads(1):
            onnx = export_onnx(model, size, chans)
        return bound_runner(make_session(onnx, settings.threads), shape)

    refs = [runner(a) for a in archs_of_refs]
    archs = heldout_archs(args.size, args.n)
    passes = []
    for k in range(args.passes):
        t0 = time.time()
        passes.append(
            [time_network(runner(a), refs, args.timings, args.cycles, read) for a in archs]
        )
        print(f"pass {k + 1}: {args.n} networks in {time.time() - t0:.0f} s", flush=True)
    rows = {
        name: [agreement(a, b, c) for a, b in itertools.combinations(passes, 2)]
        for name, c in corrections(args.refs).items()
    }
    result = {
        "size": args.size,
        "setup": setup,
        "refs": args.refs,
        "ref_ms": [float(np.median([t[1 + i] for t in passes[0][0]])) for i in range(len(refs))],
        "candidate_median_ms": float(np.median([corrected(t, ()) for t in passes[0]])),
        "corrections": rows,
        "passes": passes,
    }
    Path(args.out).write_text(json.dumps(result) + "\n")
    print(
        f"size {args.size}, {args.n} networks (median {result['candidate_median_ms']:.3f} ms); "
        "references "
        + ", ".join(f"{r} {ms:.3f} ms" for r, ms in zip(args.refs, result["ref_ms"], strict=True))
    )
    print(f"{'correction':<40} {'<=10%':>6} {'<=5%':>6} {'SD log':>7} {'tau':>6}")
    for name, rs in rows.items():
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        print(
            f"{name:<40} {100 * m['within_10']:>5.1f}% {100 * m['within_5']:>5.1f}% "
            f"{m['sd_log_ratio']:>7.4f} {m['kendall_tau']:>6.3f}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
