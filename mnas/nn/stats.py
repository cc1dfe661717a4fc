"""Size of a network: parameters and multiply-accumulates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelStats:
    """Size of a network: parameters and multiply-accumulates for one image."""

    params: int
    macs: int


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass at batch 1, from ``torch.utils.flop_counter``
    (FLOPs / 2; convolutions and matrix products)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, input_size, input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def model_stats(model: nn.Module, input_size: int, in_channels: int = 3) -> ModelStats:
    return ModelStats(count_params(model), count_macs(model, input_size, in_channels))
