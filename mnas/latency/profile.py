"""What ONNX Runtime spends on each block of a network, timed inside the whole network.

ONNX Runtime's profiler (``SessionOptions.enable_profiling``) records every node it runs,
after fusion and layout transformation, with its duration. A network of
:func:`mnas.nn.build_model` exports its layers as ``/features/features.<i>/...`` (stem
``0``, then every block's layers in order, then the head's convolution) and its pool and
classifier as ``/pool/...``, ``/Flatten`` and ``/classifier/...``; the nodes the runtime
adds itself (``ReorderInput`` / ``ReorderOutput`` layout conversions) carry no module name
and are charged to the layer run just before them. Summed per block (the stem with the
first block, the head with the last, as :class:`mnas.latency.features.BlockFeatures`
counts them), one profiled network gives seven block timings *in context* — with the
cache, layout and fusion of the whole network around them — which is what
:func:`mnas.latency.fit.fit_blocks` learns from.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort

from mnas.latency.timing import bound_runner

_LAYER = re.compile(r"^/features/features\.(\d+)/")
_HEAD = ("/pool/", "/Flatten", "/classifier")
HEAD = -1
"""The layer index :func:`node_layer` gives the pool and classifier (after every layer)."""


@dataclass(frozen=True)
class NodeTime:
    """One node of the optimised graph: its name, operator, the layer it belongs to
    (:func:`node_layer`; None for a node the runtime added) and its median duration."""

    name: str
    op: str
    layer: int | None
    us: float


@dataclass(frozen=True)
class Profile:
    """A profiled network: its nodes in execution order, the median whole run (µs, the
    profiler's own clock) and the wall-clock seconds profiling took (session, runs and
    trace; 0 where unknown)."""

    nodes: list[NodeTime]
    run_us: float
    seconds: float = 0.0

    @property
    def node_us(self) -> float:
        return float(sum(n.us for n in self.nodes))


def node_layer(name: str) -> int | None:
    """The ``features`` index of an exported node's name, :data:`HEAD` for the pool and
    classifier, None for a node without a module name."""
    m = _LAYER.match(name)
    if m:
        return int(m.group(1))
    if name.startswith(_HEAD):
        return HEAD
    return None


def profile_session(
    session_options: ort.SessionOptions,
    onnx_bytes: bytes,
    input_shape: tuple[int, ...],
    runs: int = 20,
    warmup: int = 5,
) -> Profile:
    """Run the graph ``warmup + runs`` times with ONNX Runtime's profiler on and return the
    per-node medians of the last ``runs``. ``session_options`` are the evaluator's (threads,
    optimisation level); this switches profiling on in them, so they are not for timing
    afterwards.

    Raises:
        ValueError: if ``runs`` or ``warmup`` is out of range.
        RuntimeError: if the profile has no node events.
    """
    if runs < 1:
        raise ValueError(f"runs={runs}; allowed: >= 1")
    if warmup < 0:
        raise ValueError(f"warmup={warmup}; allowed: >= 0")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mnas-profile-") as tmp:
        session_options.enable_profiling = True
        session_options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(
            onnx_bytes, session_options, providers=["CPUExecutionProvider"]
        )
        run = bound_runner(session, input_shape)
        for _ in range(warmup + runs):
            run()
        path = session.end_profiling()
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    return replace(parse_profile(events, runs), seconds=time.perf_counter() - t0)


def parse_profile(events: Sequence[dict], runs: int) -> Profile:
    """Per-node median durations over the last ``runs`` runs of a profiler trace."""
    durations: dict[str, list[float]] = {}
    ops: dict[str, str] = {}
    order: list[str] = []
    run_us: list[float] = []
    for e in events:
        cat, name = e.get("cat"), e.get("name", "")
        if cat == "Session" and name == "model_run":
            run_us.append(float(e["dur"]))
        elif cat == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            if node not in durations:
                durations[node] = []
                ops[node] = e.get("args", {}).get("op_name", "?")
                order.append(node)
            durations[node].append(float(e["dur"]))
    if not order:
        raise RuntimeError("the ONNX Runtime profile holds no node timings")
    nodes = [
        NodeTime(n, ops[n], node_layer(n), float(np.median(durations[n][-runs:]))) for n in order
    ]
    return Profile(nodes, float(np.median(run_us[-runs:])) if run_us else float("nan"))


def block_times(profile: Profile, layers_per_block: Sequence[int]) -> list[float]:
    """The profile's node time (µs) summed per block: the stem (layer 0) with the first
    block, the head (the layer after the last block's, the pool and the classifier) with the
    last; a node without a module name goes with the node before it.

    Raises:
        ValueError: if a node names a layer the blocks do not have.
    """
    first = np.cumsum([1, *layers_per_block])  # features index of each block's first layer
    last_layer = int(first[-1])  # the head's convolution
    out = [0.0] * len(layers_per_block)
    block = 0
    for node in profile.nodes:
        if node.layer is not None:
            if node.layer == HEAD or node.layer == last_layer:
                block = len(layers_per_block) - 1
            elif node.layer == 0:
                block = 0
            elif 0 < node.layer < last_layer:
                block = int(np.searchsorted(first, node.layer, side="right")) - 1
            else:
                raise ValueError(
                    f"node {node.name!r} is in layer {node.layer}; the network has "
                    f"{last_layer + 1} (blocks of {list(layers_per_block)} layers)"
                )
        out[block] += node.us
    return out
