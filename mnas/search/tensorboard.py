"""TensorBoard output of a search: scalars, the Pareto figure, HParams sessions, text."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

log = logging.getLogger(__name__)


def pareto_figure(
    points: Sequence[tuple[float, float]],
    front: Sequence[tuple[float, float]],
    target: float | None,
    unit: str = "ms",
    title: str = "accuracy vs latency",
):
    """A matplotlib figure: every architecture, the front as a staircase, the target T."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if points:
        ax.scatter(
            [p[0] for p in points],
            [100 * p[1] for p in points],
            s=12,
            alpha=0.5,
            color="tab:gray",
            label="evaluated",
        )
    if front:
        ax.step(
            [p[0] for p in front],
            [100 * p[1] for p in front],
            where="post",
            color="tab:red",
            lw=1.5,
        )
        ax.scatter(
            [p[0] for p in front],
            [100 * p[1] for p in front],
            s=28,
            color="tab:red",
            label=f"Pareto front ({len(front)})",
            zorder=3,
        )
    if target is not None and math.isfinite(target):
        ax.axvline(target, ls="--", color="tab:blue", lw=1, label=f"target T = {target:.3g} {unit}")
    ax.set_xlabel(f"latency ({unit})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


class TBLogger:
    """Writes a search's TensorBoard events under ``log_dir``.

    HParams sessions go to ``log_dir/archs/<hash>`` so the HParams dashboard lists one
    session per architecture, its decisions as hyperparameters and accuracy, latency and
    reward as metrics (its scatter-plot view then shows accuracy against latency).
    """

    def __init__(self, log_dir: str | Path, hparams: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))
        self.hparams = hparams

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        for k, v in values.items():
            if v is not None and isinstance(v, int | float) and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}{k}", v, step)

    def figure(self, tag: str, fig, step: int) -> None:
        self.writer.add_figure(tag, fig, step, close=False)

    def text(self, tag: str, markdown: str, step: int) -> None:
        self.writer.add_text(tag, markdown, step)

    def arch_session(self, arch_hash: str, hparams: dict, metrics: dict[str, float]) -> None:
        if not self.hparams:
            return
        clean = {
            k: (v if isinstance(v, int | float | str | bool) else str(v))
            for k, v in hparams.items()
        }
        finite = {
            f"hparam/{k}": v for k, v in metrics.items() if v is not None and math.isfinite(v)
        }
        if not finite:
            return
        self.writer.add_hparams(clean, finite, run_name=f"archs/{arch_hash}")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
