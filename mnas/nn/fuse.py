"""Inference-only rewrites of a built network: BatchNorm folded into the convolution before it.

Scoring a sub-network of a supernet runs thousands of small forward passes on the CPU, where
a BatchNorm in eval mode is one more full pass over every activation (a fifth to a third of
the forward time of the networks built here). Folded, the convolution computes
``conv(x) * s + b`` itself (``s = gamma / sqrt(var + eps)``, ``b = beta - mean * s``), which
is what ONNX export does too.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_batchnorm"]


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` in an ``nn.Sequential``
    into that convolution, in place; the BN becomes ``nn.Identity``.

    The result computes what the network computed in ``eval()`` mode (up to float rounding)
    and only that: it no longer normalises by batch statistics, so it is for inference only.
    The convolutions get new weight and bias tensors; weights shared with another module (a
    supernet the network was copied from) are not touched.

    Returns:
        the number of BatchNorm layers folded.
    """
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[first], seq._modules[second]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError(f"{second}: BatchNorm without running statistics cannot be folded")
            if bn.num_features != conv.out_channels:
                raise ValueError(
                    f"{first}->{second}: conv has {conv.out_channels} outputs, "
                    f"BatchNorm {bn.num_features} features"
                )
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale
            if bn.bias is not None:
                shift = shift + bn.bias
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            weight = conv.weight * scale.reshape(-1, 1, 1, 1)
            conv.weight = nn.Parameter(weight, requires_grad=False)
            conv.bias = nn.Parameter(shift, requires_grad=False)
            seq._modules[second] = nn.Identity()
            folded += 1
    return folded
