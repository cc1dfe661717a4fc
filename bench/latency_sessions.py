"""Where the latency measurement's pass-to-pass noise comes from: the ONNX Runtime session
(its memory layout) or the moment the network is timed.

    MNAS_DATA=../shared/datasets PYTHONPATH=$PWD taskset -c 0 python bench/latency_sessions.py \\
        --size 16 --n 40 --passes 2 --out DIR

For ``--n`` random networks of the set-up (``bench/predictor.py``'s sizes; a draw that is
neither its held-out networks nor its training networks), each exported once: three sessions
are created and timed by the search's own evaluator (drift-corrected, its timing plan) in the
order A, B, A again, C; the whole pass is repeated ``--passes`` times. Printed and written to
``DIR/sessions_<size>.json``, as the median absolute relative difference, the share within
±10% / ±5% and Kendall's tau:

- the same session timed twice, seconds apart (A against A again);
- a new session of the same graph (A against B);
- pass against pass (A in pass 1 against A in pass 2, minutes apart), for the median of the
  runs (what the evaluator reports), the minimum, the 25th percentile and the uncorrected
  median, each for one session and for the median of the three sessions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from mnas.latency.session import export_onnx, make_session
from mnas.latency.timing import bound_runner

HERE = Path(__file__).resolve().parent
STATISTICS = {"median": "", "min": "_min", "p25": "_p25", "uncorrected median": "_raw"}


def _predictor_bench():
    spec = importlib.util.spec_from_file_location("bench_predictor", HERE / "predictor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def time_pass(ev, graphs: list[bytes]) -> list[dict]:
    rows = []
    for graph in graphs:
        row = {}
        with ev._pinned():
            runs = [
                bound_runner(make_session(graph, ev.threads, ev.graph_optimization), ev.input_shape)
                for _ in range(3)
            ]
            for name, run in (("A", runs[0]), ("B", runs[1]), ("A again", runs[0]), ("C", runs[2])):
                timings, factor = ev._timed(run)
                t = np.asarray(timings.samples)
                row[name] = float(np.median(t)) * factor
                row[name + "_raw"] = float(np.median(t))
                row[name + "_min"] = float(t.min()) * factor
                row[name + "_p25"] = float(np.percentile(t, 25)) * factor
        rows.append(row)
    return rows


def agreement(a, b) -> dict:
    ratio = np.asarray(a) / np.asarray(b) - 1
    return {
        "median_diff_pct": float(np.median(np.abs(ratio)) * 100),
        "within_10": float(np.mean(np.abs(ratio) <= 0.10)),
        "within_5": float(np.mean(np.abs(ratio) <= 0.05)),
        "kendall_tau": float(stats.kendalltau(a, b).statistic),
    }


def summarise(passes: list[list[dict]]) -> dict:
    first, second = passes[0], passes[-1]

    def col(rows, key):
        return [r[key] for r in rows]

    def of_three(rows, suffix):
        return [float(np.median([r["A" + suffix], r["B" + suffix], r["C" + suffix]])) for r in rows]

    out = {
        "same_session": agreement(col(first, "A again"), col(first, "A")),
        "new_session": agreement(col(first, "B"), col(first, "A")),
    }
    if len(passes) > 1:
        out["pass_to_pass"] = {
            name: {
                "one_session": agreement(col(second, "A" + sfx), col(first, "A" + sfx)),
                "median_of_3_sessions": agreement(of_three(second, sfx), of_three(first, sfx)),
            }
            for name, sfx in STATISTICS.items()
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="16", choices=["16", "32", "224"])
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    bp = _predictor_bench()
    _, settings, setup = bp.compose_setup(bp.SIZES[args.size])
    ev = bp.measured_ort_latency(settings, **setup)
    ev.nominal()
    # networks 300.. of the held-out seed's draw: the bench times the first 200 as held-out
    archs = bp.heldout_archs(args.size, 300 + args.n)[300:]
    graphs = [
        export_onnx(ev._build(a), ev.input_size, ev.in_channels, ev.batch_size) for a in archs
    ]
    passes, started = [], time.time()
    for k in range(args.passes):
        passes.append(time_pass(ev, graphs))
        print(f"pass {k + 1} of {args.passes} done after {time.time() - started:.0f} s", flush=True)
    result = {"size": args.size, "n": args.n, "summary": summarise(passes), "passes": passes}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"sessions_{args.size}.json"
    path.write_text(json.dumps(result, indent=1))
    s = result["summary"]
    print(f"{args.n} networks at {args.size}x{args.size}: median diff / within 10% / 5% / tau")
    rows = [("same session, seconds apart", s["same_session"])]
    rows.append(("new session of the same graph", s["new_session"]))
    for name, d in s.get("pass_to_pass", {}).items():
        rows.append((f"pass to pass, {name}, one session", d["one_session"]))
        rows.append((f"pass to pass, {name}, median of 3 sessions", d["median_of_3_sessions"]))
    for label, d in rows:
        print(
            f"  {label:<52} {d['median_diff_pct']:5.1f}%  {d['within_10']:4.0%}  "
            f"{d['within_5']:4.0%}  {d['kendall_tau']:.3f}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
