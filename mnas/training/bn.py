"""Re-estimating BatchNorm running statistics of trained weights.

Evaluation runs in ``eval()`` mode on BN's running statistics. With a slow BN momentum and a
short budget those are still mostly their initial values (torchvision's MNASNet uses 0.0003),
so the statistics of the final weights are re-estimated on a few training batches first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from mnas.training.batches import Normalizer, device_of, index_stream
from mnas.training.device import autocast, autocast_dtype, to_device


def recalibrate_bn(
    model: nn.Module,
    x: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    num_batches: int = 8,
    generator: torch.Generator | None = None,
    amp: str = "auto",
) -> int:
    """Re-estimate BatchNorm running statistics of the current weights.

    Resets every BN layer's running mean and variance and replaces them with the plain
    average over ``num_batches`` random training batches (BN's cumulative mode), run in train
    mode without gradients (:func:`torch.optim.swa_utils.update_bn`). Momentum and the
    model's train/eval mode are restored afterwards. Dropout is active during those passes;
    in the networks built here it only comes after the last BN layer, so it cannot change
    the statistics.

    Args:
        model: the network.
        x: uint8 training images ``(N, C, H, W)``.
        mean: per-channel mean in 0-1 units.
        std: per-channel standard deviation in 0-1 units.
        batch_size: images per batch (use the training batch size: BN statistics depend on it).
        num_batches: how many batches to average.
        generator: source of the random batches (default: a fresh one seeded with 0).
        amp: autocast of the forward passes, as in training (see
            :func:`mnas.training.device.autocast_dtype`): the statistics are those of the
            activations evaluation will see.

    Returns:
        The number of BatchNorm layers recalibrated.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    bns = [m for m in bns if m.track_running_stats]
    if not bns:
        return 0
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    batch_size = min(batch_size, len(x))
    device = device_of(model)
    dtype = autocast_dtype(amp, device)
    norm = Normalizer(mean, std, device)
    steps = min(num_batches, max(1, len(x) // batch_size))
    batches = (
        norm(to_device(x[idx], device))
        for idx in index_stream(len(x), batch_size, steps, generator, x.device)
    )
    with autocast(device, dtype):
        update_bn(batches, model)
    return len(bns)
