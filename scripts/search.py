"""Run an architecture search: ``python scripts/search.py [overrides]``.

Examples::

    python scripts/search.py                                   # digits, PPO, soft reward
    python scripts/search.py experiment=fashion_mnist_proxy    # needs MNAS_DATA
    python scripts/search.py reward=hard reward.target_ms=2.5
    python scripts/search.py -m reward.target_ms=1.5,2,3       # a target sweep
    python scripts/search.py resume=outputs/search/<run>       # continue a run

Returns the best reward (so that Hydra sweepers can optimise it).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from mnas.conf import register_configs
from mnas.conf.runner import build_search, load_resume_config
from mnas.latency.references import references_label, resolve_references
from mnas.latency.settings import AUTO_MAX_SECONDS, AUTO_NETWORKS
from mnas.search.records import PARETO, load_standalone

register_configs()
# A resumed run writes into its own directory instead of a new one.
OmegaConf.register_new_resolver(
    "run_dir_or", lambda resume, default: resume or default, replace=True
)
log = logging.getLogger("mnas.search")


class AboveTheBar(logging.Handler):
    """Warnings on the console (a failed, diverged or timed-out child included), printed
    above the progress bar instead of through it; the full log goes to the run's search.log."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def front_measured(run_dir: Path) -> dict[str, float]:
    """``measured_latency_ms`` of the front's points by hash, where the search re-timed its
    front on ONNX Runtime (a predicted latency source); empty otherwise."""
    try:
        points = json.loads((run_dir / PARETO).read_text()).get("points", [])
    except (OSError, ValueError):
        return {}
    return {p["hash"]: p["measured_latency_ms"] for p in points if "measured_latency_ms" in p}


def print_table(
    summary, unit: str, references: str = "the reference", measured: dict | None = None
) -> None:
    """The front as a table, then the latency scale it is on (``references``: who set the
    drift-corrected scale, :func:`mnas.latency.references.references_label`); ``measured``
    (hash -> ms, :func:`front_measured`) adds the front's latency re-timed on ONNX Runtime
    beside the search's own figure."""
    rows = summary.front
    measured = measured or {}
    print()
    noun = "architecture" if len(rows) == 1 else "architectures"
    print(f"Pareto front: {len(rows)} {noun} (max accuracy, min latency)")
    extra = f" {'measured ms':>11}" if measured else ""
    header = (
        f"{'#':>3} {'acc %':>7} {'lat ' + unit:>11}{extra} {'reward':>8} {'params':>10} "
        f"{'MACs':>12}  blocks"
    )
    print(header)
    print("-" * len(header))
    for i, r in enumerate(rows):
        m = measured.get(r.hash) if measured else None
        cell = "" if not measured else f" {'-' if m is None else f'{m:.4f}':>11}"
        print(
            f"{i:>3} {100 * r.accuracy:>7.2f} {r.latency_value:>11.4f}{cell} {r.reward:>8.4f} "
            f"{r.params:>10,} {r.macs:>12,}  {' '.join(r.blocks)}"
        )
    if measured:
        print(f"lat {unit}: the search's latency source; measured ms: re-timed on ONNX Runtime")
    scales = sorted({r.latency["scale"] for r in rows if "scale" in (r.latency or {})})
    nominals = sorted(
        {r.latency["nominal_ms"] for r in rows if (r.latency or {}).get("nominal_ms")}
    )
    if scales:
        line = f"latency scale: {', '.join(scales)}"
        if nominals:
            line += f" (ms at this machine's speed when {references} took {nominals[0]:.4g} ms)"
        print(line + "; raw figures: latency.raw_median_ms in results.jsonl")
    print()


