"""The search: controller and its updates, strategies, reward, Pareto fronts, the loop,
run records and TensorBoard output.

- :mod:`mnas.search.controller`: the NASNet-style LSTM controller;
- :mod:`mnas.search.ppo`: PPO (clipped surrogate) and REINFORCE updates;
- :mod:`mnas.search.strategies`: ppo, reinforce, random and evolution behind ask/tell;
- :mod:`mnas.search.reward`: the MnasNet objective;
- :mod:`mnas.search.pareto`: Pareto fronts and hypervolume;
- :mod:`mnas.search.loop`: :class:`Search`, the loop that coordinates them;
- :mod:`mnas.search.records`: ``results.jsonl`` rows (:class:`EvalRecord`), ``pareto.json``;
- :mod:`mnas.search.tensorboard`: scalars, the Pareto figure, HParams sessions.

Must not know about: how children are evaluated (it talks to an
:class:`mnas.evaluate.Evaluator`), torch models of children, data.
"""

from mnas.search.loop import Search, SearchSummary, StepReport
from mnas.search.records import (
    CHECKPOINT,
    PARETO,
    RESULTS,
    RUN_INFO,
    EvalRecord,
    front_of,
    load_results,
)
from mnas.search.strategies import STRATEGIES, Strategy, make_strategy

__all__ = [
    "CHECKPOINT",
    "PARETO",
    "RESULTS",
    "RUN_INFO",
    "STRATEGIES",
    "EvalRecord",
    "Search",
    "SearchSummary",
    "StepReport",
    "Strategy",
    "front_of",
    "load_results",
    "make_strategy",
]
