"""Datasets as in-memory uint8 tensors with deterministic train / validation / test splits.

- :mod:`mnas.data.datasets`: :func:`load_dataset` (digits built in; Fashion-MNIST, CIFAR-10,
  ImageFolder), :class:`DatasetSplits`, stratified splits, channel statistics;
- :mod:`mnas.data.images`: decoding image files (PIL) and resizing;
- :mod:`mnas.data.spec`: :class:`DataSpec`, a hashable description loaded once per process.

Must not know about: models, training, the search.
"""

from mnas.data.datasets import (
    DATA_ENV,
    DATASETS,
    DatasetSplits,
    channel_stats,
    default_hflip,
    load_dataset,
    stratified_permutation,
)
from mnas.data.spec import DataSpec, get_dataset

__all__ = [
    "DATASETS",
    "DATA_ENV",
    "DataSpec",
    "DatasetSplits",
    "channel_stats",
    "default_hflip",
    "get_dataset",
    "load_dataset",
    "stratified_permutation",
]
