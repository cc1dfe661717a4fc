"""Executors run a function over a batch of tasks: serially, in a process pool, or on Ray.

Every executor has ``map(fn, tasks, on_result)``: it calls ``on_result(k, fn(tasks[k]))``
in the coordinating process as each task finishes (in any order) and returns when all
have, plus ``close()``. It knows nothing of the search policy.

``fn`` must be a module-level function and the tasks picklable (they cross processes).
An exception raised *by* ``fn`` is a bug and propagates out of ``map`` in every executor.
A worker *process* that dies under a task (killed, out of memory, a crash in native code)
is different: the task is retried up to ``retries`` times on a fresh worker, and then
reported through ``on_result`` as a :class:`mnas.child.TrainOutcome` with status
``failed`` and a ``worker crashed: ...`` reason, so that the search goes on.

Latency is not measured here: the evaluator times a whole batch in the coordinator
before it hands the training tasks to an executor, so timing never overlaps training
(see ``docs/distributed.md``).
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any, Protocol

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'executor=ray needs Ray, an optional extra: pip install "mnas[ray]"'


class Executor(Protocol):
    name: str

    def map(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], on_result: Callable[[int, Any], None]
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


def crashed_outcome(reason: str, attempts: int, seconds: float):
    """The record of a task whose worker died on every attempt."""
    from mnas.child import FAILED, TrainOutcome

    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    return TrainOutcome(math.nan, 0, 0, FAILED, f"worker crashed: {reason} ({tries})", seconds)


class TaskError(RuntimeError):
    """``fn`` raised inside a worker; the message carries the worker's traceback."""


class SerialExecutor:
    """One task after another, in this process.

    Args:
        threads_per_worker: torch threads while tasks run (restored afterwards);
            ``None`` keeps the process's setting.
    """

    name = "serial"

    def __init__(self, threads_per_worker: int | None = None) -> None:
        self.threads = threads_per_worker

    def map(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], on_result: Callable[[int, Any], None]
    ) -> None:
        import torch

        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            for k, task in enumerate(tasks):
                on_result(k, fn(task))
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        pass


def _worker_main(conn, threads: int) -> None:
    """A pool worker: receive ``(fn, task)``, send back ``(True, result)`` or
    ``(False, traceback)``; ``None`` or a closed pipe ends it."""
    # Ctrl-C reaches the whole process group; the coordinator decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, task = msg
        try:
            reply = (True, fn(task))
        except Exception:
            reply = (False, traceback.format_exc())
        try:
            conn.send(reply)
        except Exception:  # an unpicklable result is the function's bug: report it
            conn.send((False, traceback.format_exc()))


PRELOAD = ["torch", "mnas.child", "mnas.builder", "mnas.data", "mnas.train"]


