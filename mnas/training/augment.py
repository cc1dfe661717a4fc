"""Augmentation on uint8 image tensors: random crop with zero padding and horizontal flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def augment_batch(x: Tensor, generator: torch.Generator, hflip: bool, pad: int = 4) -> Tensor:
    """Random crop with ``pad`` pixels of zero padding, and optionally a random horizontal flip.

    Args:
        x: uint8 (or float) images ``(B, C, H, W)``.
        generator: source of the random offsets and flips.
        hflip: whether to flip half of the images.
        pad: padding on each side before cropping back to ``H x W``.

    Returns:
        A new tensor of the same shape and dtype.
    """
    b, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    # Drawn on the host (``generator`` is a CPU generator): the same crops and flips whatever
    # device the images are on.
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    if hflip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
        cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chans = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chans, rows, cols]
