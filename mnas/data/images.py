"""Decoding image files and resizing uint8 image tensors (bilinear, antialiased when shrinking)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def decode_files(paths: Sequence[str], image_size: int) -> torch.Tensor:
    """Decode image files to ``(N, 3, image_size, image_size)`` uint8 RGB, each resized so
    its shorter side is ``image_size`` and centre-cropped to a square.

    Raises:
        ValueError: naming a file that cannot be decoded.
    """
    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        out[i] = _square(_decode_one(path), image_size)
    return out


def _decode_one(path: str) -> torch.Tensor:
    try:
        with Image.open(path) as pil:
            arr = np.asarray(pil.convert("RGB"))
    except OSError as err:
        raise ValueError(f"cannot decode image file {path}: {err}") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _square(img: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize so the shorter side is ``image_size``, then centre-crop to a square."""
    _, h, w = img.shape
    if h == w == image_size:
        return img
    scale = image_size / min(h, w)
    new_h, new_w = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    img = _resize_float(img.unsqueeze(0), new_h, new_w)[0]
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    return img[:, top : top + image_size, left : left + image_size]


def resize(x: torch.Tensor, image_size: int) -> torch.Tensor:
    if x.shape[-2:] == (image_size, image_size):
        return x.contiguous()
    chunks = [_resize_float(c, image_size, image_size) for c in torch.split(x, 4096)]
    if not chunks:
        return torch.empty((0, x.shape[1], image_size, image_size), dtype=torch.uint8)
    return torch.cat(chunks)


def _resize_float(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    down = h < x.shape[-2] or w < x.shape[-1]
    y = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=down)
    return y.round_().clamp_(0, 255).to(torch.uint8)
