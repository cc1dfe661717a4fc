"""Block specs and the block-string grammar (timm / TF-TPU style).

Block-string grammar (one string per block, fields joined by ``_``)::

    {type}_r{repeats}_k{kernel}_s{stride}[_e{exp_ratio}]_c{out_chs}[_se{se_ratio}][_noskip|_pool]

    type      cn  plain k x k convolution (MnasNet "conv")
              ds  depthwise-separable convolution (MnasNet "dconv"), no expansion
              ir  inverted bottleneck (MnasNet "mbconv"), needs _e{exp_ratio}
    r         number of layers in the block; only the first one strides and changes width
    k         kernel size of the spatial convolution
    s         stride of the first layer
    e         expansion ratio of an ``ir`` block (omitted for cn/ds)
    c         output channels
    se        squeeze-and-excitation ratio (squeeze width = max(1, int(in_chs * se)))
    skip      default: identity shortcut on layers whose input and output shapes match;
              ``_noskip``: no shortcut; ``_pool``: a shortcut on every layer, identity where
              shapes match and avg-pool (stride) + 1x1 conv/BN projection where they do not.

Example: ``ir_r2_k3_s2_e6_c24_se0.25`` is two mbconv6 3x3 layers with SE 0.25, the
first of stride 2, ending at 24 channels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BLOCK_TYPES = ("cn", "ds", "ir")
SKIP_OPS = ("none", "identity", "pool")


@dataclass(frozen=True)
class BlockSpec:
    """One block of a network: ``repeats`` layers of the same operation."""

    block_type: str
    repeats: int
    kernel: int
    stride: int
    out_chs: int
    exp_ratio: float = 1.0
    se_ratio: float = 0.0
    skip: str = "identity"

    def __post_init__(self) -> None:
        if self.block_type not in BLOCK_TYPES:
            raise ValueError(f"block type {self.block_type!r} not in {BLOCK_TYPES}")
        if self.skip not in SKIP_OPS:
            raise ValueError(f"skip {self.skip!r} not in {SKIP_OPS}")
        for name in ("repeats", "kernel", "stride", "out_chs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel={self.kernel} must be odd")
        if not 0.0 <= self.se_ratio <= 1.0:
            raise ValueError(f"se_ratio={self.se_ratio} must lie in [0, 1]")
        if self.block_type == "ir" and self.exp_ratio <= 0:
            raise ValueError(f"exp_ratio={self.exp_ratio} must be > 0 for an ir block")
        if self.block_type != "ir" and self.exp_ratio != 1:
            raise ValueError(f"exp_ratio={self.exp_ratio} is only allowed on ir blocks")

    def to_string(self) -> str:
        """Render the canonical block string (see the module docstring)."""
        parts = [self.block_type, f"r{self.repeats}", f"k{self.kernel}", f"s{self.stride}"]
        if self.block_type == "ir":
            parts.append(f"e{_fmt_num(self.exp_ratio)}")
        parts.append(f"c{self.out_chs}")
        if self.se_ratio > 0:
            parts.append(f"se{_fmt_num(self.se_ratio)}")
        if self.skip == "none":
            parts.append("noskip")
        elif self.skip == "pool":
            parts.append("pool")
        return "_".join(parts)


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


_FIELD_RE = re.compile(r"^(r|k|s|e|c|se)(\d+(?:\.\d+)?)$")


def parse_block(text: str) -> BlockSpec:
    """Parse one block string into a :class:`BlockSpec`.

    Raises:
        ValueError: naming the string and the part that could not be parsed.
    """
    parts = text.strip().split("_")
    if not parts or parts[0] not in BLOCK_TYPES:
        raise ValueError(
            f"block string {text!r}: type {parts[0]!r} is not one of {BLOCK_TYPES} "
            "(grammar: {type}_r{n}_k{k}_s{s}[_e{e}]_c{c}[_se{r}][_noskip|_pool])"
        )
    values: dict[str, float] = {}
    skip = "identity"
    for part in parts[1:]:
        if part in ("noskip", "pool"):
            skip = "none" if part == "noskip" else "pool"
            continue
        m = _FIELD_RE.match(part)
        if not m or m.group(1) in values:
            raise ValueError(
                f"block string {text!r}: cannot parse {part!r} "
                "(allowed fields r, k, s, e, c, se with numbers, and noskip or pool)"
            )
        values[m.group(1)] = float(m.group(2))
    missing = [f for f in ("r", "k", "s", "c") if f not in values]
    if missing:
        raise ValueError(f"block string {text!r}: missing field(s) {missing}")
    for f in ("r", "k", "s", "c"):
        if not values[f].is_integer():
            raise ValueError(f"block string {text!r}: {f} must be an integer")
    block_type = parts[0]
    if block_type == "ir" and "e" not in values:
        raise ValueError(f"block string {text!r}: an ir block needs an expansion _e{{ratio}}")
    exp = values.get("e", 1.0)
    return BlockSpec(
        block_type=block_type,
        repeats=int(values["r"]),
        kernel=int(values["k"]),
        stride=int(values["s"]),
        out_chs=int(values["c"]),
        exp_ratio=int(exp) if exp.is_integer() else exp,
        se_ratio=values.get("se", 0.0),
        skip=skip,
    )


def parse_blocks(text: str | Sequence[str]) -> tuple[BlockSpec, ...]:
    """Parse a comma-separated string or a list of block strings."""
    items = text.split(",") if isinstance(text, str) else list(text)
    items = [s.strip() for s in items if s.strip()]
    if not items:
        raise ValueError("an architecture needs at least one block string")
    return tuple(parse_block(s) for s in items)


def blocks_key(specs: Iterable[BlockSpec]) -> str:
    """Canonical key of a block list: its block strings joined by commas."""
    return ",".join(s.to_string() for s in specs)
