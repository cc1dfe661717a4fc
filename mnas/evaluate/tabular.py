"""The NAS-Bench-201 table as an accuracy and latency source.

The tabular evaluator looks accuracies and device latencies up in the CSV described in
``datasets/README.md`` (columns ``{dataset}_{split}_acc_{epochs}ep`` in %, and
``latency_ms_{device}``). It returns accuracies in [0, 1].

Protocol (NAS-Bench-201 paper, section 5): a search sees the 12-epoch *validation* accuracy
(``cifar10_valid_acc_12ep``); what it found is reported with its 200-epoch *test* accuracy
(``cifar10_test_acc_200ep``), which the search never saw.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnas.evaluate.protocol import FAILED, EvalResult
from mnas.space import Architecture
from mnas.space.nasbench201 import is_connected, parse_cell

logger = logging.getLogger(__name__)

DATASETS = ("cifar10", "cifar100", "imagenet16")
SEARCH_METRIC = "valid_acc_12ep"
REPORT_METRIC = "test_acc_200ep"


@dataclass(frozen=True)
class TabularResult:
    """One looked-up architecture.

    Attributes:
        accuracy: the search metric, in [0, 1].
        latency_ms: measured latency on the evaluator's device.
        report_accuracy: the reporting metric (by default 200-epoch test), in [0, 1].
    """

    accuracy: float
    latency_ms: float
    report_accuracy: float


class NB201Table:
    """The NAS-Bench-201 CSV in memory: cell strings and numeric columns as numpy arrays.

    Args:
        path: the CSV (``$MNAS_DATA/nasbench201/nb201_acc_latency.csv`` on our machines).
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"NAS-Bench-201 table {str(path)!r} does not exist")
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or "arch" not in header:
                raise ValueError(f"{str(path)!r} has no 'arch' column in its header")
            rows = list(reader)
        arch_col = header.index("arch")
        self.path = path
        self.archs: tuple[str, ...] = tuple(r[arch_col] for r in rows)
        self.columns: dict[str, np.ndarray] = {
            name: np.array([float(r[c]) for r in rows])
            for c, name in enumerate(header)
            if name != "arch"
        }
        self.row_of: dict[str, int] = {a: i for i, a in enumerate(self.archs)}
        if len(self.row_of) != len(self.archs):
            raise ValueError(f"{str(path)!r} lists a cell string more than once")
        self.connected = np.array([is_connected(parse_cell(a)) for a in self.archs])
        logger.info("loaded %d NAS-Bench-201 rows from %s", len(self.archs), path)

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(c[len("latency_ms_") :] for c in self.columns if c.startswith("latency_ms_"))

    @property
    def accuracy_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if "_acc_" in c)

    def accuracy_column(self, dataset: str, metric: str) -> np.ndarray:
        """Accuracies in [0, 1] of column ``{dataset}_{metric}``.

        Raises:
            ValueError: listing the accuracy columns when the column does not exist.
        """
        name = f"{dataset}_{metric}"
        if name not in self.columns or "_acc_" not in name:
            raise ValueError(
                f"no accuracy column {name!r} (dataset={dataset!r}, metric={metric!r}); "
                f"allowed: {list(self.accuracy_columns)}"
            )
        return self.columns[name] / 100.0

    def latency_column(self, device: str) -> np.ndarray:
        """Latencies (ms) on ``device``. Raises ValueError listing the devices it has."""
        if device not in self.devices:
            raise ValueError(f"unknown latency device {device!r}; allowed: {list(self.devices)}")
        return self.columns[f"latency_ms_{device}"]

    def row(self, arch: Architecture | str) -> int:
        """Row of an architecture or cell string. Raises ValueError naming an unknown one."""
        key = arch.key if isinstance(arch, Architecture) else arch
        try:
            return self.row_of[key]
        except KeyError:
            raise ValueError(f"cell {key!r} is not in the table {str(self.path)!r}") from None


class TabularEvaluator:
    """Accuracy and latency of a NAS-Bench-201 architecture, looked up in the table.

    Args:
        path: the CSV, or an already loaded :class:`NB201Table` (shared between evaluators).
        dataset: ``cifar10``, ``cifar100`` or ``imagenet16``.
        metric: search metric column suffix (default ``valid_acc_12ep``, as the paper searches).
        device: latency device (``pixel3``, ``raspi4``, ``eyeriss``, ``fpga``, ``gold_6226``).
        report_metric: the metric a found architecture is reported with (default
            ``test_acc_200ep``); the search never sees it.
    """

    def __init__(
        self,
        path: str | Path | NB201Table,
        dataset: str = "cifar10",
        metric: str = SEARCH_METRIC,
        device: str = "pixel3",
        report_metric: str = REPORT_METRIC,
    ) -> None:
        self.table = path if isinstance(path, NB201Table) else NB201Table(path)
        self.dataset = dataset
        self.metric = metric
        self.device = device
        self.accuracies = self.table.accuracy_column(dataset, metric)
        self.report_accuracies = self.table.accuracy_column(dataset, report_metric)
        self.latencies = self.table.latency_column(device)

    def evaluate(self, arch: Architecture | str) -> TabularResult:
        """Look one architecture (or cell string) up. Raises ValueError if it is unknown."""
        i = self.table.row(arch)
        return TabularResult(
            accuracy=float(self.accuracies[i]),
            latency_ms=float(self.latencies[i]),
            report_accuracy=float(self.report_accuracies[i]),
        )

    def accuracy(self, arch: Architecture | str) -> float:
        return self.evaluate(arch).accuracy

    def latency(self, arch: Architecture | str) -> float:
        return self.evaluate(arch).latency_ms


class TableEvaluator:
    """Accuracy and latency from a lookup table (``evaluate(arch)`` of
    :class:`TabularEvaluator`)."""

    def __init__(self, table) -> None:
        self.table = table

    def evaluate(
        self, archs: Sequence[Architecture], on_result: Callable[[EvalResult], None]
    ) -> list[EvalResult]:
        out = []
        for arch in archs:
            try:
                row = self.table.evaluate(arch)
                res = EvalResult(
                    arch,
                    row.accuracy,
                    row.latency_ms,
                    {"median_ms": row.latency_ms},
                    extra={"report_accuracy": row.report_accuracy},
                )
            except ValueError as e:
                res = EvalResult(arch, math.nan, math.nan, status=FAILED, reason=str(e))
            on_result(res)
            out.append(res)
        return out

    def close(self) -> None:
        pass
