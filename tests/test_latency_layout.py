"""The NCHWc layout rewrite the latency features replay (mnas/latency/layout.py): checked
node for node against ONNX Runtime's own optimised graph on this machine, and its place in
the features and the predictor's set-up."""

import collections
import os
import random
import tempfile
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mnas.latency.features import (
    FEATURES,
    BlockFeatures,
    NetSetup,
    layer_features,
    network_features,
)
from mnas.latency.layout import BLOCKED, PLAIN, layout_ops, nchwc_block
from mnas.latency.lut import LayerConfig
from mnas.latency.predictor import net_setup, timing_setup
from mnas.latency.session import export_onnx, session_options
from mnas.nn import build_model
from mnas.space import Architecture, MnasSpace, specs_of

SPACE = MnasSpace()
NET16 = NetSetup(16, 1, 10, 0.5, 1)
# what each rule covers: a plain sum after a strided pooled shortcut and the identity chain
# after it; SE at 1x1 (blocked product) and larger (broadcast: plain); a squeezed width
# of 50 (its second convolution stays plain); conv blocks' unfused sums
CRAFTED = (
    "ir_r1_k5_s1_e6_c24,ir_r1_k5_s2_e6_c32_se0.25,ds_r3_k5_s2_c40_noskip,ds_r5_k5_s2_c48_pool,"
    "ir_r3_k5_s1_e3_c96,ds_r2_k5_s2_c160_se0.25_pool,cn_r2_k3_s1_c400_se0.25_pool",
    "cn_r2_k3_s1_c8_pool,cn_r1_k5_s2_c16,cn_r3_k3_s2_c24_pool,ds_r5_k3_s2_c64_pool,"
    "cn_r4_k5_s1_c72_noskip,ir_r4_k5_s2_e3_c120_se0.25_noskip,ir_r1_k3_s1_e6_c320_pool",
    # for a block of 16: squeezed widths of 10 (read plain), 20 (blocked) and 26 (a plain
    # convolution), global pools over 40 and 80 channels (plain at 16, blocked at 8)
    "ds_r1_k3_s1_c16,ds_r2_k3_s2_c40_se0.25,ir_r2_k3_s2_e3_c80_se0.25,ir_r2_k5_s2_e6_c104_se0.25,"
    "ds_r2_k3_s1_c112_se0.25,cn_r1_k3_s2_c160_se0.25_pool,ir_r1_k3_s1_e3_c320",
)


def rewrite(cfg: LayerConfig, incoming: str, block: int) -> tuple[list, str]:
    """:func:`layout_ops` without the blocked convolutions' work: (kind, elements) of each
    conversion and stand-alone sum, and the outgoing layout."""
    ops, out = layout_ops(cfg, incoming, block)
    return [(o.kind, o.elems) for o in ops if not o.conv], out


def runtime_counts(net: NetSetup, arch: Architecture) -> collections.Counter:
    """Node counts of ONNX Runtime's optimised graph of ``arch`` (one thread, level all)."""
    model = build_model(
        specs_of(arch),
        num_classes=net.num_classes,
        in_channels=net.in_channels,
        width_mult=net.width_mult,
        stem_stride=net.stem_stride,
    ).eval()
    onnx_bytes = export_onnx(model, net.input_size, net.in_channels)
    options = session_options(1, "all")
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return collections.Counter(n.op_type for n in graph.node)


