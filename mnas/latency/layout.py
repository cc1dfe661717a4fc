"""Which layout conversions ONNX Runtime adds to a network of :mod:`mnas.nn`, layer by layer.

With every graph optimisation on, ONNX Runtime's CPU provider on x86 rewrites
convolutions, their global pools and same-shape element-wise operators into a blocked
channel layout (NCHWc: channels in blocks of 8 with AVX2, of 16 with AVX-512, output
channels padded up to a block) and keeps the rest in the plain layout (NCHW), inserting a
``ReorderInput`` (plain to blocked) or ``ReorderOutput`` (blocked to plain) wherever a
tensor is wanted in the other one. What it does with each node of a layer, as measured on
ONNX Runtime 1.32 (single nodes probed, then whole networks):

- a convolution is blocked when its input channels are fewer than a block (it then reads
  its input plain) or a multiple of 4, a depthwise one when its channels are a multiple
  of 4; any other stays plain;
- a global average pool (of the squeeze-and-excitation, of the head) is blocked when its
  input was *produced* blocked and its channels fill whole blocks;
- a product or sum is blocked when both inputs were produced blocked with one shape (so
  the squeeze-and-excitation's broadcast product on a map larger than 1x1 is plain, and a
  chain of identity shortcuts after one plain sum stays plain, every layer converting its
  output back and forth); a blocked sum is fused into a convolution without activation
  whose only use it is (the projection of an inverted bottleneck or separable block, the
  pooled shortcut's projection), otherwise it stays an ``Add`` node;
- the pooled shortcut's strided average pool (ceil mode) is plain.

:func:`layout_ops` replays these rules; on the optimised graphs of 400 random networks of
the MnasNet space (16x16x1 at width 0.5 and 32x32x3, stride-1 stem) per block size it
gives every ``ReorderInput``, ``ReorderOutput`` and ``Add`` count exactly (each block checked
on a machine that has it; ``tests/test_latency_layout.py`` checks networks against the
runtime of the machine it runs on). Elsewhere (no AVX2, not x86) :func:`nchwc_block`
reports 0 and no conversions are modelled.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field

from mnas.latency.lut import LayerConfig

BLOCKED, PLAIN = "C", "N"
MODELLED_BLOCKS = (0, 8, 16)
"""Block sizes :func:`layout_ops` knows (0: no layout rewrite modelled)."""


@functools.cache
def nchwc_block() -> int:
    """The NCHWc block this machine's ONNX Runtime uses: 16 on x86 with AVX-512, 8 with
    AVX2, else 0 (no rewrite modelled)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(
                (line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []
            )
    except OSError:
        return 0
    if "avx512f" in flags:
        return 16
    return 8 if "avx2" in flags else 0


@dataclass
class _Tensor:
    produced: str  # the layout the node that made it wrote
    elems: int
    fusable: bool = False  # the only output of a blocked convolution without activation
    have: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.have.add(self.produced)


FILTER_SET = 4
"""Output-channel blocks a blocked convolution computes in one pass over its input
(MLAS's NCHWc convolution kernels take up to four filter blocks at a time)."""
CONV_WORK = ("set1", "set2", "set3", "set4", "nchw")
"""How a blocked convolution's multiply-adds are run: in passes of 1-4 filter blocks over
a blocked input, or over a plain input narrower than a block (``nchw``)."""


@dataclass(frozen=True)
class LayoutOp:
    """One thing the layout rewrite adds, keeps or decides: ``kind`` ``reorder`` (a
    conversion of ``elems`` elements), ``addnode`` (a sum the runtime runs as a node of its
    own), or one of :data:`CONV_WORK` for a blocked convolution of operator kind ``conv``
    (``dense3``, ``dense5``, ``pw``): ``elems`` multiply-adds as run, output channels
    padded to whole blocks (and blocked input channels too)."""

    kind: str
    elems: int
    conv: str = ""


def conv_kind(kernel: int, groups: int = 1) -> str:
    """The operator kind the features count a convolution as: ``pw`` (1x1), ``dense3`` /
    ``dense5``, ``dw3`` / ``dw5`` (depthwise: ``groups`` > 1); other kernels as 5x5."""
    if groups > 1:
        return f"dw{kernel}" if kernel in (3, 5) else "dw5"
    if kernel == 1:
        return "pw"
    return f"dense{kernel}" if kernel in (3, 5) else "dense5"


class _Rewrite:
    """The rewrite of one layer's nodes, in order, under NCHWc block ``block``."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.ops: list[LayoutOp] = []

    def need(self, t: _Tensor, layout: str) -> None:
        """``t`` read in ``layout``: a conversion the first time it is wanted there."""
        if layout not in t.have:
            t.have.add(layout)
            self.ops.append(LayoutOp("reorder", t.elems))

    def conv(
        self,
        x: _Tensor,
        in_chs: int,
        out_chs: int,
        out_res: int,
        act: bool,
        dw: bool = False,
        kernel: int = 1,
        kind: str = "",
    ) -> _Tensor:
        """A convolution: blocked when its input channels come in fours (a depthwise one:
        its channels) or are fewer than a block (then read plain), else plain. A blocked
        one of operator kind ``kind`` (not depthwise, not the SE's) records how its work
        is run (:data:`CONV_WORK`)."""
        out_elems = out_chs * out_res * out_res
        if dw:
            blocked, reads = out_chs % 4 == 0, BLOCKED
        elif in_chs < self.block:
            blocked, reads = True, PLAIN
        else:
            blocked, reads = in_chs % 4 == 0, BLOCKED
        if not blocked:
            self.need(x, PLAIN)
            return _Tensor(PLAIN, out_elems)
        self.need(x, reads)
        if kind:
            b = self.block
            blocks = -(-out_chs // b)
            padded_in = in_chs if reads == PLAIN else -(-in_chs // b) * b
            per_block = out_res * out_res * kernel * kernel * padded_in * b
            if reads == PLAIN:
                self.ops.append(LayoutOp("nchw", per_block * blocks, kind))
            else:
                full, rest = divmod(blocks, FILTER_SET)
                if full:
                    self.ops.append(
                        LayoutOp(f"set{FILTER_SET}", per_block * FILTER_SET * full, kind)
                    )
                if rest:
                    self.ops.append(LayoutOp(f"set{rest}", per_block * rest, kind))
        return _Tensor(BLOCKED, out_elems, fusable=not act)

    def global_pool(self, x: _Tensor, chs: int) -> _Tensor:
        """A global average pool: blocked only on a tensor produced blocked, whole blocks."""
        if x.produced == BLOCKED and chs % self.block == 0:
            return _Tensor(BLOCKED, chs)
        self.need(x, PLAIN)
        return _Tensor(PLAIN, chs)

    def binary(
        self, a: _Tensor, b: _Tensor, same_shape: bool, out_elems: int, add: bool
    ) -> _Tensor:
        """A product or sum: blocked when both inputs were produced blocked with one shape
        (a sum then fuses into a single-use convolution without activation, if either
        input is one), else a plain node."""
        if a.produced == BLOCKED and b.produced == BLOCKED and same_shape:
            if add and not (a.fusable or b.fusable):
                self.ops.append(LayoutOp("addnode", out_elems))
            return _Tensor(BLOCKED, out_elems)
        self.need(a, PLAIN)
        self.need(b, PLAIN)
        if add:
            self.ops.append(LayoutOp("addnode", out_elems))
        return _Tensor(PLAIN, out_elems)


def layout_ops(cfg: LayerConfig, incoming: str, block: int) -> tuple[list[LayoutOp], str]:
    """The conversions and stand-alone sums of one layer whose input was produced in layout
    ``incoming`` (:data:`BLOCKED` or :data:`PLAIN`), and the layout its output is produced
    in. ``block``: :func:`nchwc_block` (0: no rewrite; every sum is a node, no conversions).

    Raises:
        ValueError: for a block size :func:`layout_ops` does not model.
    """
    if block not in MODELLED_BLOCKS:
        raise ValueError(f"nchwc block {block}; allowed: {', '.join(map(str, MODELLED_BLOCKS))}")
    res, s = cfg.res, cfg.stride
    out_res = (res - 1) // s + 1
    if block == 0:
        ops = []
        if cfg.kind == "layer" and cfg.skip != "none":
            ops.append(LayoutOp("addnode", cfg.out_chs * out_res * out_res))
        return ops, PLAIN
    rw = _Rewrite(block)
    x = _Tensor(incoming, cfg.in_chs * res * res)
    dense = conv_kind(cfg.kernel)
    if cfg.kind == "stem":
        y = rw.conv(x, cfg.in_chs, cfg.out_chs, out_res, True, kernel=cfg.kernel, kind=dense)
        return rw.ops, y.produced
    if cfg.kind == "head":  # 1x1 convolution, global pool, then flattened for the classifier
        y = rw.conv(x, cfg.in_chs, cfg.out_chs, res, True, kind="pw")
        rw.need(rw.global_pool(y, cfg.out_chs), PLAIN)
        return rw.ops, PLAIN
    out_elems = cfg.out_chs * out_res * out_res
    if cfg.block_type == "cn":  # convolution, BN, ReLU
        mid = cfg.out_chs
        m = rw.conv(x, cfg.in_chs, mid, out_res, True, kernel=cfg.kernel, kind=dense)
    else:
        mid = cfg.in_chs if cfg.block_type == "ds" else int(round(cfg.in_chs * cfg.exp_ratio))
        m = x
        if mid != cfg.in_chs:  # expansion
            m = rw.conv(m, cfg.in_chs, mid, res, True, kind="pw")
        m = rw.conv(m, mid, mid, out_res, True, dw=True)
    if cfg.se_ratio > 0:  # pool, 1x1 (ReLU), 1x1 (sigmoid), broadcast product
        squeeze = max(1, int(cfg.in_chs * cfg.se_ratio))
        pooled = rw.global_pool(m, mid)
        z = rw.conv(pooled, mid, squeeze, 1, True)
        gate = rw.conv(z, squeeze, mid, 1, True)
        m = rw.binary(m, gate, out_res == 1, m.elems, add=False)
    main = m
    if cfg.block_type != "cn":  # the projection, no activation
        main = rw.conv(m, mid, cfg.out_chs, out_res, False, kind="pw")
    if cfg.skip == "none":
        return rw.ops, main.produced
    other = x  # what the main path is summed with
    if cfg.skip == "pool":
        # shapes differ: a strided average pool (ceil mode: plain), then a 1x1 projection
        if s > 1:
            rw.need(x, PLAIN)
            other = _Tensor(PLAIN, cfg.in_chs * out_res * out_res)
        if cfg.in_chs != cfg.out_chs:
            other = rw.conv(other, cfg.in_chs, cfg.out_chs, out_res, False, kind="pw")
    return rw.ops, rw.binary(main, other, True, out_elems, add=True).produced