class _Worker:
    def __init__(self, ctx, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, threads), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.started = 0.0

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.is_alive() and self.task is None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class PoolExecutor:
    """Worker processes on this machine, each training one child at a time.

    Workers are started on first use and kept for the whole search, so each loads the
    dataset once. They come from a ``forkserver`` that has imported torch and mnas (start
    and restart in milliseconds instead of seconds of ``spawn``; no torch thread pool is
    ever forked), or from ``spawn`` where the platform has no fork server. A worker that
    dies is replaced and only its own task is retried; the others keep running. On any
    exception in the coordinator (Ctrl-C included) the busy workers are stopped before
    ``map`` re-raises, so no stale result survives into the next batch.

    Args:
        workers: worker processes (default: one per usable core).
        threads_per_worker: torch threads in each worker (default: cores // workers).
            A ``TrainConfig.threads`` set in the task wins inside training.
        retries: re-runs of a task whose worker died, before it is recorded as failed.
        start_method: ``forkserver`` (default where available) or ``spawn``. ``fork`` is
            refused: forking a process whose torch has started its thread pools can deadlock.
    """

    name = "pool"

    def __init__(
        self,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        retries: int = 1,
        start_method: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(f"start_method={start_method!r}; allowed: spawn, forkserver")
        self.workers, self.threads = default_parallelism(workers, threads_per_worker)
        self.retries = retries
        self.start_method = start_method
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # The fork server imports these once; every worker (and every replacement of a
            # dead one) is then forked from it with torch loaded but no thread pool started.
            self._ctx.set_forkserver_preload(PRELOAD)
        self._pool: list[_Worker] = []

    def _fill(self, n: int) -> None:
        while len(self._pool) < n:
            self._pool.append(_Worker(self._ctx, self.threads))
        log.debug("pool: %d workers x %d threads", len(self._pool), self.threads)

    def map(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], on_result: Callable[[int, Any], None]
    ) -> None:
        if not tasks:
            return
        self._fill(min(self.workers, len(tasks)))
        pending = deque(range(len(tasks)))
        attempts = [0] * len(tasks)
        spent = [0.0] * len(tasks)
        try:
            while pending or any(w.task is not None for w in self._pool):
                for w in self._pool:
                    if w.task is None and pending and not w.process.is_alive():
                        self._replace(w)  # died while idle: no task to charge
                for w in self._pool:
                    if w.task is None and pending:
                        w.task = pending.popleft()
                        w.started = time.perf_counter()
                        try:
                            w.conn.send((fn, tasks[w.task]))
                        except OSError:  # died while idle: its sentinel reports it below
                            pass
                busy = [w for w in self._pool if w.task is not None]
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for w in busy:
                    if w.conn not in ready and w.process.sentinel not in ready:
                        continue
                    k = w.task
                    try:
                        ok, payload = w.conn.recv()
                    except (EOFError, OSError):
                        self._crashed(w, k, attempts, spent, pending, on_result)
                        continue
                    w.task = None
                    if not ok:
                        raise TaskError(f"task {k} raised in a pool worker:\n{payload}")
                    on_result(k, payload)
        except BaseException:
            self._stop_busy()
            raise

    def _crashed(self, w: _Worker, k: int, attempts, spent, pending, on_result) -> None:
        w.process.join(5.0)
        reason = _exit_reason(w.process.exitcode)
        attempts[k] += 1
        spent[k] += time.perf_counter() - w.started
        w.task = None
        self._replace(w)
        if attempts[k] <= self.retries:
            log.warning("pool worker died (%s) under task %d; retrying it", reason, k)
            pending.appendleft(k)
        else:
            log.warning("pool worker died (%s) under task %d; recording it as failed", reason, k)
            on_result(k, crashed_outcome(reason, attempts[k], spent[k]))

    def _replace(self, w: _Worker) -> None:
        w.stop()
        self._pool[self._pool.index(w)] = _Worker(self._ctx, self.threads)

    def _stop_busy(self) -> None:
        for w in [w for w in self._pool if w.task is not None]:
            w.stop(timeout=2.0)
            self._pool.remove(w)

    def close(self) -> None:
        for w in self._pool:
            w.stop()
        self._pool = []


def _ray_run(fn: Callable[[Any], Any], task: Any, threads: int) -> Any:
    """Body of a Ray task: the worker process is reused, so set its threads every time."""
    import torch

    torch.set_num_threads(threads)
    return fn(task)


class _DeviceWorker:
    """The Ray actor on the latency device: one process for the whole search."""

    def call(self, fn: Callable[[Any], Any], task: Any) -> Any:
        return fn(task)


