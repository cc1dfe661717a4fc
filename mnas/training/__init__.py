"""Proxy and full training, evaluation, BN re-estimation, augmentation, divergence detection.

- :mod:`mnas.training.trainer`: :class:`TrainConfig`, :func:`train_and_evaluate`,
  :func:`fit_model`, :func:`evaluate`, optimizers and the learning-rate schedule;
- :mod:`mnas.training.bn`: :func:`recalibrate_bn`;
- :mod:`mnas.training.augment`: :func:`augment_batch`;
- :mod:`mnas.training.batches`: seeded index streams and the on-the-fly normaliser.

Must not know about: the controller, the search, latency.
"""

from mnas.training.augment import augment_batch
from mnas.training.batches import Normalizer
from mnas.training.bn import recalibrate_bn
from mnas.training.trainer import (
    OPTIMIZERS,
    FitResult,
    TrainConfig,
    TrainResult,
    evaluate,
    fit_model,
    lr_at,
    make_optimizer,
    train_and_evaluate,
)

__all__ = [
    "OPTIMIZERS",
    "FitResult",
    "Normalizer",
    "TrainConfig",
    "TrainResult",
    "augment_batch",
    "evaluate",
    "fit_model",
    "lr_at",
    "make_optimizer",
    "recalibrate_bn",
    "train_and_evaluate",
]
