"""The shipped ONNX file checked against PyTorch on real images.

Before a ``model.onnx`` is accepted, its outputs on real test images are compared with
PyTorch's; the largest absolute difference is recorded and a difference above the tolerance
raises :class:`ExportMismatchError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnas.latency import make_session
from mnas.training import Normalizer


class ExportMismatchError(RuntimeError):
    """The ONNX file's outputs differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ExportSettings:
    """The shipped ONNX file and its check against PyTorch.

    A logit passes when ``|onnx - torch| <= atol + rtol * |torch|`` (numpy's ``allclose``):
    the exporter folds BatchNorm into the convolutions, which reorders float32 sums, so the
    rounding error grows with the size of the activations; ``rtol`` only matters for logits
    far above 10.
    """

    batch_size: int = 1
    check_images: int = 64
    atol: float = 1e-4
    rtol: float = 1e-5

    def __post_init__(self) -> None:
        for key in ("batch_size", "check_images"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r} must be a positive integer")
        if not (self.atol > 0 and self.rtol >= 0):
            raise ValueError(f"atol={self.atol}, rtol={self.rtol}: need atol > 0, rtol >= 0")


@dataclass(frozen=True)
class OnnxCheck:
    """Outcome of :func:`check_onnx`.

    Attributes:
        max_abs_diff: largest ``|onnx - torch|`` over all logits compared.
        max_abs_logit: largest ``|torch|`` logit (the scale of the rounding error).
        ok: every logit within ``atol + rtol * |torch|``.
        images: test images compared.
    """

    max_abs_diff: float
    max_abs_logit: float
    ok: bool
    images: int


@torch.no_grad()
def check_onnx(
    model: nn.Module,
    onnx_bytes: bytes,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    settings: ExportSettings,
) -> OnnxCheck:
    """Compare ONNX Runtime's logits with PyTorch's (eval mode, CPU) on real images.

    Args:
        model: the PyTorch network.
        onnx_bytes: its export with a static batch of ``settings.batch_size``.
        images: uint8 images ``(N, C, H, W)``; the full export batches among them are used.
        mean, std: the normalisation the network was trained with (0-1 units).
        settings: batch and tolerances.
    """
    n = (len(images) // settings.batch_size) * settings.batch_size
    if n == 0:
        raise ValueError(
            f"need at least {settings.batch_size} images to check the ONNX export, "
            f"got {len(images)}"
        )
    session = make_session(onnx_bytes, threads=1)
    norm = Normalizer(mean, std, torch.device("cpu"))
    was_training = model.training
    model.eval()
    worst, scale, ok = 0.0, 0.0, True
    try:
        for start in range(0, n, settings.batch_size):
            x = norm(images[start : start + settings.batch_size])
            expected = model(x).numpy()
            got = session.run(["output"], {"input": x.numpy()})[0]
            diff = np.abs(got - expected)
            worst = max(worst, float(diff.max()))
            scale = max(scale, float(np.abs(expected).max()))
            ok = ok and bool(np.all(diff <= settings.atol + settings.rtol * np.abs(expected)))
    finally:
        model.train(was_training)
    return OnnxCheck(worst, scale, ok, n)
