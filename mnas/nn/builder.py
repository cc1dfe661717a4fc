"""Turn block specs into PyTorch networks.

Network layout (MobileNetV2 / MnasNet skeleton): stem 3x3 conv (32 channels,
``stem_stride``) + BN + act, the blocks, head 1x1 conv to 1280 channels + BN + act,
global average pool, dropout, linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models._utils import _make_divisible
from torchvision.ops import Conv2dNormActivation

from mnas.nn.layers import ConvLayer, DepthwiseSeparable, InvertedResidual
from mnas.space import Architecture, BlockSpec, specs_of

STEM_CHS = 32
HEAD_CHS = 1280


class Net(nn.Module):
    """A network of the MnasNet skeleton; ``features`` then ``classifier``."""

    def __init__(
        self,
        specs: Sequence[BlockSpec],
        num_classes: int,
        in_channels: int,
        width_mult: float,
        stem_stride: int,
        dropout: float,
        bn_momentum: float,
        bn_eps: float,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        norm = partial(nn.BatchNorm2d, momentum=bn_momentum, eps=bn_eps)
        stem_chs = _make_divisible(STEM_CHS * width_mult, 8)
        layers: list[nn.Module] = [
            Conv2dNormActivation(in_channels, stem_chs, 3, stem_stride, norm_layer=norm)
        ]
        in_chs = stem_chs
        for spec in specs:
            out_chs = _make_divisible(spec.out_chs * width_mult, 8)
            for i in range(spec.repeats):
                layers.append(make_layer(spec, in_chs, out_chs, spec.stride if i == 0 else 1, norm))
                in_chs = out_chs
        head_chs = _make_divisible(HEAD_CHS * max(1.0, width_mult), 8)
        layers.append(Conv2dNormActivation(in_chs, head_chs, 1, norm_layer=norm))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_chs, num_classes))
        if init_weights:  # off where every weight is overwritten next (a supernet's extract)
            _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def make_layer(
    spec: BlockSpec, in_chs: int, out_chs: int, stride: int, norm: type[nn.Module]
) -> nn.Module:
    common = dict(
        in_chs=in_chs,
        out_chs=out_chs,
        kernel=spec.kernel,
        stride=stride,
        se_ratio=spec.se_ratio,
        skip=spec.skip,
        norm_layer=norm,
    )
    if spec.block_type == "cn":
        return ConvLayer(**common)
    if spec.block_type == "ds":
        return DepthwiseSeparable(**common)
    return InvertedResidual(exp_ratio=spec.exp_ratio, **common)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def build_model(
    arch_or_specs: Architecture | Sequence[BlockSpec] | Sequence[str] | str,
    num_classes: int = 1000,
    in_channels: int = 3,
    width_mult: float = 1.0,
    stem_stride: int = 2,
    dropout: float = 0.2,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
) -> Net:
    """Build a network from an architecture, block specs, block strings or a reference name.

    Args:
        arch_or_specs: an :class:`Architecture`, a sequence of :class:`BlockSpec` or block
            strings, or a string (reference name or comma-separated block strings).
        num_classes: classifier outputs.
        in_channels: image channels (1 for Fashion-MNIST).
        width_mult: multiplier on every width (stem, blocks; the 1280 head only grows).
        stem_stride: stride of the stem convolution; 1 suits 28-32 px inputs.
        dropout: dropout before the classifier.
        bn_momentum: BatchNorm momentum (PyTorch convention; torchvision's MNASNet uses
            0.0003, far too slow for short proxy training).
        bn_eps: BatchNorm epsilon.

    Raises:
        ValueError: on a bad argument, naming the value and what is allowed.
    """
    if not width_mult > 0:
        raise ValueError(f"width_mult={width_mult} must be > 0")
    for name, value in (
        ("num_classes", num_classes),
        ("in_channels", in_channels),
        ("stem_stride", stem_stride),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} must lie in [0, 1)")
    if not 0.0 <= bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum={bn_momentum} must lie in [0, 1]")
    specs = specs_of(arch_or_specs)
    return Net(
        specs, num_classes, in_channels, width_mult, stem_stride, dropout, bn_momentum, bn_eps
    )
