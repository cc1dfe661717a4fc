"""MnasNet's factorized hierarchical search space (paper section 4.1)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from mnas.space.base import Architecture, Decision, register_space, validate_tokens
from mnas.space.blocks import SKIP_OPS, BlockSpec, blocks_key


def round_filters(base: int, mult: float, divisor: int = 8) -> int:
    """``base * mult`` to the nearest multiple of ``divisor`` (at least ``divisor``).

    Ties are broken away from ``base`` so that 0.75x and 1.25x never collapse onto
    the base width (16 x 0.75 = 12 -> 8, 16 x 1.25 = 20 -> 24).
    """
    value = base * mult
    q = value / divisor
    lo, hi = math.floor(q), math.ceil(q)
    if q - lo < hi - q:
        n = lo
    elif q - lo > hi - q:
        n = hi
    else:
        n = lo if value < base else hi
    return max(divisor, n * divisor)


CONV_OPS = ("conv", "dconv", "mbconv3", "mbconv6")
_CONV_OP_SPEC = {"conv": ("cn", 1), "dconv": ("ds", 1), "mbconv3": ("ir", 3), "mbconv6": ("ir", 6)}


@register_space("mnas")
class MnasSpace:
    """MnasNet's factorized hierarchical space (paper section 4.1).

    Seven blocks on the MobileNetV2 skeleton, six decisions per block in the order
    conv_op, kernel, se_ratio, skip, filters, layers: 4 * 2 * 2 * 3 * 3 * 3 = 432
    choices per block.

    Args:
        base_filters: output channels of each block at filter multiplier 1.0.
        base_layers: layers of each block at layer delta 0.
        strides: stride of the first layer of each block.
        filter_mults: filter-size multipliers (rounded with :func:`round_filters`).
        layer_deltas: layer-count offsets; results are clamped to at least 1.
    """

    DECISION_NAMES = ("conv_op", "kernel", "se_ratio", "skip", "filters", "layers")

    def __init__(
        self,
        base_filters: Sequence[int] = (16, 24, 32, 64, 96, 160, 320),
        base_layers: Sequence[int] = (1, 2, 3, 4, 3, 3, 1),
        strides: Sequence[int] = (1, 2, 2, 2, 1, 2, 1),
        conv_ops: Sequence[str] = CONV_OPS,
        kernels: Sequence[int] = (3, 5),
        se_ratios: Sequence[float] = (0.0, 0.25),
        skip_ops: Sequence[str] = SKIP_OPS,
        filter_mults: Sequence[float] = (0.75, 1.0, 1.25),
        layer_deltas: Sequence[int] = (-1, 0, 1),
        name: str = "mnas",
    ) -> None:
        n = len(base_filters)
        if n == 0 or len(base_layers) != n or len(strides) != n:
            raise ValueError(
                f"base_filters, base_layers and strides need one entry per block and equal "
                f"lengths; got {len(base_filters)}, {len(base_layers)}, {len(strides)}"
            )
        for op in conv_ops:
            if op not in _CONV_OP_SPEC:
                raise ValueError(f"conv op {op!r} not in {CONV_OPS}")
        for op in skip_ops:
            if op not in SKIP_OPS:
                raise ValueError(f"skip op {op!r} not in {SKIP_OPS}")
        for k in kernels:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"kernel {k} must be a positive odd integer")
        for m in filter_mults:
            if m <= 0:
                raise ValueError(f"filter multiplier {m} must be > 0")
        for choices, label in (
            (conv_ops, "conv_ops"),
            (kernels, "kernels"),
            (se_ratios, "se_ratios"),
            (skip_ops, "skip_ops"),
            (filter_mults, "filter_mults"),
            (layer_deltas, "layer_deltas"),
        ):
            if len(choices) == 0:
                raise ValueError(f"{label} must offer at least one choice")
        self.name = name
        self.base_filters = tuple(int(x) for x in base_filters)
        self.base_layers = tuple(int(x) for x in base_layers)
        self.strides = tuple(int(x) for x in strides)
        per_block = (
            tuple(conv_ops),
            tuple(int(k) for k in kernels),
            tuple(float(s) for s in se_ratios),
            tuple(skip_ops),
            tuple(float(m) for m in filter_mults),
            tuple(int(d) for d in layer_deltas),
        )
        self._per_block = per_block
        self.decisions = tuple(
            Decision(name, choices, block=b)
            for b in range(n)
            for name, choices in zip(self.DECISION_NAMES, per_block, strict=True)
        )

    @property
    def num_blocks(self) -> int:
        return len(self.base_filters)

    def size(self) -> int:
        """Number of token sequences: ``prod(choices per block) ** num_blocks``."""
        return math.prod(len(d.choices) for d in self.decisions)

    def validate(self, tokens: Sequence[int]) -> None:
        validate_tokens(self.name, self.decisions, tokens)

    def decode(self, tokens: Sequence[int]) -> tuple[BlockSpec, ...]:
        """Tokens to block specs. Raises ValueError on a bad token sequence."""
        tokens = list(tokens)
        self.validate(tokens)
        k = len(self.DECISION_NAMES)
        return tuple(
            self.block_spec(b, tokens[b * k : (b + 1) * k]) for b in range(self.num_blocks)
        )

    def block_spec(self, block: int, block_tokens: Sequence[int]) -> BlockSpec:
        """The spec of block ``block`` from its own six tokens (not validated: see
        :meth:`decode`)."""
        op_i, ker_i, se_i, skip_i, f_i, l_i = block_tokens
        conv_op, kernels, ses, skips, mults, deltas = self._per_block
        block_type, exp = _CONV_OP_SPEC[conv_op[op_i]]
        return BlockSpec(
            block_type=block_type,
            repeats=max(1, self.base_layers[block] + deltas[l_i]),
            kernel=kernels[ker_i],
            stride=self.strides[block],
            out_chs=round_filters(self.base_filters[block], mults[f_i]),
            exp_ratio=exp,
            se_ratio=ses[se_i],
            skip=skips[skip_i],
        )

    def architecture(self, tokens: Sequence[int]) -> Architecture:
        specs = self.decode(tokens)
        return Architecture(space=self.name, tokens=tuple(tokens), key=blocks_key(specs))

    def sample(self, rng: random.Random) -> Architecture:
        """One architecture with every decision drawn uniformly."""
        return self.architecture([rng.randrange(len(d.choices)) for d in self.decisions])

    def encode(self, specs: Sequence[BlockSpec]) -> tuple[int, ...]:
        """Block specs back to tokens, if the specs lie in this space.

        Raises:
            ValueError: naming the first block and field that the space cannot express.
        """
        if len(specs) != self.num_blocks:
            raise ValueError(f"space {self.name!r} has {self.num_blocks} blocks, got {len(specs)}")
        conv_op, kernels, ses, skips, mults, deltas = self._per_block
        tokens: list[int] = []
        for b, s in enumerate(specs):
            op = next((o for o in conv_op if _CONV_OP_SPEC[o] == (s.block_type, s.exp_ratio)), None)
            # Prefer the base choice (x1.0, +0) where several choices give the same network.
            filt = sorted(
                (
                    i
                    for i, m in enumerate(mults)
                    if round_filters(self.base_filters[b], m) == s.out_chs
                ),
                key=lambda i: abs(mults[i] - 1.0),
            )
            lay = sorted(
                (i for i, d in enumerate(deltas) if max(1, self.base_layers[b] + d) == s.repeats),
                key=lambda i: abs(deltas[i]),
            )
            if (
                op is None
                or s.kernel not in kernels
                or s.se_ratio not in ses
                or s.skip not in skips
                or not filt
                or not lay
                or s.stride != self.strides[b]
            ):
                raise ValueError(f"block {b} ({s.to_string()}) is not in space {self.name!r}")
            tokens += [
                conv_op.index(op),
                kernels.index(s.kernel),
                ses.index(s.se_ratio),
                skips.index(s.skip),
                filt[0],
                lay[0],
            ]
        return tuple(tokens)

    def baseline_tokens(self) -> tuple[int, ...]:
        """MobileNetV2 expressed in this space: block 1 dconv, the rest mbconv6, kernel 3,
        no SE, identity skip, base filters and layers. In a space without ``dconv`` block 1
        is its smallest ``mbconv`` (the nearest to MobileNetV2's expansion-1 block)."""
        conv_op = self._per_block[0]
        first = "dconv" if "dconv" in conv_op else min(conv_op, key=lambda o: _CONV_OP_SPEC[o][1])
        specs = [
            BlockSpec(
                block_type=_CONV_OP_SPEC[first][0] if b == 0 else "ir",
                repeats=self.base_layers[b],
                kernel=3,
                stride=self.strides[b],
                out_chs=round_filters(self.base_filters[b], 1.0),
                exp_ratio=_CONV_OP_SPEC[first][1] if b == 0 else 6,
                se_ratio=0.0,
                skip="identity",
            )
            for b in range(self.num_blocks)
        ]
        return self.encode(specs)


MBCONV_OPS = ("mbconv3", "mbconv6")


@register_space("mnas_mbconv")
class MnasMBConvSpace(MnasSpace):
    """The MnasNet space with every layer an inverted bottleneck and an identity skip.

    The sub-space weight sharing trains (docs/supernet.md): ``mbconv3`` and ``mbconv6`` share
    their leading expanded channels, kernel, SE, filters and layers are elastic, and the skip
    is the residual wherever shapes allow (TuNAS's and ProxylessNAS's choice). ``conv``,
    ``dconv`` and the ``none`` skip are left out because a supernet cannot share weights
    across them. 2 * 2 * 2 * 1 * 3 * 3 = 72 choices per block.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("conv_ops", MBCONV_OPS)
        kwargs.setdefault("skip_ops", ("identity",))
        kwargs.setdefault("name", "mnas_mbconv")
        super().__init__(**kwargs)
