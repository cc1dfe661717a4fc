"""Search spaces: decisions, tokens, architectures and block strings.

An architecture is a sequence of integer *tokens*, one per decision; the space
turns tokens into a canonical *key* (for the MnasNet space: a comma-separated
list of block strings) and the key's SHA-256 is the architecture's stable hash.
Two token sequences that decode to the same network share a hash, so caches
never pay twice for one model.

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

import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

BLOCK_TYPES = ("cn", "ds", "ir")
SKIP_OPS = ("none", "identity", "pool")


@dataclass(frozen=True)
class Decision:
    """One categorical decision of a space.

    Attributes:
        name: decision type (shared by all blocks, e.g. ``kernel``); the controller
            keeps one softmax head and one embedding per type.
        choices: the values a token indexes.
        block: which block (or edge) the decision belongs to.
    """

    name: str
    choices: tuple
    block: int = 0


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


def stable_hash(key: str) -> str:
    """16 hex digits of SHA-256: the same in every process and on every machine."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Architecture:
    """An architecture: its space, its tokens and its canonical key.

    ``key`` identifies the network itself (block strings for MnasNet-style spaces,
    the cell string for NAS-Bench-201); ``hash`` is derived from it.
    """

    space: str
    tokens: tuple[int, ...]
    key: str
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(int(t) for t in self.tokens))
        object.__setattr__(self, "hash", stable_hash(self.key))

    @property
    def blocks(self) -> tuple[str, ...]:
        """The key split into its parts (block strings for MnasNet spaces)."""
        return tuple(self.key.split(",")) if self.space != "nasbench201" else (self.key,)

    def to_dict(self) -> dict:
        return {"space": self.space, "tokens": list(self.tokens), "key": self.key}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        try:
            arch = cls(space=data["space"], tokens=tuple(data["tokens"]), key=data["key"])
        except KeyError as e:
            raise ValueError(f"architecture record lacks key {e}; needs space, tokens, key") from e
        if "hash" in data and data["hash"] != arch.hash:
            raise ValueError(f"architecture hash {data['hash']} does not match its key")
        return arch

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_blocks(cls, blocks: str | Sequence[str] | Sequence[BlockSpec]) -> Architecture:
        """An architecture outside any token space, given by its blocks."""
        if not isinstance(blocks, str) and blocks and isinstance(blocks[0], BlockSpec):
            specs = tuple(blocks)
        else:
            specs = parse_blocks(blocks)
        return cls(space="blocks", tokens=(), key=blocks_key(specs))


class SearchSpace(Protocol):
    """What the controller and the search loop need from a space."""

    name: str
    decisions: tuple[Decision, ...]

    def size(self) -> int: ...

    def architecture(self, tokens: Sequence[int]) -> Architecture: ...

    def sample(self, rng: random.Random) -> Architecture: ...


