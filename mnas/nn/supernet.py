"""The weight-sharing supernet of the MnasNet space: one set of weights, every architecture.

Every layer slot (block ``b``, layer ``i``) holds the weights of its largest variant, and a
sub-network takes slices of them:

- **filters** (the block's output width) and **expansion**: the first ``c`` output / input
  channels of each weight; ``mbconv3`` uses the first half of ``mbconv6``'s expanded
  channels, so both train the same leading channels;
- **kernel**: ``kernel_sharing="crop"`` keeps one weight of the largest kernel and a 3x3
  takes its centre (once-for-all); ``"separate"`` keeps one weight per kernel size;
- **SE**: a switch; on, it uses the leading channels of the slot's SE weights;
- **skip**: identity is parameter-free; the ``pool`` shortcut's 1x1 projection (only the
  first layer of a block changes shape) is one shared, sliced weight;
- **#layers**: a block runs its first ``d`` layer slots;
- ``conv``, ``dconv`` and ``mbconv`` are different operations with their own weights.

BatchNorm keeps only the shared affine parameters: training always normalises with batch
statistics, and a sub-network's running statistics are re-estimated after
:meth:`Supernet.extract` builds it as a stand-alone :class:`~mnas.nn.builder.Net` (the
statistics of one sub-network are meaningless for another).

:meth:`Supernet.extract` returns exactly the network :func:`~mnas.nn.builder.build_model`
builds for the architecture, with the sliced weights copied in: a sub-network is scored by
the same code as a stand-alone child.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models._utils import _make_divisible

from mnas.nn.builder import HEAD_CHS, STEM_CHS, Net, _init_weights, build_model
from mnas.space import BlockSpec, MnasSpace, round_filters

KERNEL_SHARING = ("crop", "separate")
_OPS = {"cn": "conv", "ds": "dconv", "ir": "mbconv"}


@dataclass(frozen=True)
class LayerChoice:
    """One layer of a sub-network, in actual (width-multiplied) channels."""

    op: str  # conv | dconv | mbconv
    in_chs: int
    out_chs: int
    mid_chs: int
    kernel: int
    stride: int
    se_chs: int  # squeeze width, 0 without SE
    skip: str  # none | identity | pool


class _SlicedBN(nn.Module):
    """BatchNorm's affine parameters for up to ``chs`` channels; always batch statistics."""

    def __init__(self, chs: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(chs))
        self.bias = nn.Parameter(torch.zeros(chs))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        return F.batch_norm(x, None, None, self.weight[:c], self.bias[:c], True, 0.0, self.eps)

    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        bn.weight.copy_(self.weight[:c])
        bn.bias.copy_(self.bias[:c])
        bn.reset_running_stats()


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class _KernelWeight(nn.Module):
    """A (depthwise or full) conv weight for every kernel size of the space."""

    def __init__(self, out_chs: int, in_chs: int, kernels: Sequence[int], sharing: str) -> None:
        super().__init__()
        self.sharing = sharing
        self.kmax = max(kernels)
        sizes = [self.kmax] if sharing == "crop" else sorted(set(kernels))
        self.w = nn.ParameterDict({f"k{k}": _param(out_chs, in_chs, k, k) for k in sizes})

    def get(self, out_chs: int, in_chs: int, k: int) -> Tensor:
        if self.sharing == "crop":
            o = (self.kmax - k) // 2
            return self.w[f"k{self.kmax}"][:out_chs, :in_chs, o : o + k, o : o + k]
        return self.w[f"k{k}"][:out_chs, :in_chs]


class _SE(nn.Module):
    """Squeeze-and-excitation over up to ``chs`` channels, squeezed to up to ``sq`` (sliced)."""

    def __init__(self, chs: int, sq: int) -> None:
        super().__init__()
        self.w1, self.b1 = _param(sq, chs, 1, 1), nn.Parameter(torch.zeros(sq))
        self.w2, self.b2 = _param(chs, sq, 1, 1), nn.Parameter(torch.zeros(chs))

    def forward(self, x: Tensor, sq: int) -> Tensor:
        c = x.shape[1]
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.relu(F.conv2d(s, self.w1[:sq, :c], self.b1[:sq]))
        s = torch.sigmoid(F.conv2d(s, self.w2[:c, :sq], self.b2[:c]))
        return x * s

    def copy_to(self, se: nn.Module) -> None:
        sq, c = se.fc1.weight.shape[:2]
        se.fc1.weight.copy_(self.w1[:sq, :c])
        se.fc1.bias.copy_(self.b1[:sq])
        se.fc2.weight.copy_(self.w2[:c, :sq])
        se.fc2.bias.copy_(self.b2[:c])


