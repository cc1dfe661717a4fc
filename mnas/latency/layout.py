"""Which layout conversions ONNX Runtime adds to a network of :mod:`mnas.nn`, layer by layer.

With every graph optimisation on, ONNX Runtime's CPU provider on x86 rewrites
convolutions, their global pools and same-shape element-wise operators into a blocked
channel layout (NCHWc: channels in blocks of 8 with AVX2, output channels padded up to a
block) and keeps the rest in the plain layout (NCHW), inserting a ``ReorderInput``
(plain to blocked) or ``ReorderOutput`` (blocked to plain) wherever a tensor is wanted in
the other one. A sum that directly follows a convolution without an activation (the
projection of an inverted bottleneck or a separable block) is fused into it as long as
its other input was *produced* blocked; anything else stays an ``Add`` node. What it
keeps plain here:

- the squeeze-and-excitation product on a map larger than 1x1 (a broadcast), and its
  second 1x1 convolution when the squeezed width is >= 8 and not a multiple of 4;
- the stride-2 average pool of a pooled shortcut;
- a sum with a tensor that was produced plain (a chain of identity shortcuts after one
  plain sum stays plain, every layer converting its output back and forth).

:func:`layout_ops` replays these rules; on the optimised graphs of 400 random networks of
the MnasNet space (16x16x1 at width 0.5 and 32x32x3, stride-1 stem) it gives every
``ReorderInput``, ``ReorderOutput``, ``Add``, ``Mul``, ``AveragePool``, ``FusedConv`` and
blocked ``Conv`` count exactly (``tests/test_latency_layout.py`` checks networks against
the runtime). Other block sizes (AVX-512's 16) were not available to check: there
:func:`nchwc_block` reports 0 and no conversions are modelled.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field

from mnas.latency.lut import LayerConfig

BLOCKED, PLAIN = "C", "N"
MODELLED_BLOCKS = (0, 8)
"""Block sizes :func:`layout_ops` knows (0: no layout rewrite modelled)."""


@functools.cache
def nchwc_block() -> int:
    """The NCHWc block this machine's ONNX Runtime uses when it is one :func:`layout_ops`
    models: 8 on x86 with AVX2 and without AVX-512, else 0 (not modelled)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return 0
    if "avx512f" in flags or "avx2" not in flags:
        return 0
    return 8


@dataclass
class _Tensor:
    produced: str  # the layout the node that made it wrote
    elems: int
    have: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.have.add(self.produced)


@dataclass(frozen=True)
class LayoutOp:
    """One node the layout rewrite adds or keeps: ``kind`` ``reorder`` (a conversion of
    ``elems`` elements) or ``addnode`` (a sum the runtime runs as a node of its own)."""

    kind: str
    elems: int


def layout_ops(cfg: LayerConfig, incoming: str, block: int) -> tuple[list[LayoutOp], str]:
    """The conversions and stand-alone sums of one layer whose input was produced in layout
    ``incoming`` (:data:`BLOCKED` or :data:`PLAIN`), and the layout its output is produced
    in. ``block``: :func:`nchwc_block` (0: no rewrite; every sum is a node, no conversions).

    Raises:
        ValueError: for a block size :func:`layout_ops` does not model.
    """
    if block not in MODELLED_BLOCKS:
        raise ValueError(f"nchwc block {block}; allowed: {', '.join(map(str, MODELLED_BLOCKS))}")
    ops: list[LayoutOp] = []
    res, s = cfg.res, cfg.stride
    out_res = (res - 1) // s + 1
    if block == 0:
        if cfg.kind == "layer" and cfg.skip != "none":
            ops.append(LayoutOp("addnode", cfg.out_chs * out_res * out_res))
        return ops, PLAIN

    def need(t: _Tensor, layout: str) -> None:
        if layout not in t.have:
            t.have.add(layout)
            ops.append(LayoutOp("reorder", t.elems))

    if cfg.kind == "stem":  # a few input channels: read plain by the blocked convolution
        return ops, BLOCKED
    x = _Tensor(incoming, cfg.in_chs * res * res)
    need(x, BLOCKED)
    if cfg.kind == "head":  # 1x1 convolution and global pool blocked, then to the classifier
        ops.append(LayoutOp("reorder", cfg.out_chs))
        return ops, PLAIN
    out_elems = cfg.out_chs * out_res * out_res
    if cfg.block_type == "cn":
        mid = cfg.out_chs
    elif cfg.block_type == "ds":
        mid = cfg.in_chs
    else:
        mid = int(round(cfg.in_chs * cfg.exp_ratio))
    m = _Tensor(BLOCKED, mid * out_res * out_res)
    if cfg.se_ratio > 0:
        squeeze = max(1, int(cfg.in_chs * cfg.se_ratio))
        gate = BLOCKED
        if squeeze < block:  # read plain by the second convolution
            ops.append(LayoutOp("reorder", squeeze))
        elif squeeze % 4:  # the second convolution stays plain
            ops.append(LayoutOp("reorder", squeeze))
            gate = PLAIN
        if out_res > 1 or gate == PLAIN:  # a broadcast product: plain
            need(m, PLAIN)
            if gate == BLOCKED:
                ops.append(LayoutOp("reorder", mid))
            m = _Tensor(PLAIN, m.elems)
    # the main path's output, and whether a sum can fuse into its last convolution
    if cfg.block_type == "cn":  # convolution, BN, ReLU (and SE): a sum is its own node
        main, fusable = m, False
    else:
        need(m, BLOCKED)
        main, fusable = _Tensor(BLOCKED, out_elems), True
    if cfg.skip == "none":
        return ops, main.produced
    other = x  # what the main path is summed with
    if cfg.skip == "pool":
        # shapes differ: an average pool (plain) when strided, then a 1x1 projection
        # (blocked) when the widths differ, into which the sum fuses
        if s > 1:
            need(x, PLAIN)
            other = _Tensor(PLAIN, cfg.in_chs * out_res * out_res)
        if cfg.in_chs != cfg.out_chs:
            need(other, BLOCKED)
            other, fusable = _Tensor(BLOCKED, out_elems), True
    if main.produced == BLOCKED and other.produced == BLOCKED:
        if not fusable:
            ops.append(LayoutOp("addnode", out_elems))
        return ops, BLOCKED
    need(main, PLAIN)
    need(other, PLAIN)
    ops.append(LayoutOp("addnode", out_elems))
    return ops, PLAIN
