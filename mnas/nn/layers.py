"""Layers of the MnasNet search space, built from torchvision's building blocks.

Every layer takes ``in_chs``, ``out_chs``, ``stride`` and decides its shortcut once in
``__init__``; optional parts are ``nn.Identity`` so ``forward`` is one straight line.
The squeeze-and-excitation width follows MnasNet's code: ``max(1, int(in_chs * se_ratio))``
from the layer's *input* channels, with biased 1x1 convolutions (torchvision's
``SqueezeExcitation``).
"""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation


def make_se(chs: int, in_chs: int, se_ratio: float, act_layer: type[nn.Module]) -> nn.Module:
    """SE over ``chs`` channels squeezed to ``max(1, int(in_chs * se_ratio))``, or Identity."""
    if se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcitation(chs, max(1, int(in_chs * se_ratio)), activation=act_layer)


class Shortcut(nn.Module):
    """The residual path of a layer: identity, or avg-pool + 1x1 projection for ``pool`` skip.

    The ``pool`` shortcut is MnasNet's "pooling" SkipOp where shapes differ: average
    pooling with kernel = stride (ceil mode, so odd sizes match a padded strided conv)
    followed by a 1x1 conv + BN when the channel count changes.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, norm_layer: type[nn.Module]) -> None:
        super().__init__()
        self.pool = (
            nn.AvgPool2d(stride, stride=stride, ceil_mode=True) if stride > 1 else nn.Identity()
        )
        self.proj = (
            Conv2dNormActivation(in_chs, out_chs, 1, norm_layer=norm_layer, activation_layer=None)
            if in_chs != out_chs
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.pool(x))


def _shortcut(
    skip: str, in_chs: int, out_chs: int, stride: int, norm_layer: type[nn.Module]
) -> nn.Module | None:
    same_shape = stride == 1 and in_chs == out_chs
    if skip == "identity":
        return nn.Identity() if same_shape else None
    if skip == "pool":
        return nn.Identity() if same_shape else Shortcut(in_chs, out_chs, stride, norm_layer)
    return None


class _Residual(nn.Module):
    """Base: ``forward = body(x) + shortcut(x)`` when a shortcut exists, else ``body(x)``."""

    body: nn.Module
    shortcut: nn.Module | None

    @property
    def has_skip(self) -> bool:
        return self.shortcut is not None

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


class ConvLayer(_Residual):
    """MnasNet ``conv``: k x k convolution + BN + activation, optional SE."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        se_ratio: float = 0.0,
        skip: str = "identity",
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Conv2dNormActivation(
                in_chs, out_chs, kernel, stride, norm_layer=norm_layer, activation_layer=act_layer
            ),
            make_se(out_chs, in_chs, se_ratio, act_layer),
        )
        self.shortcut = _shortcut(skip, in_chs, out_chs, stride, norm_layer)


class DepthwiseSeparable(_Residual):
    """MnasNet ``dconv``: depthwise k x k + BN + act, optional SE, pointwise 1x1 + BN."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        se_ratio: float = 0.0,
        skip: str = "identity",
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            Conv2dNormActivation(
                in_chs,
                in_chs,
                kernel,
                stride,
                groups=in_chs,
                norm_layer=norm_layer,
                activation_layer=act_layer,
            ),
            make_se(in_chs, in_chs, se_ratio, act_layer),
            Conv2dNormActivation(in_chs, out_chs, 1, norm_layer=norm_layer, activation_layer=None),
        )
        self.shortcut = _shortcut(skip, in_chs, out_chs, stride, norm_layer)


class InvertedResidual(_Residual):
    """MnasNet ``mbconv``: 1x1 expand + BN + act, depthwise k x k + BN + act, optional SE,
    1x1 linear projection + BN."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        exp_ratio: float = 6.0,
        se_ratio: float = 0.0,
        skip: str = "identity",
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        mid_chs = int(round(in_chs * exp_ratio))
        conv = partial(Conv2dNormActivation, norm_layer=norm_layer)
        self.body = nn.Sequential(
            conv(in_chs, mid_chs, 1, activation_layer=act_layer)
            if mid_chs != in_chs
            else nn.Identity(),
            conv(mid_chs, mid_chs, kernel, stride, groups=mid_chs, activation_layer=act_layer),
            make_se(mid_chs, in_chs, se_ratio, act_layer),
            conv(mid_chs, out_chs, 1, activation_layer=None),
        )
        self.shortcut = _shortcut(skip, in_chs, out_chs, stride, norm_layer)
