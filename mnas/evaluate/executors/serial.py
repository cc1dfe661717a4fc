"""The serial executor: one task after another, in this process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mnas.training.device import resolve_device


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
