"""How much of a drift-corrected timing's level is the luck of its reference sessions
(issue 19, docs/results/latency-notebook.md "600 networks").

    taskset -c 0 python bench/reference_sessions.py --size 16 --sessions 6 --seconds 40

The drift correction divides by the references' speed, measured in ONNX Runtime sessions
made once per evaluator (once per process). If a session's speed were a draw of its own (how
its buffers landed in memory), every timing of that process would share the draw. This
makes ``--sessions`` sessions of each reference of the set-up's evaluator (the search's
settings, ``bench/predictor.py``'s set-ups), all alive at once, and times them in rotating
blocks of 8 runs on the evaluator's clock, pinned as it pins, for ``--seconds``: the
machine's own drift then falls on all of them alike, and what differs between the sessions'
medians is the sessions'. Prints each session's median against their geometric mean, the
spread (standard deviation of the log medians, %) and, for scale, the spread between the
medians of alternate runs of one session. Writes ``--out`` (JSON) if given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor import SIZES, compose_setup  # noqa: E402

from mnas.latency import measured_ort_latency  # noqa: E402

BLOCK = 8


def spread(samples: list[list[list[float]]]) -> list[dict]:
    """Per reference: each session's median relative to their geometric mean (%), the
    standard deviation of the log medians (%, between sessions) and of the log ratio of
    the medians of a session's even and odd runs over sqrt(2) (%, within a session).
    ``samples[session][reference]``: that session's runs of that reference (ms)."""
    out = []
    for j in range(len(samples[0])):
        med = np.array([np.median(s[j]) for s in samples])
        logs = np.log(med)
        halves = [np.log(np.median(s[j][::2]) / np.median(s[j][1::2])) for s in samples]
        out.append(
            {
                "median_ms": float(np.exp(logs.mean())),
                "sessions_rel_pct": (100 * (np.exp(logs - logs.mean()) - 1)).tolist(),
                "between_sessions_pct": float(100 * np.std(logs, ddof=1)),
                "within_session_pct": float(100 * np.std(halves) / np.sqrt(2)),
                "runs_per_session": len(samples[0][j]),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=list(SIZES), default="16")
    p.add_argument("--sessions", type=int, default=6)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--out", help="JSON file for the figures")
    args = p.parse_args(argv)
    if args.sessions < 2 or not args.seconds > 0:
        p.error(f"--sessions={args.sessions} (>= 2) and --seconds={args.seconds} (> 0)")
    _, settings, setup = compose_setup(SIZES[args.size])
    evaluator = measured_ort_latency(settings, **setup)
    sessions = []
    for _ in range(args.sessions):
        evaluator._ref_runs = None  # new sessions on the next call
        sessions.append(evaluator.reference_runners())
    read = time.thread_time_ns if evaluator.clock == "cpu" else time.perf_counter_ns
    samples = [[[] for _ in s] for s in sessions]
    with evaluator._pinned():
        for runs in sessions:
            for run in runs:
                for _ in range(20):
                    run()
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            for runs, out in zip(sessions, samples, strict=True):
                for run, got in zip(runs, out, strict=True):
                    run()  # one untimed run: the other sessions have just used the caches
                    for _ in range(BLOCK):
                        t0 = read()
                        run()
                        got.append((read() - t0) / 1e6)
    rows = spread(samples)
    for name, r in zip(evaluator.references, rows, strict=True):
        print(
            f"{name} at {args.size}x{args.size}: median {r['median_ms']:.4f} ms, "
            f"{r['runs_per_session']} runs per session; sessions (% of their geometric mean): "
            + " ".join(f"{v:+.2f}" for v in r["sessions_rel_pct"])
            + f"; between sessions {r['between_sessions_pct']:.2f}%, within one "
            f"{r['within_session_pct']:.2f}%"
        )
    if args.out:
        result = {"size": args.size, "clock": evaluator.clock, "seconds": args.seconds}
        result["references"] = dict(zip(evaluator.references, rows, strict=True))
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
