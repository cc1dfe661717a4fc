"""NAS-Bench-201: a cell search space and a tabular evaluator.

The NAS-Bench-201 cell (Dong & Yang, ICLR 2020) is a DAG of 4 nodes; each of its 6 edges
``j -> i`` (j < i) carries one of 5 operations. Its canonical string, the ``arch`` column of
the benchmark table and the architecture key here, lists the edges node by node::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|
     1<-0   2<-0 2<-1   3<-0 3<-1 3<-2

Tokens follow that order. All 5**6 = 15,625 cells are in the table; 341 of them have no
path of non-``none`` edges from the input (node 0) to the output (node 3) and score chance
accuracy ("disconnected" cells).

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
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnas.pareto import hypervolume, pareto_indices
from mnas.space import Architecture, Decision, _validate_tokens

logger = logging.getLogger(__name__)

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) of each edge, in the order the cell string lists them.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
DATASETS = ("cifar10", "cifar100", "imagenet16")
SEARCH_METRIC = "valid_acc_12ep"
REPORT_METRIC = "test_acc_200ep"


def cell_string(ops: Sequence[str]) -> str:
    """The canonical cell string of 6 edge operations (in :data:`EDGES` order)."""
    if len(ops) != len(EDGES):
        raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)} ops")
    nodes = []
    for node in (1, 2, 3):
        nodes.append(
            "|" + "|".join(f"{op}~{j}" for op, (i, j) in zip(ops, EDGES, strict=True) if i == node)
        )
    return "+".join(n + "|" for n in nodes)


def parse_cell(text: str) -> tuple[int, ...]:
    """Tokens (op indices in :data:`EDGES` order) of a cell string.

    Raises:
        ValueError: naming the string and what is wrong with it.
    """
    nodes = text.split("+")
    if len(nodes) != 3:
        raise ValueError(f"cell string {text!r} must have 3 nodes joined by '+'")
    tokens: list[int] = []
    for node, part in enumerate(nodes, start=1):
        if not (part.startswith("|") and part.endswith("|")):
            raise ValueError(f"cell string {text!r}: node {node} part {part!r} not in |...|")
        edges = part[1:-1].split("|")
        if len(edges) != node:
            raise ValueError(f"cell string {text!r}: node {node} needs {node} inputs")
        for j, edge in enumerate(edges):
            op, _, src = edge.partition("~")
            if op not in OPS or src != str(j):
                raise ValueError(
                    f"cell string {text!r}: edge {edge!r} must be 'op~{j}' with op in {OPS}"
                )
            tokens.append(OPS.index(op))
    return tuple(tokens)


def is_connected(tokens: Sequence[int]) -> bool:
    """Whether a path of non-``none`` edges leads from node 0 to node 3."""
    reached = {0}
    for (i, j), t in zip(EDGES, tokens, strict=True):
        if OPS[t] != "none" and j in reached:
            reached.add(i)
    return 3 in reached


class NB201Space:
    """The NAS-Bench-201 cell space: 6 edges, 5 operations each.

    All edges share the decision type ``op``, so the controller uses one softmax head and
    one embedding for every edge.
    """

    def __init__(self, ops: Sequence[str] = OPS, name: str = "nasbench201") -> None:
        if tuple(ops) != OPS:
            raise ValueError(f"NAS-Bench-201 ops are fixed to {OPS}; got {tuple(ops)}")
        self.name = name
        self.decisions = tuple(Decision("op", OPS, block=e) for e in range(len(EDGES)))

    def size(self) -> int:
        """5 ** 6 = 15,625 cells."""
        return math.prod(len(d.choices) for d in self.decisions)

    def validate(self, tokens: Sequence[int]) -> None:
        _validate_tokens(self.name, self.decisions, tokens)

    def architecture(self, tokens: Sequence[int]) -> Architecture:
        tokens = list(tokens)
        self.validate(tokens)
        key = cell_string([OPS[t] for t in tokens])
        return Architecture(space=self.name, tokens=tuple(tokens), key=key)

    def from_string(self, text: str) -> Architecture:
        """The architecture of a cell string such as the table's ``arch`` column."""
        return self.architecture(parse_cell(text))

    def sample(self, rng: random.Random) -> Architecture:
        """One cell with every edge drawn uniformly."""
        return self.architecture([rng.randrange(len(d.choices)) for d in self.decisions])


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


def true_front(latencies: np.ndarray, accuracies: np.ndarray) -> list[int]:
    """Rows of the accuracy-latency Pareto front of a whole table, by latency ascending."""
    return pareto_indices(list(zip(latencies.tolist(), accuracies.tolist(), strict=True)))


def median_reference(
    latencies: np.ndarray, accuracies: np.ndarray, connected: np.ndarray
) -> tuple[float, float]:
    """The hypervolume reference point ``(median latency, median accuracy)`` over connected
    cells (the disconnected ones have chance accuracy and near-zero latencies on some devices)."""
    return float(np.median(latencies[connected])), float(np.median(accuracies[connected]))


def hypervolume_of_rows(
    rows: Sequence[int],
    latencies: np.ndarray,
    accuracies: np.ndarray,
    ref_latency: float,
    ref_accuracy: float,
) -> float:
    """Hypervolume of the points ``(latencies[r], accuracies[r])`` for ``r`` in ``rows``."""
    points = [(float(latencies[r]), float(accuracies[r])) for r in rows]
    return hypervolume(points, ref_latency, ref_accuracy)


def best_under(latencies: np.ndarray, accuracies: np.ndarray, target_ms: float) -> float:
    """Best accuracy among rows with latency <= ``target_ms`` (-inf if there is none)."""
    ok = latencies <= target_ms
    return float(accuracies[ok].max()) if ok.any() else -math.inf