class RayExecutor:
    """Tasks on a Ray cluster (or a local Ray instance).

    Args:
        workers: most tasks in flight at once (default: the cluster's CPUs divided by
            ``threads_per_worker``, as Ray reports them when the executor starts).
        threads_per_worker: CPUs each task declares (``num_cpus``) and torch threads it
            uses (default 1).
        address: ``auto`` (or ``ray://...``, ``host:port``) joins a running cluster, e.g.
            one started with ``ray start --head``; ``None`` starts a local instance on this
            machine's usable cores and shuts it down on ``close``.
        retries: re-runs of a task whose worker or node died, before it is recorded as
            failed. Ray's own task retries are off so that the count means the same as in
            the pool.
        latency_resource: a Ray custom resource that marks the machine latency is measured
            on (e.g. ``latency_device``, given to ``ray start --resources``): children are
            then timed there, by :meth:`on_latency_device`, instead of on the coordinator.
            A local instance started by the executor offers one unit of it itself.

    Raises:
        ValueError: Ray is not installed (the message says how to install it), or no node
            of the cluster offers ``latency_resource``.
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        address: str | None = None,
        retries: int = 1,
        latency_resource: str | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as e:
            raise ValueError(RAY_INSTALL_HINT) from e
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        self._ray = ray
        self.threads = threads_per_worker or 1
        if self.threads < 1 or (workers is not None and workers < 1):
            raise ValueError(
                f"workers={workers} and threads_per_worker={self.threads} must be >= 1"
            )
        self.retries = retries
        self._owns = not ray.is_initialized()
        if self._owns:
            if address:
                ray.init(address=address, include_dashboard=False)
            else:
                ray.init(
                    num_cpus=usable_cores(),
                    resources={latency_resource: 1} if latency_resource else None,
                    include_dashboard=False,
                )
        self.latency_resource = latency_resource
        self._device = None
        if latency_resource and ray.cluster_resources().get(latency_resource, 0) < 1:
            self.close()
            raise ValueError(
                f"executor.latency_resource={latency_resource!r}: no node of the Ray cluster "
                "offers it; start the timing machine with `ray start --address=<head> "
                f"--num-cpus=0 --resources='{{\"{latency_resource}\": 1}}'`"
            )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, cpus // self.threads)
        self._remote = ray.remote(_ray_run).options(num_cpus=self.threads, max_retries=0)
        log.info(
            "ray: %d CPUs in the cluster, up to %d tasks x %d threads",
            cpus,
            self.workers,
            self.threads,
        )

    def map(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], on_result: Callable[[int, Any], None]
    ) -> None:
        ray = self._ray
        pending = deque(range(len(tasks)))
        attempts = [0] * len(tasks)
        spent = [0.0] * len(tasks)
        running: dict[Any, tuple[int, float]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    k = pending.popleft()
                    running[self._remote.remote(fn, tasks[k], self.threads)] = (
                        k,
                        time.perf_counter(),
                    )
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    k, started = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        raise TaskError(f"task {k} raised in a Ray worker:\n{e}") from e
                    except ray.exceptions.RayError as e:
                        attempts[k] += 1
                        spent[k] += time.perf_counter() - started
                        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                        if attempts[k] <= self.retries:
                            log.warning("ray worker died under task %d (%s); retrying", k, reason)
                            pending.appendleft(k)
                        else:
                            log.warning("ray worker died under task %d (%s); failed", k, reason)
                            on_result(k, crashed_outcome(reason, attempts[k], spent[k]))
                        continue
                    on_result(k, result)
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise

    def on_latency_device(self, fn: Callable[[Any], Any], task: Any) -> Any:
        """``fn(task)`` on the node that offers ``latency_resource``, in one long-lived Ray
        actor (made on first use, declaring no CPUs, so a timing node started with
        ``--num-cpus=0`` accepts it and trains nothing; it holds the resource until
        :meth:`close`, so nothing else times there meanwhile). Whatever ``fn`` keeps in its
        process survives from one call to the next. Returns the result.

        Raises:
            ValueError: this executor has no ``latency_resource``.
            TaskError: the call raised, or the actor's process or node died (it is
                restarted up to ``retries`` times first).
        """
        if not self.latency_resource:
            raise ValueError("this Ray executor has no latency_resource")
        ray = self._ray
        if self._device is None:
            self._device = (
                ray.remote(_DeviceWorker)
                .options(
                    num_cpus=0,
                    resources={self.latency_resource: 1},
                    max_restarts=self.retries,
                    max_task_retries=self.retries,
                )
                .remote()
            )
        ref = self._device.call.remote(fn, task)
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as e:
            raise TaskError(f"latency task on {self.latency_resource!r} failed:\n{e}") from e
        except BaseException:
            ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        if self._device is not None and self._ray.is_initialized():
            self._ray.kill(self._device)  # frees the latency device for other drivers
        self._device = None
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False


def make_executor(
    name: str,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    address: str | None = None,
    retries: int = 1,
    latency_resource: str | None = None,
) -> Executor:
    """An executor by name: ``serial``, ``pool`` or ``ray``.

    Every executor takes the same arguments and ignores those it has no use for
    (``serial`` uses only ``threads_per_worker``; ``address`` is Ray's), except
    ``latency_resource``, which only Ray has.

    Raises:
        ValueError: an unknown name, a bad value, ``latency_resource`` without Ray, or
            ``ray`` without Ray installed.
    """
    if latency_resource and name != "ray":
        raise ValueError(
            f"executor.latency_resource={latency_resource!r} needs executor=ray (got {name!r})"
        )
    if name == "serial":
        return SerialExecutor(threads_per_worker)
    if name == "pool":
        return PoolExecutor(workers, threads_per_worker, retries)
    if name == "ray":
        return RayExecutor(workers, threads_per_worker, address, retries, latency_resource)
    raise ValueError(f"unknown executor {name!r}; known: ['serial', 'pool', 'ray']")


__all__ = [
    "Executor",
    "PoolExecutor",
    "RAY_INSTALL_HINT",
    "RayExecutor",
    "SerialExecutor",
    "TaskError",
    "crashed_outcome",
    "default_parallelism",
    "make_executor",
    "usable_cores",
]
