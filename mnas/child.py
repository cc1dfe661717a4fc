"""Evaluating child networks: the accuracy and latency sources behind the search.

The search loop hands a batch of new architectures to an evaluator and gets back one
:class:`ChildResult` per architecture. Two evaluators exist:

- :class:`TrainedEvaluator`: a latency phase (every child timed, one at a time, while
  nothing trains) followed by a training phase run through an executor (serial, process
  pool or Ray). Timing therefore never overlaps training.
- :class:`TableEvaluator`: accuracy and latency looked up in a table (NAS-Bench-201).

A child that fails to build, export or train, or whose loss diverges, comes back with
``status`` ``failed`` or ``diverged`` and a ``reason``; it never raises into the loop.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from mnas.space import Architecture

log = logging.getLogger(__name__)

OK, DIVERGED, FAILED = "ok", "diverged", "failed"


@dataclass(frozen=True)
class ChildResult:
    """What one child evaluation produced.

    Attributes:
        arch: the architecture.
        accuracy: top-1 in [0, 1] on the search split (NaN when failed).
        latency_ms: median latency (or MACs in millions for ``latency=macs``).
        latency: the full latency statistics as a dict (median, p10, p90, cv, runs, ...).
        params: parameter count.
        macs: multiply-accumulates of one image.
        status: ``ok``, ``diverged`` or ``failed``.
        reason: why it diverged or failed ("" when ok).
        train_seconds: wall time of training + evaluation.
        latency_seconds: wall time of the latency measurement (export included).
        extra: source-specific numbers (e.g. the 200-epoch test accuracy of a table row).
    """

    arch: Architecture
    accuracy: float
    latency_ms: float
    latency: dict = field(default_factory=dict)
    params: int = 0
    macs: int = 0
    status: str = OK
    reason: str = ""
    train_seconds: float = 0.0
    latency_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Evaluator(Protocol):
    def evaluate(
        self, archs: Sequence[Architecture], on_result: Callable[[ChildResult], None]
    ) -> list[ChildResult]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DataSpec:
    """How to load a dataset; hashable, so each process loads it once."""

    name: str
    root: str | None = None
    image_size: int = 32
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = 0
    seed: int = 0
    download: bool = False


@lru_cache(maxsize=4)
def get_dataset(spec: DataSpec):
    """Load (once per process) the dataset a :class:`DataSpec` names."""
    from mnas.data import load_dataset

    return load_dataset(
        spec.name,
        root=spec.root,
        image_size=spec.image_size,
        train_size=spec.train_size,
        val_size=spec.val_size,
        test_size=spec.test_size,
        seed=spec.seed,
        download=spec.download,
    )


@dataclass(frozen=True)
class ModelSpec:
    """Builder arguments shared by every child of a search."""

    num_classes: int
    in_channels: int
    width_mult: float = 1.0
    stem_stride: int = 1
    dropout: float = 0.2
    bn_momentum: float = 0.1

    def build(self, arch: Architecture):
        from mnas.builder import build_model

        return build_model(
            arch,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            width_mult=self.width_mult,
            stem_stride=self.stem_stride,
            dropout=self.dropout,
            bn_momentum=self.bn_momentum,
        )


@dataclass(frozen=True)
class TrainTask:
    """One child to train: everything a worker process needs, and picklable."""

    arch: Architecture
    model: ModelSpec
    data: DataSpec
    train: object  # mnas.train.TrainConfig
    input_size: int


@dataclass(frozen=True)
class TrainOutcome:
    accuracy: float
    params: int
    macs: int
    status: str
    reason: str
    seconds: float


def train_child(task: TrainTask) -> TrainOutcome:
    """Build, train and score one child; failures come back as a status, never raised."""
    import torch

    from mnas.builder import model_stats
    from mnas.train import train_and_evaluate

    start = time.perf_counter()
    try:
        # Initial weights from the task alone, not from whatever this process drew before,
        # so that a child trains the same in any executor and any worker.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(task.train.seed ^ int(task.arch.hash[:8], 16))
            model = task.model.build(task.arch)
        stats = model_stats(model, task.input_size, task.model.in_channels)
        result = train_and_evaluate(model, get_dataset(task.data), task.train, eval_split="val")
    except Exception as e:  # a child that cannot be built or trained must not stop the search
        log.warning("child %s failed: %s", task.arch.hash, e)
        log.debug("%s", traceback.format_exc())
        return TrainOutcome(
            math.nan, 0, 0, FAILED, f"{type(e).__name__}: {e}", time.perf_counter() - start
        )
    if result.diverged:
        return TrainOutcome(
            math.nan,
            stats.params,
            stats.macs,
            DIVERGED,
            f"non-finite loss at step {result.diverged_step}",
            result.seconds,
        )
    return TrainOutcome(result.accuracy, stats.params, stats.macs, OK, "", result.seconds)


def time_batch(job: tuple) -> list[tuple[dict, float, float, str]]:
    """``job = (latency evaluator, architectures)``: time them one after another; per
    architecture (stats dict, median, seconds, error). A picklable function of one
    argument, so that a Ray latency device can run it."""
    from mnas.latency import LatencyError

    latency, archs = job
    out = []
    for arch in archs:
        start = time.perf_counter()
        try:
            stats = latency.measure(arch)
        except LatencyError as e:
            out.append(({}, math.nan, time.perf_counter() - start, str(e)))
            continue
        out.append((stats.to_dict(), stats.median_ms, time.perf_counter() - start, ""))
    return out


# Evaluators kept by the latency device's process, by their pickled settings.
_KEPT_EVALUATORS: dict[bytes, object] = {}


def time_batch_on_device(job: tuple) -> list[tuple[dict, float, float, str]]:
    """:func:`time_batch` in the latency device's long-lived process. Each step ships a
    fresh copy of the evaluator; the first copy with the same settings is kept and used
    instead, so its reference network is exported and its nominal timed once per search,
    and every step is on the same scale even without a cache."""
    latency, archs = job
    key = hashlib.sha256(pickle.dumps(latency)).digest()
    return time_batch((_KEPT_EVALUATORS.setdefault(key, latency), archs))


class TrainedEvaluator:
    """Latency phase (serial, in this process) then training phase (through ``executor``).

    Args:
        latency: a latency evaluator (``measure(arch) -> LatencyStats``).
        executor: runs :func:`train_child` over tasks (see :mod:`mnas.executors`).
        model: builder arguments.
        data: dataset to load in each worker.
        train: a :class:`mnas.train.TrainConfig`; a child's initial weights are seeded by
            its seed XOR the architecture hash, so any process builds the same network.
        input_size: image size (for MACs).
    """

    def __init__(self, latency, executor, model: ModelSpec, data: DataSpec, train, input_size: int):
        self.latency = latency
        self.executor = executor
        self.model = model
        self.data = data
        self.train = train
        self.input_size = input_size

    def time_children(self, archs: Sequence[Architecture]) -> list[tuple[dict, float, float, str]]:
        """(stats dict, median, seconds, error) per architecture, timed one at a time here,
        or on the executor's latency device when it has one (Ray ``latency_resource``)."""
        job = (self.latency, list(archs))
        if getattr(self.executor, "latency_resource", None):
            from mnas.executors import TaskError

            try:
                return self.executor.on_latency_device(time_batch_on_device, job)
            except TaskError as e:
                reason = f"latency device: {str(e).splitlines()[0]}"
                return [({}, math.nan, 0.0, reason) for _ in archs]
        return time_batch(job)

    def evaluate(
        self, archs: Sequence[Architecture], on_result: Callable[[ChildResult], None]
    ) -> list[ChildResult]:
        # Phase 1: time every child while nothing trains.
        timed = self.time_children(archs)
        # Phase 2: train those that could be timed.
        results: list[ChildResult | None] = [None] * len(archs)
        tasks, index = [], []
        for i, (arch, (stats, _, secs, err)) in enumerate(zip(archs, timed, strict=True)):
            if err:
                results[i] = ChildResult(
                    arch,
                    math.nan,
                    math.nan,
                    stats,
                    status=FAILED,
                    reason=f"latency: {err}",
                    latency_seconds=secs,
                )
                on_result(results[i])
                continue
            tasks.append(TrainTask(arch, self.model, self.data, self.train, self.input_size))
            index.append(i)

        def done(k: int, out: TrainOutcome) -> None:
            i = index[k]
            stats, median, secs, _ = timed[i]
            results[i] = ChildResult(
                archs[i],
                out.accuracy,
                median,
                stats,
                out.params,
                out.macs,
                out.status,
                out.reason,
                out.seconds,
                secs,
            )
            on_result(results[i])

        if tasks:
            self.executor.map(train_child, tasks, done)
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.executor.close()


class TableEvaluator:
    """Accuracy and latency from a lookup table (``evaluate(arch)`` of
    :class:`mnas.nasbench201.TabularEvaluator`)."""

    def __init__(self, table) -> None:
        self.table = table

    def evaluate(
        self, archs: Sequence[Architecture], on_result: Callable[[ChildResult], None]
    ) -> list[ChildResult]:
        out = []
        for arch in archs:
            try:
                row = self.table.evaluate(arch)
                res = ChildResult(
                    arch,
                    row.accuracy,
                    row.latency_ms,
                    {"median_ms": row.latency_ms},
                    extra={"report_accuracy": row.report_accuracy},
                )
            except ValueError as e:
                res = ChildResult(arch, math.nan, math.nan, status=FAILED, reason=str(e))
            on_result(res)
            out.append(res)
        return out

    def close(self) -> None:
        pass