class _ConvBN(nn.Module):
    """A sliced conv (full or depthwise) + BN, the shape of torchvision's Conv2dNormActivation."""

    def __init__(
        self,
        out_chs: int,
        in_chs: int,
        kernels: Sequence[int],
        sharing: str,
        eps: float,
        depthwise: bool = False,
    ) -> None:
        super().__init__()
        self.depthwise = depthwise
        self.weight = _KernelWeight(out_chs, 1 if depthwise else in_chs, kernels, sharing)
        self.bn = _SlicedBN(out_chs, eps)

    def forward(self, x: Tensor, out_chs: int, k: int, stride: int, act: bool) -> Tensor:
        c = x.shape[1]
        if self.depthwise:
            w = self.weight.get(c, 1, k)
            x = F.conv2d(x, w, None, stride, k // 2, 1, c)
        else:
            x = F.conv2d(x, self.weight.get(out_chs, c, k), None, stride, k // 2)
        x = self.bn(x)
        return F.relu(x) if act else x

    def copy_to(self, cna: nn.Module, k: int) -> None:
        conv, bn = cna[0], cna[1]
        out_chs, in_chs = conv.weight.shape[:2]
        conv.weight.copy_(self.weight.get(out_chs, in_chs, k))
        self.bn.copy_to(bn)


class SuperLayer(nn.Module):
    """One layer slot: the weights of every operation at their largest size."""

    def __init__(
        self,
        in_max: int,
        out_max: int,
        max_exp: float,
        kernels: Sequence[int],
        max_se: float,
        ops: Sequence[str],
        shape_changes: bool,
        sharing: str,
        eps: float,
    ) -> None:
        super().__init__()
        sq = max(1, int(in_max * max_se)) if max_se > 0 else 0
        mid_max = int(round(in_max * max_exp))
        self.conv = self.dconv = self.mbconv = None
        if "conv" in ops:
            self.conv = nn.ModuleDict(
                {"cbn": _ConvBN(out_max, in_max, kernels, sharing, eps), "se": _SE(out_max, sq)}
            )
        if "dconv" in ops:
            self.dconv = nn.ModuleDict(
                {
                    "dw": _ConvBN(in_max, 1, kernels, sharing, eps, depthwise=True),
                    "se": _SE(in_max, sq),
                    "pw": _ConvBN(out_max, in_max, (1,), sharing, eps),
                }
            )
        if "mbconv" in ops:
            self.mbconv = nn.ModuleDict(
                {
                    "exp": _ConvBN(mid_max, in_max, (1,), sharing, eps),
                    "dw": _ConvBN(mid_max, 1, kernels, sharing, eps, depthwise=True),
                    "se": _SE(mid_max, sq),
                    "proj": _ConvBN(out_max, mid_max, (1,), sharing, eps),
                }
            )
        # Only a block's first layer can change shape; later ones have in == out, stride 1.
        self.proj = _ConvBN(out_max, in_max, (1,), sharing, eps) if shape_changes else None

    def forward(self, x: Tensor, c: LayerChoice) -> Tensor:
        if c.op == "conv":
            m = self.conv
            out = m["cbn"](x, c.out_chs, c.kernel, c.stride, True)
            if c.se_chs:
                out = m["se"](out, c.se_chs)
        elif c.op == "dconv":
            m = self.dconv
            out = m["dw"](x, c.in_chs, c.kernel, c.stride, True)
            if c.se_chs:
                out = m["se"](out, c.se_chs)
            out = m["pw"](out, c.out_chs, 1, 1, False)
        else:
            m = self.mbconv
            out = m["exp"](x, c.mid_chs, 1, 1, True) if c.mid_chs != c.in_chs else x
            out = m["dw"](out, c.mid_chs, c.kernel, c.stride, True)
            if c.se_chs:
                out = m["se"](out, c.se_chs)
            out = m["proj"](out, c.out_chs, 1, 1, False)
        same = c.stride == 1 and c.in_chs == c.out_chs
        if c.skip == "identity" and same or c.skip == "pool" and same:
            return out + x
        if c.skip == "pool":
            s = x
            if c.stride > 1:
                s = F.avg_pool2d(s, c.stride, c.stride, ceil_mode=True)
            if c.in_chs != c.out_chs:
                s = self.proj(s, c.out_chs, 1, 1, False)
            return out + s
        return out

    @torch.no_grad()
    def copy_to(self, layer: nn.Module, c: LayerChoice) -> None:
        body = layer.body
        if c.op == "conv":
            self.conv["cbn"].copy_to(body[0], c.kernel)
            if c.se_chs:
                self.conv["se"].copy_to(body[1])
        elif c.op == "dconv":
            self.dconv["dw"].copy_to(body[0], c.kernel)
            if c.se_chs:
                self.dconv["se"].copy_to(body[1])
            self.dconv["pw"].copy_to(body[2], 1)
        else:
            if c.mid_chs != c.in_chs:
                self.mbconv["exp"].copy_to(body[0], 1)
            self.mbconv["dw"].copy_to(body[1], c.kernel)
            if c.se_chs:
                self.mbconv["se"].copy_to(body[2])
            self.mbconv["proj"].copy_to(body[3], 1)
        proj = getattr(layer.shortcut, "proj", None)
        if proj is not None and not isinstance(proj, nn.Identity):
            self.proj.copy_to(proj, 1)


class Supernet(nn.Module):
    """Every architecture of a :class:`~mnas.space.MnasSpace` at one set-up, sharing weights.

    Args:
        space: the MnasNet space (its base filters, layers, strides and choices).
        num_classes, in_channels, width_mult, stem_stride, dropout, bn_eps: as for
            :func:`~mnas.nn.builder.build_model`; sub-networks are built with the same.
        bn_momentum: BN momentum of the extracted networks (the supernet itself always
            normalises with batch statistics).
        kernel_sharing: ``crop`` (one weight of the largest kernel, smaller ones take its
            centre) or ``separate`` (one weight per kernel size).

    Raises:
        ValueError: a bad argument, naming the value and what is allowed.
    """

    def __init__(
        self,
        space: MnasSpace,
        num_classes: int,
        in_channels: int,
        width_mult: float = 1.0,
        stem_stride: int = 1,
        dropout: float = 0.2,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        kernel_sharing: str = "crop",
    ) -> None:
        super().__init__()
        if not isinstance(space, MnasSpace):
            raise ValueError(f"a supernet needs the MnasNet space, got {type(space).__name__}")
        if kernel_sharing not in KERNEL_SHARING:
            raise ValueError(
                f"kernel_sharing={kernel_sharing!r}; allowed: {', '.join(KERNEL_SHARING)}"
            )
        # build_model's own checks, before any weight exists
        build_model(
            space.decode(space.baseline_tokens()),
            num_classes,
            in_channels,
            width_mult,
            stem_stride,
            dropout,
            bn_momentum,
            bn_eps,
        )
        self.space = space
        self.setup = dict(
            num_classes=num_classes,
            in_channels=in_channels,
            width_mult=width_mult,
            stem_stride=stem_stride,
            dropout=dropout,
            bn_momentum=bn_momentum,
            bn_eps=bn_eps,
        )
        self.width_mult = width_mult
        self.kernel_sharing = kernel_sharing
        conv_ops, kernels, ses, _, mults, deltas = space._per_block
        exps = [e for op, e in (("mbconv3", 3), ("mbconv6", 6)) if op in conv_ops]
        ops = sorted({"mbconv" if o.startswith("mbconv") else o for o in conv_ops})
        self.kernels = tuple(kernels)
        self.stem_stride = stem_stride
        self.stem_chs = _make_divisible(STEM_CHS * width_mult, 8)
        self.stem = _ConvBN(self.stem_chs, in_channels, (3,), kernel_sharing, bn_eps)
        in_max = self.stem_chs
        self.max_out: list[int] = []
        self.max_layers: list[int] = []
        blocks = []
        for b in range(space.num_blocks):
            out_max = max(self.block_width(b, m) for m in mults)
            n_max = max(max(1, space.base_layers[b] + d) for d in deltas)
            layers = nn.ModuleList()
            for i in range(n_max):
                cin = in_max if i == 0 else out_max
                layers.append(
                    SuperLayer(
                        cin,
                        out_max,
                        max(exps, default=1),
                        kernels,
                        max(ses),
                        ops,
                        shape_changes=i == 0,
                        sharing=kernel_sharing,
                        eps=bn_eps,
                    )
                )
            blocks.append(layers)
            self.max_out.append(out_max)
            self.max_layers.append(n_max)
            in_max = out_max
        self.blocks = nn.ModuleList(blocks)
        head_chs = _make_divisible(HEAD_CHS * max(1.0, width_mult), 8)
        self.head = _ConvBN(head_chs, in_max, (1,), kernel_sharing, bn_eps)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_chs, num_classes))
        self._init()

    def block_width(self, b: int, mult: float) -> int:
        return _make_divisible(round_filters(self.space.base_filters[b], mult) * self.width_mult, 8)

    def _init(self) -> None:
        for p in self.parameters():
            if p.ndim == 4:
                # fan-out of the full weight, as build_model's kaiming init of a stand-alone net
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
        _init_weights(self.classifier)

    def choices(self, specs: Sequence[BlockSpec]) -> list[list[LayerChoice]]:
        """Per block, the layer choices of the network ``specs`` describe.

        Raises:
            ValueError: a block the supernet cannot express, naming it.
        """
        if len(specs) != len(self.blocks):
            raise ValueError(f"the supernet has {len(self.blocks)} blocks, got {len(specs)}")
        in_chs = self.stem_chs
        out: list[list[LayerChoice]] = []
        for b, s in enumerate(specs):
            out_chs = _make_divisible(s.out_chs * self.width_mult, 8)
            ok = (
                s.repeats <= self.max_layers[b]
                and out_chs <= self.max_out[b]
                and s.kernel in self.kernels
                and s.stride == self.space.strides[b]
            )
            op = _OPS[s.block_type]
            layer0 = self.blocks[b][0]
            ok = ok and getattr(layer0, op) is not None
            if s.block_type == "ir" and ok:
                ok = int(round(in_chs * s.exp_ratio)) <= layer0.mbconv["exp"].bn.weight.numel()
            if s.se_ratio > 0 and ok:
                ok = max(1, int(in_chs * s.se_ratio)) <= getattr(layer0, op)["se"].b1.numel()
            if not ok:
                raise ValueError(f"block {b} ({s.to_string()}) is not in this supernet")
            layers = []
            for i in range(s.repeats):
                cin = in_chs if i == 0 else out_chs
                mid = int(round(cin * s.exp_ratio)) if op == "mbconv" else cin
                layers.append(
                    LayerChoice(
                        op,
                        cin,
                        out_chs,
                        mid,
                        s.kernel,
                        s.stride if i == 0 else 1,
                        max(1, int(cin * s.se_ratio)) if s.se_ratio > 0 else 0,
                        s.skip,
                    )
                )
            out.append(layers)
            in_chs = out_chs
        return out

    def forward(self, x: Tensor, specs: Sequence[BlockSpec]) -> Tensor:
        """Logits of the sub-network ``specs`` (batch statistics in every BN layer)."""
        return self.forward_choices(x, self.choices(specs))

    def forward_choices(self, x: Tensor, choices: Sequence[Sequence[LayerChoice]]) -> Tensor:
        x = self.stem(x, self.stem_chs, 3, self.stem_stride, True)
        for layers, block in zip(choices, self.blocks, strict=True):
            for c, slot in zip(layers, block, strict=False):
                x = slot(x, c)
        x = self.head(x, self.head.bn.weight.numel(), 1, 1, True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @torch.no_grad()
    def extract(self, specs: Sequence[BlockSpec]) -> Net:
        """The stand-alone network of ``specs`` (as ``build_model`` builds it, on the
        supernet's device) with the supernet's weights; its BN running statistics are
        reset and must be re-estimated before it is evaluated in ``eval()`` mode."""
        choices = self.choices(specs)
        device = self.head.bn.weight.device
        with torch.random.fork_rng(devices=[]):
            net = Net(specs, **{k: self.setup[k] for k in _NET_ARGS}, init_weights=False)
        net.to(device)
        self.stem.copy_to(net.features[0], 3)
        k = 1
        for layers, block in zip(choices, self.blocks, strict=True):
            for c, slot in zip(layers, block, strict=False):
                slot.copy_to(net.features[k], c)
                k += 1
        self.head.copy_to(net.features[k], 1)
        net.classifier.load_state_dict(self.classifier.state_dict())
        return net


_NET_ARGS = (
    "num_classes",
    "in_channels",
    "width_mult",
    "stem_stride",
    "dropout",
    "bn_momentum",
    "bn_eps",
)


def largest_specs(space: MnasSpace) -> tuple[BlockSpec, ...]:
    """Every block at its most expensive choice (the sandwich rule's teacher)."""
    return space.decode([_extreme(d, largest=True) for d in space.decisions])


def smallest_specs(space: MnasSpace) -> tuple[BlockSpec, ...]:
    """Every block at its cheapest choice."""
    return space.decode([_extreme(d, largest=False) for d in space.decisions])


_COST = {"dconv": 0, "mbconv3": 1, "conv": 2, "mbconv6": 3, "none": 0, "identity": 1, "pool": 2}


def _extreme(decision, largest: bool) -> int:
    keyed = [(_COST.get(c, c), i) for i, c in enumerate(decision.choices)]
    return (max if largest else min)(keyed)[1]
