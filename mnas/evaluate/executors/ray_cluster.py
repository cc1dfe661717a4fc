"""The Ray executor: tasks on a Ray cluster or a local Ray instance, and the latency device."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mnas.evaluate.executors.base import TaskError, WorkerFailure, usable_cores

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'executor=ray needs Ray, an optional extra: pip install "mnas[ray]"'


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
                            on_result(k, WorkerFailure(reason, attempts[k], spent[k]))
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
