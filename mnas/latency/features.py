"""What a latency predictor sees of a network: per-operator work, counted analytically.

Every layer of :mod:`mnas.nn` is written out as the operators ONNX Runtime runs for it
(convolutions with their fused activation, the squeeze-and-excitation's pool, two small
convolutions, sigmoid and product, the shortcut's pool, projection and sum, the head), and
each operator adds to a few *features* of its kind: multiply-adds, elements read and
written, weights, and one per operator (the runtime's fixed cost per node, which dominates
sub-millisecond networks). A network's features are the sum over its layers, so they are
additive over blocks: :class:`BlockFeatures` precomputes them per (block, its six
decisions, the previous block's width) and a network is then seven vector additions.

On x86 ONNX Runtime rewrites the graph into a blocked channel layout (NCHWc) where it
can, and converts back and forth around what it cannot (a broadcast product, an average
pool, a sum with a tensor already in plain layout): :func:`layout_ops` replays that
rewrite layer by layer for AVX2's block of 8 channels and AVX-512's of 16 (each checked
node for node against the optimised graphs of 400 random networks), and its conversions
(``reorder``) and the sums the runtime keeps as nodes of their own (``addnode``; the others
are fused into a convolution) are features too, as are the blocked convolutions'
multiply-adds as the runtime runs them: padded to whole channel blocks and split by how many
filter blocks each pass over the input computes (``dense3_set1`` ... ``pw_nchw``). Which
layout a layer's input arrives in depends on the layers before it, so the block vectors are
precomputed per incoming layout as well.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torchvision.models._utils import _make_divisible

from mnas.latency.layout import BLOCKED, CONV_WORK, PLAIN, conv_kind, layout_ops
from mnas.latency.lut import LayerConfig, block_layers, network_layers
from mnas.nn import HEAD_CHS, STEM_CHS
from mnas.space import Architecture, BlockSpec, specs_of

# Operator kinds; each has the same five features (see :data:`FEATURES`).
KINDS = ("dense3", "dense5", "pw", "dw3", "dw5", "se", "add", "pool", "fc", "reorder", "addnode")
PER_KIND = ("macs", "read", "write", "weights", "nodes")
# the blocked convolutions' multiply-adds as the runtime runs them (layout.CONV_WORK)
CONV_KINDS = ("dense3", "dense5", "pw")
FEATURES = tuple(f"{k}_{f}" for k in KINDS for f in PER_KIND) + tuple(
    f"{k}_{w}" for k in CONV_KINDS for w in CONV_WORK
)
_INDEX = {name: i for i, name in enumerate(FEATURES)}
# Counts are in millions (MACs, elements, weights) so that coefficients are ms per million.
_M = 1e-6


def _conv_out(res: int, stride: int) -> int:
    return (res - 1) // stride + 1


@dataclass(frozen=True)
class _Op:
    kind: str
    macs: float
    read: float
    write: float
    weights: float


def _conv(in_chs: int, out_chs: int, k: int, res: int, stride: int, groups: int = 1) -> _Op:
    out_res = _conv_out(res, stride)
    kind = conv_kind(k, groups)
    weights = out_chs * (in_chs // groups) * k * k
    macs = out_res * out_res * weights
    return _Op(kind, macs, res * res * in_chs + weights, out_res * out_res * out_chs, weights)


def _se(chs: int, squeeze: int, res: int) -> _Op:
    # pool over the map, two 1x1 convolutions on a 1x1 map, sigmoid, product with the map
    elems = res * res * chs
    weights = 2 * chs * squeeze + chs + squeeze
    return _Op("se", elems + 2 * chs * squeeze, 2 * elems + weights, elems, weights)


def layer_ops(cfg: LayerConfig) -> list[_Op]:
    """The operators ONNX Runtime runs for one layer (batch norm folded into convolutions,
    activations fused into them)."""
    res, s = cfg.res, cfg.stride
    if cfg.kind == "stem":
        return [_conv(cfg.in_chs, cfg.out_chs, cfg.kernel, res, s)]
    if cfg.kind == "head":
        elems = res * res * cfg.out_chs
        fc = cfg.out_chs * cfg.num_classes
        return [
            _conv(cfg.in_chs, cfg.out_chs, 1, res, 1),
            _Op("pool", elems, elems, cfg.out_chs, 0.0),
            _Op("fc", fc, fc + cfg.out_chs, cfg.num_classes, fc),
        ]
    ops: list[_Op] = []
    squeeze = max(1, int(cfg.in_chs * cfg.se_ratio))
    out_res = _conv_out(res, s)
    if cfg.block_type == "cn":
        ops.append(_conv(cfg.in_chs, cfg.out_chs, cfg.kernel, res, s))
        if cfg.se_ratio > 0:
            ops.append(_se(cfg.out_chs, squeeze, out_res))
    else:
        mid = cfg.in_chs if cfg.block_type == "ds" else int(round(cfg.in_chs * cfg.exp_ratio))
        if mid != cfg.in_chs:
            ops.append(_conv(cfg.in_chs, mid, 1, res, 1))
        ops.append(_conv(mid, mid, cfg.kernel, res, s, groups=mid))
        if cfg.se_ratio > 0:
            ops.append(_se(mid, squeeze, out_res))
        ops.append(_conv(mid, cfg.out_chs, 1, out_res, 1))
    out_elems = out_res * out_res * cfg.out_chs
    if cfg.skip == "pool":
        if s > 1:
            pooled = out_res * out_res * cfg.in_chs
            ops.append(_Op("pool", res * res * cfg.in_chs, res * res * cfg.in_chs, pooled, 0.0))
        if cfg.in_chs != cfg.out_chs:
            ops.append(_conv(cfg.in_chs, cfg.out_chs, 1, out_res, 1))
    if cfg.skip != "none":
        ops.append(_Op("add", out_elems, 2 * out_elems, out_elems, 0.0))
    return ops


def layer_features(
    cfg: LayerConfig, incoming: str = PLAIN, block: int = 0
) -> tuple[np.ndarray, str]:
    """The feature vector (:data:`FEATURES`) of one layer whose input was produced in
    layout ``incoming``, under the runtime's NCHWc ``block`` (:mod:`mnas.latency.layout`),
    and the layout its output is produced in."""
    x = np.zeros(len(FEATURES))
    for op in layer_ops(cfg):
        x[_INDEX[f"{op.kind}_macs"]] += op.macs * _M
        x[_INDEX[f"{op.kind}_read"]] += op.read * _M
        x[_INDEX[f"{op.kind}_write"]] += op.write * _M
        x[_INDEX[f"{op.kind}_weights"]] += op.weights * _M
        x[_INDEX[f"{op.kind}_nodes"]] += 1.0
    extra, outgoing = layout_ops(cfg, incoming, block)
    for op in extra:
        if op.conv:
            x[_INDEX[f"{op.conv}_{op.kind}"]] += op.elems * _M
            continue
        reads = 2 if op.kind == "addnode" else 1
        x[_INDEX[f"{op.kind}_read"]] += reads * op.elems * _M
        x[_INDEX[f"{op.kind}_write"]] += op.elems * _M
        x[_INDEX[f"{op.kind}_nodes"]] += 1.0
    return x, outgoing


def network_features(layers: Sequence[LayerConfig], block: int = 0) -> np.ndarray:
    """The feature vector of a network: the sum over its layers (the stem first, each
    layer's input in the layout the one before produced)."""
    total, layout = np.zeros(len(FEATURES)), PLAIN
    for cfg in layers:
        x, layout = layer_features(cfg, layout, block)
        total += x
    return total


@dataclass(frozen=True)
class NetSetup:
    """The network setup features are counted for (as :func:`mnas.nn.build_model` takes it)."""

    input_size: int
    in_channels: int
    num_classes: int
    width_mult: float
    stem_stride: int
    nchwc_block: int = 0
    """The runtime's NCHWc block (:func:`mnas.latency.layout.nchwc_block`; 0: no layout
    rewrite modelled)."""

    def layers(self, specs: Sequence[BlockSpec]) -> list[LayerConfig]:
        return network_layers(
            specs,
            self.input_size,
            self.in_channels,
            self.num_classes,
            self.width_mult,
            self.stem_stride,
        )


# block vectors per (set-up, space): every predictor of one set-up in a process shares them
_PRECOMPUTED: dict[tuple, tuple[dict[tuple, int], np.ndarray]] = {}


class BlockFeatures:
    """Network features as a sum of precomputed per-block vectors.

    For an architecture of :class:`mnas.space.MnasSpace` (tokens, six per block) a block's
    layers depend only on its own decisions, the previous block's ``filters`` decision and
    the fixed stride chain, so every block vector the space can produce is computed once,
    up front (about 8,000 for the MnasNet space, from some 2,500 distinct layers; twice
    that with a modelled NCHWc block, once per layout the block's input can arrive in);
    the first block's vector holds the stem, the last block's the head. Architectures
    without tokens (block strings) are counted layer by layer.
    """

    def __init__(self, setup: NetSetup, space) -> None:
        self.setup = setup
        self.space = space
        self._per_block = len(space.DECISION_NAMES)
        self._filters = space.DECISION_NAMES.index("filters")
        key = (setup, space.name, tuple(d.choices for d in space.decisions))
        table = _PRECOMPUTED.get(key)
        if table is None:
            vectors = self._precompute()
            index = {k: i for i, k in enumerate(vectors)}
            table = _PRECOMPUTED[key] = (
                index,
                np.array([v for v, _ in vectors.values()]),
                [layout for _, layout in vectors.values()],
            )
        #: block key (block, previous width, decisions, incoming layout) -> row of
        #: :attr:`matrix`; ``matrix``: every block vector, one per row; ``outgoing``: the
        #: layout each row's block produces its output in
        self.index, self.matrix, self.outgoing = table

    def rows(self, arch: Architecture) -> list[int] | None:
        """The rows of :attr:`matrix` that sum to ``arch``'s features, first block first;
        None for an architecture without this space's tokens."""
        t = arch.tokens
        if arch.space != self.space.name or len(t) != len(self.space.decisions):
            return None
        index, k, f, outgoing = self.index, self._per_block, self._filters, self.outgoing
        rows = [index[(0, -1, t[0:k], PLAIN)]]
        for b in range(k, len(t), k):
            rows.append(index[(b // k, t[b - k + f], t[b : b + k], outgoing[rows[-1]])])
        return rows

    def __call__(self, arch: Architecture) -> np.ndarray:
        rows = self.rows(arch)
        if rows is None:
            return network_features(self.setup.layers(specs_of(arch)), self.setup.nchwc_block)
        return self.matrix.take(rows, axis=0).sum(axis=0)

    def block_vectors(self, arch: Architecture) -> np.ndarray:
        """One feature vector per block (blocks x features; the stem counted with the
        first block, the head with the last), for any architecture; they sum to
        ``self(arch)``."""
        rows = self.rows(arch)
        if rows is not None:
            return self.matrix.take(rows, axis=0)
        specs = specs_of(arch)
        layers = self.setup.layers(specs)
        out, start, layout = [], 1, PLAIN
        for i, spec in enumerate(specs):
            block = layers[start : start + spec.repeats]
            start += spec.repeats
            if i == 0:
                block = [layers[0], *block]
            if i == len(specs) - 1:
                block = [*block, layers[-1]]
            x, layout = self._block(block, layout, {})
            out.append(x)
        return np.array(out)

    def _block(
        self, layers: Sequence[LayerConfig], layout: str, cache: dict
    ) -> tuple[np.ndarray, str]:
        """A block's vector, its input arriving in ``layout``, and its output's layout."""
        total = np.zeros(len(FEATURES))
        for cfg in layers:
            hit = cache.get((cfg, layout))
            if hit is None:
                hit = cache[(cfg, layout)] = layer_features(cfg, layout, self.setup.nchwc_block)
            total += hit[0]
            layout = hit[1]
        return total, layout

    def _precompute(self) -> dict[tuple, tuple[np.ndarray, str]]:
        s, space = self.setup, self.space
        stem_chs = _make_divisible(STEM_CHS * s.width_mult, 8)
        head_chs = _make_divisible(HEAD_CHS * max(1.0, s.width_mult), 8)
        stem = LayerConfig("stem", s.in_channels, stem_chs, s.input_size, s.stem_stride, kernel=3)
        per_layer: dict[tuple, tuple[np.ndarray, str]] = {}
        incoming = (BLOCKED, PLAIN) if s.nchwc_block else (PLAIN,)
        blocks = sorted({d.block for d in space.decisions})
        by_block = [[d for d in space.decisions if d.block == b] for b in blocks]
        filters = [next(d for d in ds if d.name == "filters") for ds in by_block]
        res = (s.input_size - 1) // s.stem_stride + 1
        out: dict[tuple, tuple[np.ndarray, str]] = {}
        for b, decisions in enumerate(by_block):
            ranges = [range(len(d.choices)) for d in decisions]
            prevs = [-1] if b == 0 else range(len(filters[b - 1].choices))
            for prev in prevs:
                if b == 0:
                    in_chs = stem_chs
                else:
                    prev_tokens = [0] * len(decisions)
                    prev_tokens[self._filters] = prev
                    prev_spec = space.block_spec(b - 1, prev_tokens)
                    in_chs = _make_divisible(prev_spec.out_chs * s.width_mult, 8)
                for tokens in itertools.product(*ranges):
                    spec = space.block_spec(b, tokens)
                    layers, out_chs, out_res = block_layers(spec, in_chs, res, s.width_mult)
                    if b == 0:
                        layers = [stem, *layers]
                    if b == len(by_block) - 1:
                        head = LayerConfig(
                            "head", out_chs, head_chs, out_res, num_classes=s.num_classes
                        )
                        layers = [*layers, head]
                    for layout in [PLAIN] if b == 0 else incoming:
                        out[(b, prev, tokens, layout)] = self._block(layers, layout, per_layer)
            res = (res - 1) // space.strides[b] + 1
        return out
