"""From a search to shippable networks: choose, retrain, export, check, compare.

- :mod:`mnas.deploy.choose`: architectures named by a run's front, a hash, a reference
  name or block strings (:func:`resolve_choices`);
- :mod:`mnas.deploy.retrain`: training a choice from scratch and scoring it on the test split;
- :mod:`mnas.deploy.artifacts`: measuring a trained network and writing ``model.pt``,
  ``model.onnx`` and ``metrics.json`` (:func:`finalize`, :func:`load_checkpoint`);
- :mod:`mnas.deploy.onnx_check`: the ONNX file compared with PyTorch on real images;
- :mod:`mnas.deploy.report`: the comparison table, figure and TensorBoard summary;
- :mod:`mnas.deploy.progress`: per-epoch progress bars for scripts.

Must not know about: the controller, strategies, the search loop.
"""

from mnas.deploy.artifacts import finalize, load_checkpoint
from mnas.deploy.choose import ARCH_FORMS, ArchChoice, front_choices, read_run_json, resolve_choices
from mnas.deploy.onnx_check import ExportMismatchError, ExportSettings, OnnxCheck, check_onnx
from mnas.deploy.progress import EpochProgress
from mnas.deploy.report import (
    ComparisonBoard,
    comparison_figure,
    comparison_table,
    write_comparison,
)
from mnas.deploy.retrain import retrain

__all__ = [
    "ARCH_FORMS",
    "ArchChoice",
    "ComparisonBoard",
    "EpochProgress",
    "ExportMismatchError",
    "ExportSettings",
    "OnnxCheck",
    "check_onnx",
    "comparison_figure",
    "comparison_table",
    "finalize",
    "front_choices",
    "load_checkpoint",
    "read_run_json",
    "resolve_choices",
    "retrain",
    "write_comparison",
]
