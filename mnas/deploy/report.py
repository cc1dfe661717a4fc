"""Comparing retrained models: a plain-text table, a figure, and TensorBoard."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from mnas.deploy.artifacts import json_default


def comparison_table(rows: Sequence[dict]) -> str:
    """A plain-text table of retrained models: accuracy and latency side by side."""
    scales = {r.get("latency_scale", "raw") for r in rows}
    ort = f"ORT ms ({scales.pop()})" if len(scales) == 1 else "ORT ms (mixed scales!)"
    # the search's accuracy source: proxy-trained validation accuracy, or a supernet score
    header = ("model", "source", "hash", "params", "MMACs", "search acc", "test acc", ort)
    lines = [header]
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        search = r.get("search_accuracy")
        lines.append(
            (
                r["label"],
                r["source"],
                r["hash"][:8],
                f"{r['params']:,}",
                f"{r['macs'] / 1e6:.1f}",
                "-" if search is None else f"{100 * search:.2f}%",
                f"{100 * r['test_accuracy']:.2f}%",
                f"{r['latency_ms']:.3f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = [
        line[0].ljust(widths[0])
        + "  "
        + "  ".join(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))
        for line in lines
    ]
    return "\n".join([fmt[0], "-" * len(fmt[0]), *fmt[1:]])


def comparison_figure(rows: Sequence[dict], title: str = "retrained: accuracy vs latency"):
    """Matplotlib figure: retrained front points (line) and references (markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    found = sorted((r for r in rows if r["source"] != "reference"), key=lambda r: r["latency_ms"])
    if found:
        ax.plot(
            [r["latency_ms"] for r in found],
            [100 * r["test_accuracy"] for r in found],
            "o-",
            color="tab:red",
            label="found (retrained)",
        )
        for r in found:
            ax.annotate(
                r["label"],
                (r["latency_ms"], 100 * r["test_accuracy"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for r, marker in zip((r for r in rows if r["source"] == "reference"), "s^Dv", strict=False):
        ax.scatter(
            [r["latency_ms"]],
            [100 * r["test_accuracy"]],
            marker=marker,
            s=50,
            label=r["label"],
            zorder=3,
        )
    scales = {r.get("latency_scale", "raw") for r in rows}
    ax.set_xlabel(f"ONNX Runtime latency (ms, {'/'.join(sorted(scales))})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def write_comparison(rows: Sequence[dict], out_dir: str | os.PathLike) -> None:
    """``summary.json``, ``summary.txt`` and ``comparison.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(list(rows), indent=2, default=json_default))
    (out / "summary.txt").write_text(comparison_table(rows) + "\n")
    fig = comparison_figure(rows)
    fig.savefig(out / "comparison.png")
    import matplotlib.pyplot as plt

    plt.close(fig)


class ComparisonBoard:
    """The comparison in TensorBoard: one run in ``log_dir`` (so TensorBoard ticks it by
    default) holding the ``retrain/accuracy_vs_latency`` figure and the ``retrain/table``
    text, rewritten after every retrained model with the models so far as the step and
    flushed at once: a TensorBoard opened when retraining starts fills in as it goes."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))

    def update(self, rows: Sequence[dict]) -> None:
        step = len(rows)
        fig = comparison_figure(rows)
        self.writer.add_figure("retrain/accuracy_vs_latency", fig, step)  # closes fig
        self.writer.add_text("retrain/table", "```\n" + comparison_table(rows) + "\n```", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
