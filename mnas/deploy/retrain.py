"""Retraining a chosen architecture from scratch, then measuring and shipping it.

A retrain trains the network on the training split, scores its top-1 accuracy on the held-out
TEST split (never seen by the search), and hands it to :func:`mnas.deploy.artifacts.finalize`
for its latency, size and files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict

import torch

from mnas.data import DatasetSplits
from mnas.deploy.artifacts import finalize
from mnas.deploy.choose import ArchChoice
from mnas.deploy.onnx_check import ExportSettings
from mnas.latency import LatencySettings
from mnas.nn import build_model
from mnas.training import TrainConfig, train_and_evaluate


def retrain(
    choice: ArchChoice,
    data: DatasetSplits,
    config: TrainConfig,
    build_kwargs: dict,
    out_dir: str | os.PathLike,
    latency: LatencySettings,
    export: ExportSettings = ExportSettings(),
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train ``choice`` from scratch on ``data``'s training split, evaluate it on the TEST
    split, measure it and write its files (see :func:`finalize`).

    Args:
        choice: the architecture and its origin.
        data: dataset splits (the test split is the held-out one).
        config: training budget and hyperparameters.
        build_kwargs: ``width_mult``, ``stem_stride``, ``dropout``, ``bn_momentum`` for
            :func:`mnas.nn.build_model` (classes and channels come from ``data``).
        out_dir: where ``metrics.json``, ``model.pt`` and ``model.onnx`` go.
        latency: timing settings.
        export: the ONNX file and its check (see :func:`finalize`).
        device: training device, resolved (``cpu``, ``cuda``, ``cuda:N``; see
            :func:`mnas.training.device.resolve_device`); export and timing are on the CPU.
        progress: called after every step as ``progress(step, total_steps, loss)``.

    Returns:
        The metrics written to ``metrics.json``.
    """
    kwargs = {**build_kwargs, "num_classes": data.num_classes, "in_channels": data.in_channels}
    torch.manual_seed(config.seed)
    model = build_model(choice.arch, **kwargs)
    result = train_and_evaluate(
        model, data, config, eval_split="test", progress=progress, device=device
    )
    metrics = {
        "label": choice.label,
        "source": choice.source,
        "run_dir": choice.run_dir,
        "hash": choice.arch.hash,
        "space": choice.arch.space,
        "blocks": list(choice.arch.blocks),
        "search_accuracy": choice.search_accuracy,
        "search_latency_ms": choice.search_latency_ms,
        "search_latency_scale": choice.search_latency_scale,
        "search_latency_nominal_ms": choice.search_latency_nominal_ms,
        "test_accuracy": result.accuracy,
        "test_loss": result.eval_loss,
        "train_loss": result.loss,
        "train_steps": result.steps,
        "train_seconds": result.seconds,
        "diverged": result.diverged,
        "device": result.device,
        "precision": result.precision,
        "dataset": data.name,
        "image_size": data.image_size,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        **kwargs,
        "trainer": asdict(config),
    }
    checkpoint = {"arch": choice.arch.to_dict(), "build_kwargs": kwargs}
    return finalize(
        model,
        data,
        out_dir,
        f"{choice.label} ({choice.arch.hash})",
        checkpoint,
        metrics,
        latency,
        export,
    )