@pytest.mark.skipif(nchwc_block() == 0, reason="ONNX Runtime does no NCHWc rewrite here")
@pytest.mark.parametrize("size", [16, 32])
def test_replayed_layout_matches_the_runtimes_optimised_graph(size):
    """On this machine's block: 8 (AVX2) or 16 (AVX-512); the two were each checked on a
    machine that has it (400 random networks each)."""
    net = NET16 if size == 16 else NetSetup(32, 3, 10, 0.5, 1)
    net = replace(net, nchwc_block=nchwc_block())
    feats = BlockFeatures(net, SPACE)
    rng = random.Random(size)
    archs = [Architecture.from_blocks(key) for key in CRAFTED]
    archs += [SPACE.sample(rng) for _ in range(6)]
    seen = collections.Counter()
    for arch in archs:
        counts = runtime_counts(net, arch)
        x = feats(arch)
        reorders = counts["ReorderInput"] + counts["ReorderOutput"]
        assert x[FEATURES.index("reorder_nodes")] == reorders, arch.key
        assert x[FEATURES.index("addnode_nodes")] == counts["Add"], arch.key
        seen.update(k for k in ("Add", "FusedConv", "ReorderInput", "AveragePool") if counts[k])
    # the cases the rules are about did occur
    assert seen["Add"] >= 3 and seen["FusedConv"] >= 1 and seen["AveragePool"] >= 2


def test_without_a_modelled_block_every_sum_is_a_node_and_nothing_is_converted():
    cfg = LayerConfig("layer", 16, 16, 8, 1, "ir", 3, 6, 0.25, "identity")
    ops, out = rewrite(cfg, BLOCKED, 0)
    assert out == PLAIN and ops == [("addnode", 16 * 8 * 8)]
    # AVX2: the broadcast SE product goes plain and back, the sum with a blocked input fuses
    # (the squeezed 4 channels read plain, the map and the gate out, the product back in)
    ops, out = rewrite(cfg, BLOCKED, 8)
    mid = 16 * 6 * 8 * 8
    assert out == BLOCKED
    assert ops == [
        ("reorder", 4),
        ("reorder", mid),
        ("reorder", 96),
        ("reorder", mid),
    ]
    with pytest.raises(ValueError, match=r"nchwc block 4; allowed: 0, 8, 16"):
        layout_ops(cfg, BLOCKED, 4)


def test_a_block_of_16_changes_which_convolutions_and_pools_stay_blocked():
    # SE over 24 channels squeezed to 6, at 1x1 (the product may stay blocked)
    cfg = LayerConfig("layer", 24, 24, 1, 1, "ds", 3, 1.0, 0.25, "identity")
    # block 8: all blocked; the squeezed 6 channels are read plain by the second 1x1
    ops, out = rewrite(cfg, BLOCKED, 8)
    assert out == BLOCKED and ops == [("reorder", 6)]
    # block 16: the global pool over 24 channels (not whole blocks) reads the map plain,
    # so the first 1x1 reads plain input converted back to blocked; the product's inputs
    # are then both blocked-produced: it stays blocked and the sum fuses
    ops, out = rewrite(cfg, BLOCKED, 16)
    assert out == BLOCKED
    assert ops == [("reorder", 24), ("reorder", 24), ("reorder", 6)]
    # input widths in fours from a block up are read blocked, others make a plain conv
    wide = LayerConfig("layer", 80, 80, 1, 1, "ds", 3, 1.0, 0.25, "none")  # squeeze 20
    assert rewrite(wide, BLOCKED, 16) == ([], BLOCKED)
    odd = LayerConfig("layer", 104, 104, 1, 1, "ir", 3, 6.0, 0.25, "none")  # squeeze 26
    ops, out = rewrite(odd, BLOCKED, 16)
    # the squeezed 26 go plain into a plain convolution, so its gate and the expanded map
    # (624 channels) meet plain, and the product goes back to blocked for the projection
    assert out == BLOCKED and [e for _, e in ops] == [26, 624, 624]
    # fewer input channels than a block: read plain (8 < 16), whole blocks at 8
    narrow = LayerConfig("layer", 8, 16, 4, 1, "cn", 3, 1.0, 0.0, "none")
    assert rewrite(narrow, BLOCKED, 16) == ([("reorder", 8 * 4 * 4)], BLOCKED)
    assert rewrite(narrow, BLOCKED, 8) == ([], BLOCKED)


