"""The serial executor: one task after another, in this process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from mnas.evaluate.executors.base import TaskTimeout, TimeLimit, alarm, check_timeout
from mnas.training.device import resolve_device

log = logging.getLogger(__name__)


class SerialExecutor:
    """One task after another, in this process.

    Args:
        threads_per_worker: torch threads while tasks run (restored afterwards);
            ``None`` keeps the process's setting.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; resolved for this process into
            :attr:`device`, where the tasks train.

    Raises:
        ValueError: a CUDA device is asked for and there is none.
    """

    name = "serial"

    def __init__(self, threads_per_worker: int | None = None, device: str = "cpu") -> None:
        self.threads = threads_per_worker
        self.device = resolve_device(device)

    def map(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        on_result: Callable[[int, Any], None],
        timeout_s: float | None = None,
    ) -> None:
        """``timeout_s``: an alarm stops a task still running then (:func:`alarm`)."""
        import torch

        check_timeout(timeout_s)
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            for k, task in enumerate(tasks):
                start = time.perf_counter()
                try:
                    with alarm(timeout_s):
                        result = fn(task)
                except TimeLimit:
                    log.warning("task %d stopped at its %g s time limit", k, timeout_s)
                    result = TaskTimeout(timeout_s, time.perf_counter() - start)
                on_result(k, result)
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        pass
