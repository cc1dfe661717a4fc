"""Batches of in-memory uint8 images: seeded index streams and on-the-fly normalisation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn


class Normalizer:
    """uint8 images to normalised float32: ``x * scale + shift`` per channel, one fused pass."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        std_t = torch.tensor(std, dtype=torch.float32, device=device)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
        if (std_t <= 0).any():
            raise ValueError(f"std={tuple(std)} must be > 0 in every channel")
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self.shift = (-mean_t / std_t).view(1, -1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x.float(), self.scale)


def index_stream(
    n: int, batch_size: int, steps: int, gen: torch.Generator, device: torch.device | None = None
) -> Iterator[Tensor]:
    """``steps`` full batches of indices, walking through one random permutation after another.

    The permutations are drawn on the host (the same on every device) and, for data on a GPU
    (``device``), moved there whole, so each batch is gathered on the device with no copy per
    step.
    """
    perm = _permutation(n, gen, device)
    pos = 0
    for _ in range(steps):
        if pos + batch_size <= n:
            yield perm[pos : pos + batch_size]
            pos += batch_size
        else:
            head = perm[pos:]
            perm = _permutation(n, gen, device)
            pos = batch_size - len(head)
            yield torch.cat([head, perm[:pos]])


def _permutation(n: int, gen: torch.Generator, device: torch.device | None) -> Tensor:
    perm = torch.randperm(n, generator=gen)
    return perm if device is None or device.type == "cpu" else perm.to(device)


def device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
