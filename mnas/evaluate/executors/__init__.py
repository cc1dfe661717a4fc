"""Executors run a function over a batch of tasks: serially, in a process pool, or on Ray.

Every executor has ``map(fn, tasks, on_result)``: it calls ``on_result(k, fn(tasks[k]))``
in the coordinating process as each task finishes (in any order) and returns when all
have, plus ``close()``. It knows nothing of the search policy nor of what the tasks are.

``fn`` must be a module-level function and the tasks picklable (they cross processes).
An exception raised *by* ``fn`` is a bug and propagates out of ``map`` in every executor
(as :class:`TaskError` from the pool and Ray).
A worker *process* that dies under a task (killed, out of memory, a crash in native code)
is different: the task is retried up to ``retries`` times on a fresh worker, and then
reported through ``on_result`` as a :class:`WorkerFailure` value (reason, attempts,
seconds), which the caller turns into its own kind of result, so that the search goes on.

``map(..., timeout_s=t)`` limits each task to ``t`` seconds from its start (not from its
submission: a fresh worker's start-up does not count). A task still running then is
stopped (``pool``: its worker is killed and replaced; ``serial`` and ``ray``: an alarm
interrupts it, and Ray also cancels a task stuck in native code after
:func:`~mnas.evaluate.executors.ray_cluster.ray_backstop`) and reported as a
:class:`TaskTimeout` value, never retried.

Latency is not measured here: the evaluator times a whole batch in the coordinator
before it hands the training tasks to an executor, so timing never overlaps training
(see ``docs/distributed.md``).

Must not know about: the search policy, models, data, what a task means.
"""

from __future__ import annotations

from mnas.evaluate.executors.base import (
    Executor,
    TaskError,
    TaskTimeout,
    WorkerFailure,
    check_gpu_share,
    default_parallelism,
    usable_cores,
)
from mnas.evaluate.executors.pool import PoolExecutor
from mnas.evaluate.executors.ray_cluster import RAY_INSTALL_HINT, RayExecutor
from mnas.evaluate.executors.serial import SerialExecutor

EXECUTORS = ("serial", "pool", "ray")


def make_executor(
    name: str,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    address: str | None = None,
    retries: int = 1,
    latency_resource: str | None = None,
    device: str = "cpu",
    gpus_per_worker: float | None = None,
) -> Executor:
    """An executor by name: ``serial``, ``pool`` or ``ray``.

    Every executor takes the same arguments and ignores those it has no use for
    (``serial`` uses only ``threads_per_worker`` and ``device``; ``address`` is Ray's),
    except ``latency_resource``, which only Ray has. ``device`` (``cpu``, ``cuda``,
    ``cuda:N``, ``auto``) is resolved where the workers run and kept as the executor's
    ``device``; ``gpus_per_worker`` is the share of a GPU each task takes.

    Raises:
        ValueError: an unknown name, a bad value, ``latency_resource`` without Ray,
            ``ray`` without Ray installed, or ``cuda`` where the workers have no GPU.
    """
    if latency_resource and name != "ray":
        raise ValueError(
            f"executor.latency_resource={latency_resource!r} needs executor=ray (got {name!r})"
        )
    check_gpu_share(gpus_per_worker)
    if name == "serial":
        return SerialExecutor(threads_per_worker, device)
    if name == "pool":
        return PoolExecutor(
            workers, threads_per_worker, retries, device=device, gpus_per_worker=gpus_per_worker
        )
    if name == "ray":
        return RayExecutor(
            workers, threads_per_worker, address, retries, latency_resource, device, gpus_per_worker
        )
    raise ValueError(f"unknown executor {name!r}; known: {list(EXECUTORS)}")


__all__ = [
    "EXECUTORS",
    "Executor",
    "PoolExecutor",
    "RAY_INSTALL_HINT",
    "RayExecutor",
    "SerialExecutor",
    "TaskError",
    "TaskTimeout",
    "WorkerFailure",
    "check_gpu_share",
    "default_parallelism",
    "make_executor",
    "usable_cores",
]
