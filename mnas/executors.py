"""Executors run a function over a batch of tasks: serially, in a process pool, or on Ray.

Every executor has ``map(fn, tasks, on_result)``: it calls ``on_result(k, fn(tasks[k]))``
in the coordinating process as each task finishes (in any order) and returns when all
have, plus ``close()``. It knows nothing of the search policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Executor(Protocol):
    name: str

    def map(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], on_result: Callable[[int, Any], None]
    ) -> None: ...

    def close(self) -> None: ...


class SerialExecutor:
    """One task after another, in this process."""

    name = "serial"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def map(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any], on_result: Callable[[int, Any], None]
    ) -> None:
        for k, task in enumerate(tasks):
            on_result(k, fn(task))

    def close(self) -> None:
        pass


def make_executor(name: str, **kwargs) -> Executor:
    """An executor by name (``serial``)."""
    if name == "serial":
        return SerialExecutor(**{k: v for k, v in kwargs.items() if k == "threads"})
    raise ValueError(f"unknown executor {name!r}; known: ['serial']")
