"""The pool executor: worker processes on this machine, each training one task at a time."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

from mnas.evaluate.executors.base import (
    TaskError,
    TaskTimeout,
    WorkerFailure,
    check_gpu_share,
    check_timeout,
    default_parallelism,
    workers_per_gpus,
)
from mnas.training.device import resolve_device, visible_gpus

log = logging.getLogger(__name__)


STARTED = "started"


def _worker_main(conn, threads: int, gpu: str | None) -> None:
    """A pool worker: receive ``(fn, task)``, send :data:`STARTED` (a task's time limit
    counts from here, not from a worker still starting), then ``(True, result)`` or
    ``(False, traceback)``; ``None`` or a closed pipe ends it. With ``gpu`` the process sees
    that one GPU only, as ``cuda:0``."""
    # Ctrl-C reaches the whole process group; the coordinator decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:
        # Read by CUDA when this process first uses it; neither the fork server nor this
        # worker has touched CUDA yet.
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
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
        conn.send(STARTED)
        try:
            reply = (True, fn(task))
        except Exception:
            reply = (False, traceback.format_exc())
        try:
            conn.send(reply)
        except Exception:  # an unpicklable result is the function's bug: report it
            conn.send((False, traceback.format_exc()))


PRELOAD = ["torch", "mnas.evaluate.trained", "mnas.nn", "mnas.data", "mnas.training"]


class _Worker:
    def __init__(self, ctx, threads: int, gpu: str | None) -> None:
        self.gpu = gpu
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, threads, gpu), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.sent = 0.0  # when the task was sent
        self.started: float | None = None  # when the worker began it

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
    dataset once (and, on a GPU, makes its CUDA context and uploads the data once). They
    come from a ``forkserver`` that has imported torch and mnas (start and restart in
    milliseconds instead of seconds of ``spawn``; no torch thread pool and no CUDA context
    is ever forked), or from ``spawn`` where the platform has no fork server. A worker that
    dies is replaced and only its own task is retried; the others keep running. On any
    exception in the coordinator (Ctrl-C included) the busy workers are stopped before
    ``map`` re-raises, so no stale result survives into the next batch.

    On a GPU (``device`` resolving to ``cuda``), the workers are spread round robin over the
    ``G`` GPUs this process sees, each pinned to its GPU through ``CUDA_VISIBLE_DEVICES``
    set in the worker before CUDA starts, and their tasks train on ``cuda``
    (:attr:`device`): with ``workers = G / gpus_per_worker`` every GPU trains
    ``1 / gpus_per_worker`` children at once. ``cuda:N`` pins every worker to GPU ``N``.

    Args:
        workers: worker processes (default: one per usable core; on a GPU, the GPUs divided
            by ``gpus_per_worker``).
        threads_per_worker: torch threads in each worker (default: cores // workers).
            A ``TrainConfig.threads`` set in the task wins inside training.
        retries: re-runs of a task whose worker died, before it is recorded as failed.
        start_method: ``forkserver`` (default where available) or ``spawn``. ``fork`` is
            refused: forking a process whose torch has started its thread pools can deadlock.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (resolved on this machine).
        gpus_per_worker: share of a GPU per worker, in (0, 1] (default 1); ignored on the
            CPU.

    Raises:
        ValueError: a bad value, or a CUDA device asked for where there is none.
    """

    name = "pool"

    def __init__(
        self,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        retries: int = 1,
        start_method: str | None = None,
        device: str = "cpu",
        gpus_per_worker: float | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        share = check_gpu_share(gpus_per_worker)
        resolved = resolve_device(device)
        self.gpus: list[str] = []
        if resolved.startswith("cuda"):
            visible = visible_gpus()
            self.gpus = [visible[int(resolved[5:])]] if ":" in resolved else visible
            if workers is None:
                workers = workers_per_gpus(len(self.gpus), share)
            resolved = "cuda"  # each worker sees its one GPU as cuda:0
        self.device = resolved
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

    def _next_gpu(self) -> str | None:
        """The GPU with the fewest workers (the first of those): round robin, and a worker
        stopped by an interrupt is replaced on its own GPU."""
        if not self.gpus:
            return None
        return min(self.gpus, key=lambda g: sum(w.gpu == g for w in self._pool))

    def _fill(self, n: int) -> None:
        while len(self._pool) < n:
            self._pool.append(_Worker(self._ctx, self.threads, self._next_gpu()))
        log.debug(
            "pool: %d workers x %d threads%s",
            len(self._pool),
            self.threads,
            f" on GPUs {self.gpus}" if self.gpus else "",
        )

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        on_result: Callable[[int, Any], None],
        timeout_s: float | None = None,
    ) -> None:
        check_timeout(timeout_s)
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
                        w.started = None
                        w.sent = time.perf_counter()
                        try:
                            w.conn.send((fn, tasks[w.task]))
                        except OSError:  # died while idle: its sentinel reports it below
                            pass
                busy = [w for w in self._pool if w.task is not None]
                running = [w.started for w in busy if w.started is not None]
                wait_s = None
                if timeout_s is not None and running:
                    wait_s = max(0.0, min(running) + timeout_s - time.perf_counter())
                ready = set(
                    wait([w.conn for w in busy] + [w.process.sentinel for w in busy], wait_s)
                )
                for w in busy:
                    if w.conn not in ready and w.process.sentinel not in ready:
                        if (
                            timeout_s is not None
                            and w.started is not None
                            and time.perf_counter() - w.started >= timeout_s
                        ):
                            self._timed_out(w, timeout_s, on_result)
                        continue
                    k = w.task
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        self._crashed(w, k, attempts, spent, pending, on_result)
                        continue
                    if msg == STARTED:
                        w.started = time.perf_counter()
                        continue
                    ok, payload = msg
                    w.task = None
                    if not ok:
                        raise TaskError(f"task {k} raised in a pool worker:\n{payload}")
                    on_result(k, payload)
        except BaseException:
            self._stop_busy()
            raise

    def _timed_out(self, w: _Worker, limit_s: float, on_result) -> None:
        k, seconds = w.task, time.perf_counter() - w.started
        log.warning("pool: task %d over its %g s time limit; stopping its worker", k, limit_s)
        self._replace(w)  # a busy worker is terminated, not asked to finish
        on_result(k, TaskTimeout(limit_s, seconds))

    def _crashed(self, w: _Worker, k: int, attempts, spent, pending, on_result) -> None:
        w.process.join(5.0)
        reason = _exit_reason(w.process.exitcode)
        attempts[k] += 1
        spent[k] += time.perf_counter() - (w.started or w.sent)
        w.task = None
        self._replace(w)
        if attempts[k] <= self.retries:
            log.warning("pool worker died (%s) under task %d; retrying it", reason, k)
            pending.appendleft(k)
        else:
            log.warning("pool worker died (%s) under task %d; recording it as failed", reason, k)
            on_result(k, WorkerFailure(reason, attempts[k], spent[k]))

    def _replace(self, w: _Worker) -> None:
        w.stop()
        self._pool[self._pool.index(w)] = _Worker(self._ctx, self.threads, w.gpu)

    def _stop_busy(self) -> None:
        for w in [w for w in self._pool if w.task is not None]:
            w.stop(timeout=2.0)
            self._pool.remove(w)

    def close(self) -> None:
        for w in self._pool:
            w.stop()
        self._pool = []
