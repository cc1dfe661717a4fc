"""The Ray executor: tasks on a Ray cluster or a local Ray instance, and the latency device."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mnas.evaluate.executors.base import (
    TaskError,
    TaskTimeout,
    TimeLimit,
    WorkerFailure,
    alarm,
    check_gpu_share,
    check_timeout,
    usable_cores,
    workers_per_gpus,
)
from mnas.training.device import check_device, resolve_device

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'executor=ray needs Ray, an optional extra: pip install "mnas[ray]"'


def _ray_run(
    fn: Callable[[Any], Any], task: Any, threads: int, timeout_s: float | None = None
) -> Any:
    """Body of a Ray task: the worker process is reused, so set its threads every time.
    The time limit is enforced here, counted from the task's start (a fresh worker's
    start-up does not count: under load it can take longer than a child), by an alarm."""
    import torch

    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        with alarm(timeout_s):
            return fn(task)
    except TimeLimit:
        return TaskTimeout(timeout_s, time.perf_counter() - start)


def ray_backstop(timeout_s: float) -> float:
    """Seconds after submission at which the coordinator cancels a Ray task (killing its
    worker): for a task stuck inside native code, which the alarm cannot interrupt. The
    margin covers queueing and a fresh worker's start-up."""
    return 2 * timeout_s + 300


