"""What every executor shares: the protocol, the failure value, and core counting."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Executor(Protocol):
    name: str
    device: str
    """Where the tasks should train, as their worker processes see it (``cpu``, ``cuda``,
    ``cuda:N``): the requested device resolved against the GPUs those workers have."""

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        on_result: Callable[[int, Any], None],
        timeout_s: float | None = None,
    ) -> None: ...

    def close(self) -> None: ...


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_parallelism(
    workers: int | None, threads_per_worker: int | None, cores: int | None = None
) -> tuple[int, int]:
    """(workers, torch threads per worker) with the defaults filled in.

    One worker per core: a proxy child is a small network trained on small batches, which
    uses one core far better than several (the proxy trainer pins itself to one thread),
    and the coordinator is idle while the workers train. Threads default to an even split
    of the cores between the workers.
    """
    cores = cores or usable_cores()
    for key, value in (("workers", workers), ("threads_per_worker", threads_per_worker)):
        if value is not None and value < 1:
            raise ValueError(f"{key}={value} must be >= 1")
    workers = workers or cores
    return workers, threads_per_worker or max(1, cores // workers)


def check_gpu_share(gpus_per_worker: float | None) -> float:
    """The share of one GPU each task takes (default 1.0); several tasks share a GPU when it
    is below 1. A task trains on one GPU, so more than 1 is refused."""
    if gpus_per_worker is None:
        return 1.0
    if isinstance(gpus_per_worker, bool) or not 0 < gpus_per_worker <= 1:
        raise ValueError(
            f"executor.gpus_per_worker={gpus_per_worker!r} must lie in (0, 1]: a child trains "
            "on one GPU, and 0.25 lets four share it"
        )
    return float(gpus_per_worker)


def workers_per_gpus(gpus: float, share: float) -> int:
    """How many tasks of ``share`` of a GPU fit on ``gpus`` GPUs (at least one)."""
    return max(1, math.floor(gpus / share + 1e-9))


class TaskError(RuntimeError):
    """``fn`` raised inside a worker; the message carries the worker's traceback."""


@dataclass(frozen=True)
class WorkerFailure:
    """Handed to ``on_result`` instead of ``fn``'s result when the worker running a task
    died on every attempt (killed, out of memory, a crash in native code).

    Attributes:
        reason: how the last worker ended (``killed by SIGKILL``, Ray's error, ...).
        attempts: how many workers died under the task.
        seconds: wall time spent on the task over all attempts.
    """

    reason: str
    attempts: int
    seconds: float


@dataclass(frozen=True)
class TaskTimeout:
    """Handed to ``on_result`` instead of ``fn``'s result when a task ran past the time limit
    of ``map(..., timeout_s=...)`` and was stopped (it is not retried).

    Attributes:
        limit_s: the limit it ran past.
        seconds: how long it ran before it was stopped.
    """

    limit_s: float
    seconds: float


def check_timeout(timeout_s: float | None) -> None:
    if timeout_s is not None and not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"timeout_s={timeout_s} must be a finite number > 0, or None")


class TimeLimit(BaseException):
    """Raised by :func:`alarm` inside a task; a BaseException so that a task's own
    ``except Exception`` (a child records its failures) cannot swallow it."""


@contextmanager
def alarm(timeout_s: float | None) -> Iterator[None]:
    """Raise :class:`TimeLimit` in this thread after ``timeout_s`` seconds.

    Needs SIGALRM and the main thread; elsewhere the limit is not enforced (logged). The
    signal is handled between Python operations, so a task stuck inside one native call is
    stopped only when that call returns: the pool kills the process instead, and Ray
    cancels the task after :func:`ray_backstop`.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if timeout_s is None or not usable:
        if timeout_s is not None:
            log.warning("no time limit outside the main thread of a process")
        yield
        return

    def on_alarm(signum, frame):
        raise TimeLimit

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