def test_blocked_convolutions_count_their_work_by_filter_set():
    # an inverted bottleneck 40 -> 80 (x6: 240 wide) at 4x4, block 16: the 1x1 expansion
    # reads 48 padded input channels into 15 output blocks (3 passes of 4, one of 3), the
    # projection 240 into 5 blocks (one pass of 4, one of 1); the depthwise one is not
    # counted here (its own features)
    cfg = LayerConfig("layer", 40, 80, 4, 1, "ir", 3, 6.0, 0.0, "none")
    ops, _ = layout_ops(cfg, BLOCKED, 16)
    work = [(o.conv, o.kind, o.elems) for o in ops if o.conv]
    px = 4 * 4
    assert work == [
        ("pw", "set4", px * 48 * 16 * 4 * 3),
        ("pw", "set3", px * 48 * 16 * 3),
        ("pw", "set4", px * 240 * 16 * 4),
        ("pw", "set1", px * 240 * 16 * 1),
    ]
    # a full convolution reading fewer channels than a block runs on its plain input
    narrow = LayerConfig("layer", 8, 24, 8, 2, "cn", 5, 1.0, 0.0, "none")
    ops, _ = layout_ops(narrow, BLOCKED, 16)
    assert [(o.conv, o.kind, o.elems) for o in ops if o.conv] == [
        ("dense5", "nchw", 4 * 4 * 25 * 8 * 32)
    ]
    # the features: these multiply-adds in millions; without a block nothing of it
    x, _ = layer_features(cfg, BLOCKED, 16)
    assert x[FEATURES.index("pw_set4")] == pytest.approx((px * 48 * 16 * 12 + px * 240 * 64) / 1e6)
    assert x[FEATURES.index("pw_set1")] == pytest.approx(px * 240 * 16 / 1e6)
    x, _ = layer_features(cfg, PLAIN, 0)
    assert not x[[FEATURES.index(f"pw_set{n}") for n in (1, 2, 3, 4)]].any()


def test_an_identity_chain_after_a_plain_sum_stays_plain():
    after_pool = LayerConfig("layer", 24, 24, 4, 2, "ds", 5, 1.0, 0.0, "pool")
    ops, out = rewrite(after_pool, BLOCKED, 8)
    assert out == PLAIN and sum(k == "addnode" for k, _ in ops) == 1
    chained = LayerConfig("layer", 24, 24, 2, 1, "ds", 5, 1.0, 0.0, "identity")
    ops, out = rewrite(chained, PLAIN, 8)
    # its convolution's output goes plain for the sum, the sum back to blocked for the next
    assert out == PLAIN and [k for k, _ in ops] == ["reorder", "reorder", "addnode"]
    ops, out = rewrite(chained, BLOCKED, 8)  # the same layer after a blocked producer
    assert out == BLOCKED and ops == []


def test_block_features_chain_the_layout_across_blocks():
    net = replace(NET16, nchwc_block=8)
    feats = BlockFeatures(net, SPACE)
    rng = random.Random(5)
    for _ in range(30):
        arch = SPACE.sample(rng)
        whole = network_features(net.layers(specs_of(arch)), 8)
        assert np.allclose(feats(arch), whole)
        assert np.allclose(feats.block_vectors(Architecture.from_blocks(arch.key)).sum(0), whole)
    # the layout features change what is counted (with block 0 no conversions at all)
    plain = BlockFeatures(NET16, SPACE)
    x = np.array([plain(SPACE.sample(rng)) for _ in range(20)])
    assert not x[:, FEATURES.index("reorder_nodes")].any()


def test_the_predictor_setup_names_the_block_and_older_setups_read_as_none():
    class Evaluator:
        graph_optimization = "all"
        reference = False
        references = ("auto",)

        def setup(self):
            return {
                "input_shape": [1, 1, 16, 16],
                "num_classes": 10,
                "width_mult": 0.5,
                "stem_stride": 1,
            }

    ev = Evaluator()
    assert timing_setup(ev)["nchwc_block"] == nchwc_block()
    ev.graph_optimization = "basic"  # no layout rewrite at this level
    assert "nchwc_block" not in timing_setup(ev)
    assert net_setup(ev.setup()).nchwc_block == 0
    assert net_setup({**ev.setup(), "nchwc_block": 8}) == replace(NET16, nchwc_block=8)
