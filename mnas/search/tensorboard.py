"""TensorBoard output of a search: scalars, the Pareto figure, text, HParams sessions.

The search's own run and the per-architecture HParams sessions go to two log directories
(see ``SEARCH_DIR``), each opened by its own ``tensorboard --logdir`` command.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402
from tensorboard.compat.proto import summary_pb2  # noqa: E402
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2  # noqa: E402
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


# Where a run's events go, relative to the run directory. The search's own run is kept apart
# from the one-run-per-architecture HParams sessions: TensorBoard's run selectors tick every
# run by default only up to 40 runs (legacy Scalars/Images/Text tabs) or 500 (Time Series),
# so sessions next to the search's run would leave its charts unticked in any real search.
SEARCH_DIR = "tb"
HPARAMS_DIR = "hparams"


class TBLogger:
    """Writes a search's TensorBoard events.

    ``log_dir`` gets one run: scalars, figures and text, flushed by :meth:`flush` (the
    search calls it after every step, so a TensorBoard opened at the start updates live).
    ``hparams_dir`` (optional) gets the HParams experiment at its root and one session per
    architecture in ``hparams_dir/<hash>``, each written and closed as it arrives.
    """

    def __init__(self, log_dir: str | Path, hparams_dir: str | Path | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))
        self.hparams_dir = Path(hparams_dir) if hparams_dir is not None else None

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        for k, v in values.items():
            if v is not None and isinstance(v, int | float) and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}{k}", v, step)

    def figure(self, tag: str, fig, step: int) -> None:
        self.writer.add_figure(tag, fig, step, close=False)

    def text(self, tag: str, markdown: str, step: int) -> None:
        self.writer.add_text(tag, markdown, step)

    def hparams_experiment(
        self, domains: dict[str, Sequence], metrics: dict[str, str], description: str = ""
    ) -> None:
        """Declares the HParams columns once: each hyperparameter with its allowed values,
        each metric tag with its display name. A resumed run keeps the first declaration."""
        if self.hparams_dir is None:
            return
        self.hparams_dir.mkdir(parents=True, exist_ok=True)
        if any(self.hparams_dir.glob("events.out.tfevents.*")):
            return
        infos = []
        for name, values in domains.items():
            info = api_pb2.HParamInfo(name=name, type=_hparam_type(values[0]))
            info.domain_discrete.extend([_plain(v) for v in values])
            infos.append(info)
        exp = api_pb2.Experiment(
            description=description,
            hparam_infos=infos,
            metric_infos=[
                api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=shown)
                for tag, shown in metrics.items()
            ],
        )
        with SummaryWriter(str(self.hparams_dir)) as w:
            w.file_writer.add_summary(
                _hparams_summary(
                    metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp)
                )
            )

    def arch_session(
        self, arch_hash: str, hparams: dict, metrics: dict[str, float | None], ok: bool
    ) -> None:
        """One HParams session: the architecture's decisions and its finite metrics; a
        failed architecture is a session with status failure."""
        if self.hparams_dir is None:
            return
        start = plugin_data_pb2.SessionStartInfo()
        for k, v in hparams.items():
            start.hparams[k].CopyFrom(_hparam_value(v))
        end = plugin_data_pb2.SessionEndInfo(
            status=api_pb2.STATUS_SUCCESS if ok else api_pb2.STATUS_FAILURE
        )
        with SummaryWriter(str(self.hparams_dir / arch_hash)) as w:
            w.file_writer.add_summary(
                _hparams_summary(
                    metadata.SESSION_START_INFO_TAG,
                    plugin_data_pb2.HParamsPluginData(session_start_info=start),
                )
            )
            for k, v in metrics.items():
                if v is not None and math.isfinite(v):
                    w.add_scalar(k, v, 0)
            w.file_writer.add_summary(
                _hparams_summary(
                    metadata.SESSION_END_INFO_TAG,
                    plugin_data_pb2.HParamsPluginData(session_end_info=end),
                )
            )

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    return summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))]
    )


def _hparam_type(value) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(value, int | float):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _plain(value) -> bool | float | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return str(value)


def _hparam_value(value) -> struct_pb2.Value:
    v = _plain(value)
    if isinstance(v, bool):
        return struct_pb2.Value(bool_value=v)
    if isinstance(v, float):
        return struct_pb2.Value(number_value=v)
    return struct_pb2.Value(string_value=v)