def print_standalone(run_dir: Path, summary, unit: str) -> None:
    """evaluator=supernet: the front's best architectures trained stand-alone after the search."""
    checks = load_standalone(run_dir)
    rows = [(r, checks[r.hash]) for r in summary.front if r.hash in checks]
    if not rows:
        return
    print("stand-alone check (accuracy = supernet score; standalone = trained from scratch):")
    print(
        f"{'accuracy %':>10} {'standalone %':>12} {'lat ' + unit:>10} {'standalone ms':>13}  hash"
    )
    for r, c in rows:
        acc = c["standalone_accuracy"]
        lat = c["standalone_latency_ms"]
        print(
            f"{100 * r.accuracy:>10.2f} {'-' if acc is None else f'{100 * acc:.2f}':>12} "
            f"{r.latency_value:>10.4f} {'-' if lat is None else f'{lat:.4f}':>13}  {r.hash}"
        )
    print()


def print_tensorboard(search) -> None:
    """The TensorBoard commands, printed at the start too: both views fill in while the
    search runs."""
    if search.tb is None:
        return
    print(f"tensorboard:   tensorboard --logdir {search.tb.log_dir}   (curves, Pareto figure)")
    if search.tb.hparams_dir is not None:
        print(
            f"hparams:       tensorboard --logdir {search.tb.hparams_dir}   "
            "(tab HPARAMS: one session per architecture)"
        )


@hydra.main(config_path="../conf", config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.resume:
            run_dir = Path(cfg.resume)
            cfg = load_resume_config(run_dir, list(HydraConfig.get().overrides.task))
        if cfg.latency.kind == "predictor" and cfg.latency.get("predictor_path") == "auto":
            print(
                "latency: this machine's predictor (latency.predictor_path=auto); the first "
                f"search of a set-up builds it (networks timed twice for "
                f"{AUTO_MAX_SECONDS / 60:.0f} min, at most {AUTO_NETWORKS}), a "
                f"later one re-checks it on {cfg.latency.get('predictor_recheck', 20)} of them "
                f"if it was timed over an hour ago (0: never; progress in "
                f"{run_dir / 'search.log'})",
                flush=True,
            )
        search = build_search(cfg, run_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)

    print(f"run directory: {run_dir}")
    print_tensorboard(search)
    console = AboveTheBar(logging.WARNING)
    logging.getLogger().addHandler(console)
    total = search.steps * search.batch_size
    bar = tqdm(
        total=total,
        initial=search.step * search.batch_size,
        unit="arch",
        desc="search",
        dynamic_ncols=True,
    )
    evaluated = {"n": 0, "seconds": 0.0}
    # every child of the run that is not ok (failed, diverged, timeout), resumed ones too
    postfix = {"failed": sum(r.status != "ok" for r in search.records)}
    bar.set_postfix(postfix)

    def on_child(rec) -> None:
        evaluated["n"] += 1
        evaluated["seconds"] += rec.seconds
        postfix["failed"] += rec.status != "ok"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    def on_step(report) -> None:
        per = evaluated["seconds"] / max(1, evaluated["n"])
        postfix.update(
            best=f"{report.best_reward:.4f}",
            front=report.front_size,
            s_per_arch=f"{per:.1f}",
            reused=report.reused,
        )
        bar.set_postfix(postfix, refresh=False)
        bar.update(report.reused)  # samples answered from earlier results

    try:
        summary = search.run(on_child=on_child, on_step=on_step)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted; resume with: python scripts/search.py resume={run_dir}")
        sys.exit(130)
    finally:
        search.evaluator.close()
        if search.tb is not None:
            search.tb.close()
        logging.getLogger().removeHandler(console)
    bar.close()
    unit = search.latency_unit
    refs = resolve_references(tuple(cfg.latency.references), cfg.data.image_size)
    print_table(summary, unit, references_label(refs), front_measured(run_dir))
    print_standalone(run_dir, summary, unit)
    n = max(1, evaluated["n"])
    print(
        f"evaluated {summary.evaluated} architectures in {summary.steps} steps "
        f"({evaluated['seconds'] / n:.1f} s per architecture this session; "
        f"target T = {search.target:.4g} {unit})"
    )
    print(f"run directory: {run_dir}")
    print_tensorboard(search)
    best = summary.best.reward if summary.best else -math.inf
    return best


if __name__ == "__main__":
    main()