class _TrainWorker:
    """A Ray actor that trains children on its share of one GPU for the whole search.

    Ray sets an actor's ``CUDA_VISIBLE_DEVICES`` once, when it starts, so the process keeps
    its GPU, its CUDA context and the data it uploaded from one child to the next. (Ray's
    GPU *tasks* start a fresh process each, since a reused worker cannot move its CUDA
    context to the GPU its next task was given.)
    """

    def call(
        self, fn: Callable[[Any], Any], task: Any, threads: int, timeout_s: float | None = None
    ) -> Any:
        return _ray_run(fn, task, threads, timeout_s)


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
        device: ``cpu``, ``cuda`` or ``auto``, resolved against the cluster's ``GPU``
            resource (the coordinator needs no GPU). On ``cuda`` children run in long-lived
            actors (:class:`_TrainWorker`), each declaring ``num_gpus=gpus_per_worker`` and
            ``num_cpus=threads_per_worker``; ``workers`` defaults to, and is capped at, how
            many of them the cluster holds at once.
        gpus_per_worker: share of a GPU per child, in (0, 1] (default 1): 0.25 trains four
            children on each GPU at once. Ignored on the CPU.

    Raises:
        ValueError: Ray is not installed (the message says how to install it), no node
            of the cluster offers ``latency_resource``, ``cuda`` where the cluster has no
            GPU, or ``cuda:N`` (Ray chooses each child's GPU).
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        address: str | None = None,
        retries: int = 1,
        latency_resource: str | None = None,
        device: str = "cpu",
        gpus_per_worker: float | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as e:
            raise ValueError(RAY_INSTALL_HINT) from e
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        if check_device(device).startswith("cuda:"):
            raise ValueError(
                f"device={device} with executor=ray: Ray gives each child its GPU; use device=cuda"
            )
        share = check_gpu_share(gpus_per_worker)
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
        self._actors: list[Any] = []
        if latency_resource and ray.cluster_resources().get(latency_resource, 0) < 1:
            self.close()
            raise ValueError(
                f"executor.latency_resource={latency_resource!r}: no node of the Ray cluster "
                "offers it; start the timing machine with `ray start --address=<head> "
                f"--num-cpus=0 --resources='{{\"{latency_resource}\": 1}}'`"
            )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = float(ray.cluster_resources().get("GPU", 0))
        try:
            self.device = resolve_device(
                device,
                cuda_devices=math.floor(gpus),
                where=f"the Ray cluster offers {gpus:g} GPUs; Ray finds the GPUs of the "
                "machines that join it, or give `ray start --num-gpus=N`",
            )
        except ValueError:
            self.close()
            raise
        self.gpu_share = share if self.device == "cuda" else 0.0
        if self.gpu_share:
            # An actor that cannot be placed would hold its child forever: never ask for more
            # than the cluster holds at once.
            capacity = min(workers_per_gpus(gpus, share), max(1, cpus // self.threads))
            if workers is not None and workers > capacity:
                log.warning(
                    "ray: executor.workers=%d, but the cluster holds %d children of %g GPU "
                    "and %d CPUs each; using %d",
                    workers,
                    capacity,
                    share,
                    self.threads,
                    capacity,
                )
            self.workers = min(workers or capacity, capacity)
            self._actor = ray.remote(_TrainWorker).options(
                num_cpus=self.threads, num_gpus=share, max_restarts=0, max_task_retries=0
            )
        else:
            self.workers = workers or max(1, cpus // self.threads)
        self._remote = ray.remote(_ray_run).options(num_cpus=self.threads, max_retries=0)
        log.info(
            "ray: %d CPUs and %g GPUs in the cluster, up to %d children x %d threads%s",
            cpus,
            gpus,
            self.workers,
            self.threads,
            f" x {share:g} GPU" if self.gpu_share else "",
        )

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        on_result: Callable[[int, Any], None],
        timeout_s: float | None = None,
    ) -> None:
        check_timeout(timeout_s)
        if self.gpu_share:
            self._map_on_actors(fn, tasks, on_result, timeout_s)
            return
        ray = self._ray
        pending = deque(range(len(tasks)))
        attempts = [0] * len(tasks)
        spent = [0.0] * len(tasks)
        running: dict[Any, tuple[int, float]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:
                    k = pending.popleft()
                    ref = self._remote.remote(fn, tasks[k], self.threads, timeout_s)
                    running[ref] = (k, time.perf_counter())
                done, _ = ray.wait(
                    list(running), num_returns=1, timeout=self._wait_s(running, timeout_s)
                )
                for ref in self._overdue(running, done, timeout_s):
                    k, started = running.pop(ref)
                    log.warning("ray: task %d stuck past its time limit; cancelled", k)
                    ray.cancel(ref, force=True)
                    on_result(k, TaskTimeout(timeout_s, time.perf_counter() - started))
                for ref in done:
                    k, started = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        raise TaskError(f"task {k} raised in a Ray worker:\n{e}") from e
                    except ray.exceptions.RayError as e:
                        self._died(e, k, started, attempts, spent, pending, on_result)
                        continue
                    on_result(k, result)
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise

    @staticmethod
    def _wait_s(running: dict, timeout_s: float | None) -> float | None:
        """How long ``ray.wait`` may block before the first task in flight is overdue."""
        if timeout_s is None or not running:
            return None
        first_due = min(v[1] for v in running.values()) + ray_backstop(timeout_s)
        return max(0.0, first_due - time.perf_counter())

    @staticmethod
    def _overdue(running: dict, done: list, timeout_s: float | None) -> list:
        """Tasks in flight past :func:`ray_backstop` (stuck where the alarm cannot reach)."""
        if timeout_s is None:
            return []
        now = time.perf_counter()
        return [
            ref
            for ref, v in running.items()
            if ref not in done and now - v[1] >= ray_backstop(timeout_s)
        ]

    def _map_on_actors(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        on_result: Callable[[int, Any], None],
        timeout_s: float | None = None,
    ) -> None:
        """:meth:`map` on the GPU actors: each trains one child at a time."""
        ray = self._ray
        while len(self._actors) < min(self.workers, len(tasks)):
            self._actors.append(self._actor.remote())
        idle = list(self._actors)
        pending = deque(range(len(tasks)))
        attempts = [0] * len(tasks)
        spent = [0.0] * len(tasks)
        running: dict[Any, tuple[int, float, Any]] = {}
        try:
            while pending or running:
                while pending and idle:
                    actor, k = idle.pop(), pending.popleft()
                    ref = actor.call.remote(fn, tasks[k], self.threads, timeout_s)
                    running[ref] = (k, time.perf_counter(), actor)
                done, _ = ray.wait(
                    list(running), num_returns=1, timeout=self._wait_s(running, timeout_s)
                )
                for ref in self._overdue(running, done, timeout_s):
                    k, started, actor = running.pop(ref)
                    log.warning("ray: task %d stuck past its time limit; actor replaced", k)
                    idle.append(self._replace_actor(actor))
                    on_result(k, TaskTimeout(timeout_s, time.perf_counter() - started))
                for ref in done:
                    k, started, actor = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        raise TaskError(f"task {k} raised in a Ray GPU worker:\n{e}") from e
                    except ray.exceptions.RayError as e:
                        idle.append(self._replace_actor(actor))
                        self._died(e, k, started, attempts, spent, pending, on_result)
                        continue
                    idle.append(actor)
                    on_result(k, result)
        except BaseException:
            # Actor tasks cannot be cancelled by force: stop the busy actors instead.
            for _, _, actor in running.values():
                ray.kill(actor)
                self._actors.remove(actor)
            raise

    def _replace_actor(self, actor: Any) -> Any:
        self._ray.kill(actor)
        fresh = self._actor.remote()
        self._actors[self._actors.index(actor)] = fresh
        return fresh

    def _died(self, error, k: int, started: float, attempts, spent, pending, on_result) -> None:
        """Retry task ``k`` whose worker (task process, actor or node) died, or record it
        as failed after ``retries`` attempts."""
        attempts[k] += 1
        spent[k] += time.perf_counter() - started
        reason = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        if attempts[k] <= self.retries:
            log.warning("ray worker died under task %d (%s); retrying", k, reason)
            pending.appendleft(k)
        else:
            log.warning("ray worker died under task %d (%s); failed", k, reason)
            on_result(k, WorkerFailure(reason, attempts[k], spent[k]))

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
        if self._ray.is_initialized():
            # frees the latency device and the GPUs for other drivers
            for actor in [*self._actors, *([self._device] if self._device is not None else [])]:
                self._ray.kill(actor)
        self._actors = []
        self._device = None
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False
