"""The trained evaluator: children timed, then trained briefly on a proxy task.

:class:`TrainedEvaluator` runs a latency phase (every child timed, one at a time, while
nothing trains) followed by a training phase run through an executor (serial, process
pool or Ray; :mod:`mnas.evaluate.executors`). Timing therefore never overlaps training.
A worker that died under a child comes back from the executor as a
:class:`~mnas.evaluate.executors.WorkerFailure` and becomes a ``failed`` result here; a
child stopped at its time limit comes back as a
:class:`~mnas.evaluate.executors.TaskTimeout` and becomes a ``timeout`` result.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mnas.data.spec import DataSpec, get_dataset
from mnas.evaluate.executors.base import TaskError, TaskTimeout, WorkerFailure
from mnas.evaluate.protocol import DIVERGED, FAILED, OK, TIMEOUT, EvalResult
from mnas.space import Architecture

log = logging.getLogger(__name__)


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
        from mnas.nn.builder import build_model

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
    train: object  # mnas.training.TrainConfig
    input_size: int
    device: str = "cpu"
    """Where the worker trains it (resolved: ``cpu``, ``cuda``, ``cuda:N``)."""
    eval_split: str = "val"
    """The split it is scored on: ``val`` in a search, ``test`` for a re-training check."""


@dataclass(frozen=True)
class TrainOutcome:
    accuracy: float
    params: int
    macs: int
    status: str
    reason: str
    seconds: float


def train_child(task: TrainTask) -> TrainOutcome:
    """Build, train and score one child; failures come back as a status, never raised.

    The network is built (and its weights drawn) on the CPU, then trained on
    ``task.device``: a child starts from the same weights on every device."""
    import torch

    from mnas.nn.stats import model_stats
    from mnas.training.trainer import train_and_evaluate

    start = time.perf_counter()
    try:
        # Initial weights from the task alone, not from whatever this process drew before,
        # so that a child trains the same in any executor and any worker.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(task.train.seed ^ int(task.arch.hash[:8], 16))
            model = task.model.build(task.arch)
        stats = model_stats(model, task.input_size, task.model.in_channels)
        result = train_and_evaluate(
            model,
            get_dataset(task.data),
            task.train,
            eval_split=task.eval_split,
            device=task.device,
        )
    except Exception as e:  # a child that cannot be built or trained must not stop the search
        # the search warns about every failed child; here, where it may be a worker
        # process without log handlers, the details are kept for a debug log
        log.info("child %s failed: %s", task.arch.hash, e)
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


def crashed_outcome(failure: WorkerFailure) -> TrainOutcome:
    """The record of a child whose worker died on every attempt."""
    n = failure.attempts
    tries = f"{n} attempt{'s' if n != 1 else ''}"
    reason = f"worker crashed: {failure.reason} ({tries})"
    return TrainOutcome(math.nan, 0, 0, FAILED, reason, failure.seconds)


def timeout_outcome(timeout: TaskTimeout) -> TrainOutcome:
    """The record of a child stopped at its time limit."""
    reason = f"over the {timeout.limit_s:g} s time limit"
    return TrainOutcome(math.nan, 0, 0, TIMEOUT, reason, timeout.seconds)


# Worst-case training speed assumed by the default time limit: far below any child of the
# proxy spaces on one core (the docs measure ~600 images/s for the digits proxy child), so
# that only a child that has stopped making progress reaches the limit.
WORST_IMAGES_PER_SECOND = 10.0
# Building, first-batch set-up, and a worker's first dataset load.
FIXED_OVERHEAD_S = 60.0


def default_time_limit(train, train_images: int, val_images: int) -> float:
    """Seconds a child may take, from its training budget: the images it trains on (the
    ``epochs`` budget, capped by ``max_steps``), BN re-estimation and evaluation, at
    :data:`WORST_IMAGES_PER_SECOND`, plus :data:`FIXED_OVERHEAD_S`."""
    images = train.epochs * train_images
    if train.max_steps is not None:
        images = min(images, train.max_steps * train.batch_size)
    if train.bn_recalibrate:
        images += train.bn_recalibrate_batches * train.batch_size
    images += val_images
    return round(FIXED_OVERHEAD_S + images / WORST_IMAGES_PER_SECOND, 1)


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


def latency_failure(arch: Architecture, stats: dict, err: str, secs: float) -> EvalResult:
    """The record of a child whose latency could not be measured (it is not trained)."""
    return EvalResult(
        arch,
        math.nan,
        math.nan,
        stats,
        status=FAILED,
        reason=f"latency: {err}",
        latency_seconds=secs,
    )


class TrainedEvaluator:
    """Latency phase (serial, in this process) then training phase (through ``executor``).

    Args:
        latency: a latency evaluator (``measure(arch) -> LatencyStats``).
        executor: runs :func:`train_child` over tasks (see :mod:`mnas.evaluate.executors`).
        model: builder arguments.
        data: dataset to load in each worker.
        train: a :class:`mnas.training.TrainConfig`; a child's initial weights are seeded by
            its seed XOR the architecture hash, so any process builds the same network.
        input_size: image size (for MACs).
        device: where the executor's workers train the children, already resolved for them
            (an executor's ``device``): ``cpu``, ``cuda`` or ``cuda:N``. Latency is timed on
            the CPU whatever it is.
        time_limit_s: seconds a child may train (and be scored); one still running then is
            stopped and recorded with status ``timeout``. None: no limit.
    """

    def __init__(
        self,
        latency,
        executor,
        model: ModelSpec,
        data: DataSpec,
        train,
        input_size: int,
        device: str = "cpu",
        time_limit_s: float | None = None,
    ):
        self.latency = latency
        self.executor = executor
        self.model = model
        self.data = data
        self.train = train
        self.input_size = input_size
        self.device = device
        self.time_limit_s = time_limit_s

    def time_children(self, archs: Sequence[Architecture]) -> list[tuple[dict, float, float, str]]:
        """(stats dict, median, seconds, error) per architecture, timed one at a time here,
        or on the executor's latency device when it has one (Ray ``latency_resource``)."""
        job = (self.latency, list(archs))
        if getattr(self.executor, "latency_resource", None):
            try:
                return self.executor.on_latency_device(time_batch_on_device, job)
            except TaskError as e:
                reason = f"latency device: {str(e).splitlines()[0]}"
                return [({}, math.nan, 0.0, reason) for _ in archs]
        return time_batch(job)

    def evaluate(
        self, archs: Sequence[Architecture], on_result: Callable[[EvalResult], None]
    ) -> list[EvalResult]:
        # Phase 1: time every child while nothing trains.
        timed = self.time_children(archs)
        # Phase 2: train those that could be timed.
        results: list[EvalResult | None] = [None] * len(archs)
        tasks, index = [], []
        for i, (arch, (stats, _, secs, err)) in enumerate(zip(archs, timed, strict=True)):
            if err:
                results[i] = latency_failure(arch, stats, err, secs)
                on_result(results[i])
                continue
            tasks.append(
                TrainTask(arch, self.model, self.data, self.train, self.input_size, self.device)
            )
            index.append(i)

        def done(k: int, out: TrainOutcome | WorkerFailure | TaskTimeout) -> None:
            i = index[k]
            if isinstance(out, WorkerFailure):
                out = crashed_outcome(out)
            elif isinstance(out, TaskTimeout):
                out = timeout_outcome(out)
            stats, median, secs, _ = timed[i]
            results[i] = EvalResult(
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
            self.executor.map(train_child, tasks, done, timeout_s=self.time_limit_s)
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.executor.close()