def _validate_tokens(name: str, decisions: Sequence[Decision], tokens: Sequence[int]) -> None:
    if len(tokens) != len(decisions):
        raise ValueError(f"space {name!r} needs {len(decisions)} tokens, got {len(tokens)}")
    for i, (t, d) in enumerate(zip(tokens, decisions, strict=True)):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(d.choices):
            raise ValueError(
                f"token {i} ({d.name} of block {d.block}) is {t!r}; "
                f"allowed 0..{len(d.choices) - 1} for choices {list(d.choices)}"
            )


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
        _validate_tokens(self.name, self.decisions, tokens)

    def decode(self, tokens: Sequence[int]) -> tuple[BlockSpec, ...]:
        """Tokens to block specs. Raises ValueError on a bad token sequence."""
        tokens = list(tokens)
        self.validate(tokens)
        specs = []
        k = len(self.DECISION_NAMES)
        for b in range(self.num_blocks):
            op_i, ker_i, se_i, skip_i, f_i, l_i = tokens[b * k : (b + 1) * k]
            conv_op, kernels, ses, skips, mults, deltas = self._per_block
            block_type, exp = _CONV_OP_SPEC[conv_op[op_i]]
            specs.append(
                BlockSpec(
                    block_type=block_type,
                    repeats=max(1, self.base_layers[b] + deltas[l_i]),
                    kernel=kernels[ker_i],
                    stride=self.strides[b],
                    out_chs=round_filters(self.base_filters[b], mults[f_i]),
                    exp_ratio=exp,
                    se_ratio=ses[se_i],
                    skip=skips[skip_i],
                )
            )
        return tuple(specs)

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
        no SE, identity skip, base filters and layers."""
        conv_op, kernels, ses, skips, mults, deltas = self._per_block
        specs = [
            BlockSpec(
                block_type="ds" if b == 0 else "ir",
                repeats=self.base_layers[b],
                kernel=3,
                stride=self.strides[b],
                out_chs=round_filters(self.base_filters[b], 1.0),
                exp_ratio=1 if b == 0 else 6,
                se_ratio=0.0,
                skip="identity",
            )
            for b in range(self.num_blocks)
        ]
        return self.encode(specs)


# Published reference networks as block strings (see ../shared/REFERENCES.md).
REFERENCE_BLOCKS: dict[str, tuple[str, ...]] = {
    "mobilenetv2": (
        "ds_r1_k3_s1_c16",
        "ir_r2_k3_s2_e6_c24",
        "ir_r3_k3_s2_e6_c32",
        "ir_r4_k3_s2_e6_c64",
        "ir_r3_k3_s1_e6_c96",
        "ir_r3_k3_s2_e6_c160",
        "ir_r1_k3_s1_e6_c320",
    ),
    "mnasnet_a1": (
        "ds_r1_k3_s1_c16_noskip",
        "ir_r2_k3_s2_e6_c24",
        "ir_r3_k5_s2_e3_c40_se0.25",
        "ir_r4_k3_s2_e6_c80",
        "ir_r2_k3_s1_e6_c112_se0.25",
        "ir_r3_k5_s2_e6_c160_se0.25",
        "ir_r1_k3_s1_e6_c320",
    ),
    "mnasnet_b1": (
        "ds_r1_k3_s1_c16_noskip",
        "ir_r3_k3_s2_e3_c24",
        "ir_r3_k5_s2_e3_c40",
        "ir_r3_k5_s2_e6_c80",
        "ir_r2_k3_s1_e6_c96",
        "ir_r4_k5_s2_e6_c192",
        "ir_r1_k3_s1_e6_c320",
    ),
}


def reference(name: str) -> Architecture:
    """A published architecture by name (``mobilenetv2``, ``mnasnet_a1``, ``mnasnet_b1``)."""
    if name not in REFERENCE_BLOCKS:
        raise ValueError(
            f"unknown reference architecture {name!r}; known: {sorted(REFERENCE_BLOCKS)}"
        )
    return Architecture.from_blocks(REFERENCE_BLOCKS[name])


def resolve_arch(text: str) -> Architecture:
    """A reference name or a comma-separated list of block strings."""
    text = text.strip()
    if text in REFERENCE_BLOCKS:
        return reference(text)
    if "_" not in text:
        raise ValueError(
            f"{text!r} is neither a reference name ({sorted(REFERENCE_BLOCKS)}) "
            "nor a list of block strings such as 'ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24'"
        )
    return Architecture.from_blocks(text)


def specs_of(
    arch: Architecture | Sequence[BlockSpec] | Sequence[str] | str,
) -> tuple[BlockSpec, ...]:
    """Block specs of anything that names a MnasNet-style network."""
    if isinstance(arch, Architecture):
        if arch.space == "nasbench201":
            raise ValueError(f"architecture {arch.hash} of space 'nasbench201' has no block specs")
        return parse_blocks(arch.key)
    if isinstance(arch, str):
        return parse_blocks(resolve_arch(arch).key)
    items = list(arch)
    if items and all(isinstance(s, BlockSpec) for s in items):
        return tuple(items)
    return parse_blocks(items)


SPACES = {"mnas": MnasSpace}


def make_space(name: str = "mnas", **kwargs) -> MnasSpace:
    """A search space by name; keyword arguments go to its constructor."""
    if name == "nasbench201":
        from mnas.nasbench201 import NB201Space

        return NB201Space(**kwargs)
    if name not in SPACES:
        raise ValueError(
            f"unknown search space {name!r}; known: {sorted([*SPACES, 'nasbench201'])}"
        )
    return SPACES[name](**kwargs)
