"""What the search loop gets back from an accuracy source: one :class:`EvalResult` each.

The search loop hands a batch of new architectures to an evaluator and gets back one
:class:`EvalResult` per architecture. A child that fails to build, export or train, or
whose loss diverges, comes back with ``status`` ``failed`` or ``diverged`` and a
``reason``; it never raises into the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mnas.space import Architecture

OK, DIVERGED, FAILED, TIMEOUT = "ok", "diverged", "failed", "timeout"


@dataclass(frozen=True)
class EvalResult:
    """What one child evaluation produced.

    Attributes:
        arch: the architecture.
        accuracy: top-1 in [0, 1] on the search split (NaN when failed).
        latency_ms: median latency (or MACs in millions for ``latency=macs``).
        latency: the full latency statistics as a dict (median, p10, p90, cv, runs, ...).
        params: parameter count.
        macs: multiply-accumulates of one image.
        status: ``ok``, ``diverged``, ``failed`` or ``timeout``.
        reason: why it diverged or failed ("" when ok).
        train_seconds: wall time of training + evaluation.
        latency_seconds: wall time of the latency measurement (export included).
        extra: source-specific numbers (e.g. the 200-epoch test accuracy of a table row).
    """

    arch: Architecture
    accuracy: float
    latency_ms: float
    latency: dict = field(default_factory=dict)
    params: int = 0
    macs: int = 0
    status: str = OK
    reason: str = ""
    train_seconds: float = 0.0
    latency_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Evaluator(Protocol):
    def evaluate(
        self, archs: Sequence[Architecture], on_result: Callable[[EvalResult], None]
    ) -> list[EvalResult]: ...

    def close(self) -> None: ...
