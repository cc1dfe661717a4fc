"""Accuracy sources behind one protocol, and the executors that run them.

- :mod:`mnas.evaluate.protocol`: :class:`EvalResult` and the :class:`Evaluator` protocol;
- :mod:`mnas.evaluate.trained`: children timed, then trained briefly (the proxy task);
- :mod:`mnas.evaluate.tabular`: accuracy and latency looked up in the NAS-Bench-201 table;
- :mod:`mnas.evaluate.executors`: serial, process-pool and Ray executors.

Must not know about: the search policy (controller, strategies, reward).
"""

from mnas.evaluate.protocol import DIVERGED, FAILED, OK, TIMEOUT, EvalResult, Evaluator

__all__ = ["DIVERGED", "FAILED", "OK", "TIMEOUT", "EvalResult", "Evaluator"]
