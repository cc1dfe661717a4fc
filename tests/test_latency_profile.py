"""ONNX Runtime's per-node profile, charged to the network's blocks (issue 19)."""

from __future__ import annotations

import random

import pytest

from mnas.latency import OrtLatency
from mnas.latency.profile import (
    HEAD,
    NodeTime,
    Profile,
    block_times,
    node_layer,
    parse_profile,
    profile_session,
)
from mnas.latency.session import session_options
from mnas.space import MnasSpace, specs_of


def _event(name: str, dur: float, op: str = "Conv") -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}


def test_node_names_give_their_layer():
    assert node_layer("/features/features.12/body/body.0/body.0.2/Relu_output_0_nchwc") == 12
    assert node_layer("/features/features.0/features.0.2/Relu_output_0_nchwc") == 0
    assert node_layer("/pool/GlobalAveragePool_output_0_nchwc") == HEAD
    assert node_layer("/classifier/classifier.1/Gemm") == HEAD
    assert node_layer("ReorderOutput_token_137") is None


def test_parse_profile_takes_medians_of_the_last_runs():
    events = [{"cat": "Session", "name": "model_run", "dur": d} for d in (900, 100, 120, 110)]
    for durs in ((500, 50), (10, 1), (11, 2), (12, 3)):  # the first run is a warm-up
        events.append(_event("/features/features.0/Conv", durs[0]))
        events.append(_event("ReorderOutput_token_1", durs[1], "ReorderOutput"))
    p = parse_profile(events, runs=3)
    assert [n.name for n in p.nodes] == ["/features/features.0/Conv", "ReorderOutput_token_1"]
    assert [n.op for n in p.nodes] == ["Conv", "ReorderOutput"]
    assert [n.layer for n in p.nodes] == [0, None]
    assert [n.us for n in p.nodes] == [11.0, 2.0]
    assert p.run_us == 110.0 and p.node_us == 13.0
    with pytest.raises(RuntimeError, match="no node timings"):
        parse_profile([{"cat": "Session", "name": "model_run", "dur": 1}], runs=1)


def test_block_times_charge_stem_head_and_runtime_nodes():
    # blocks of 1, 2 and 1 layers: features.0 stem, 1 | 2 3 | 4, head conv features.5
    nodes = [
        NodeTime("/features/features.0/Conv", "Conv", 0, 1.0),
        NodeTime("/features/features.1/Conv", "Conv", 1, 2.0),
        NodeTime("ReorderInput_token_3", "ReorderInput", None, 4.0),  # with layer 1
        NodeTime("/features/features.2/Conv", "Conv", 2, 8.0),
        NodeTime("/features/features.3/Add", "Add", 3, 16.0),
        NodeTime("/features/features.4/Conv", "Conv", 4, 32.0),
        NodeTime("/features/features.5/Conv", "Conv", 5, 64.0),
        NodeTime("/pool/GlobalAveragePool", "GlobalAveragePool", HEAD, 128.0),
    ]
    p = Profile(nodes, run_us=300.0)
    assert block_times(p, [1, 2, 1]) == [7.0, 24.0, 224.0]
    assert sum(block_times(p, [1, 2, 1])) == p.node_us
    with pytest.raises(ValueError, match=r"'/features/features.5/Conv' is in layer 5"):
        block_times(p, [1, 1, 1])


def test_profile_refuses_a_bad_run_count():
    with pytest.raises(ValueError, match="runs=0"):
        profile_session(session_options(), b"", (1, 1, 8, 8), runs=0)


def test_a_real_profile_covers_every_block_of_the_network():
    ev = OrtLatency(input_size=16, in_channels=1, num_classes=10, width_mult=0.5, stem_stride=1)
    space = MnasSpace()
    for seed in range(3):
        arch = space.sample(random.Random(seed))
        stats, p = ev.measure_profiled(arch, runs=3)
        assert stats.median_ms > 0 and stats.source == "measured"
        repeats = [s.repeats for s in specs_of(arch)]
        layers = {n.layer for n in p.nodes if n.layer not in (None, HEAD)}
        # every layer of the network, the stem and the head's convolution, ran and was named
        assert layers == set(range(sum(repeats) + 2))
        assert any(n.layer == HEAD for n in p.nodes)
        blocks = block_times(p, repeats)
        assert len(blocks) == 7 and all(b > 0 for b in blocks)
        assert sum(blocks) == pytest.approx(p.node_us)
        # the nodes are what the run spends most of its time in
        assert 0.3 * p.run_us < p.node_us <= p.run_us
