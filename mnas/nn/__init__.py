"""Turning block specs into ``nn.Module``s, and counting their parameters and MACs.

- :mod:`mnas.nn.layers`: the layers of the MnasNet space (torchvision building blocks);
- :mod:`mnas.nn.builder`: :func:`build_model`, the MobileNetV2 / MnasNet skeleton;
- :mod:`mnas.nn.stats`: parameters and multiply-accumulates.

Must not know about: the search, the controller, data, latency.
"""

from mnas.nn.builder import HEAD_CHS, STEM_CHS, Net, build_model, make_layer
from mnas.nn.stats import ModelStats, count_macs, count_params, model_stats

__all__ = [
    "HEAD_CHS",
    "STEM_CHS",
    "ModelStats",
    "Net",
    "build_model",
    "count_macs",
    "count_params",
    "make_layer",
    "model_stats",
]
