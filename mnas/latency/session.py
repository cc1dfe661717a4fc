"""ONNX export in memory, ONNX Runtime CPU sessions and the machine's fingerprint: what
every ONNX Runtime timing in :mod:`mnas.latency` shares (:mod:`mnas.latency.ort` times with
them; see docs/latency.md)."""

from __future__ import annotations

import functools
import io
import json
import os
import platform
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import onnxruntime as ort
import torch
from torch import nn

from mnas.latency.cache import cache_key
from mnas.latency.timing import positive_int

OPSET = 17
# Bump when export settings change the graph, so old cache entries stop matching.
EXPORT_FORMAT = 1


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    # Tracing runs a real forward pass; with torch's default pool on a busy machine that
    # pass is several times slower than the whole ONNX measurement.
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def export_onnx(model: nn.Module, input_size: int, in_channels: int, batch_size: int = 1) -> bytes:
    """Export ``model`` (in eval mode) to ONNX bytes for a square ``input_size`` image batch.

    The input is named ``input`` and the output ``output``; shapes are static. The model's
    train/eval mode is restored afterwards.

    Raises:
        ValueError: on a non-positive size, channel count or batch.
        Exception: whatever ``torch.onnx.export`` raises for a model it cannot export.
    """
    positive_int("input_size", input_size)
    positive_int("in_channels", in_channels)
    positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    x = torch.zeros(batch_size, in_channels, input_size, input_size)
    buf = io.BytesIO()
    try:
        with torch_threads(1), torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter announces its deprecation on every call.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (x,),
                buf,
                dynamo=False,
                opset_version=OPSET,
                input_names=["input"],
                output_names=["output"],
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    return buf.getvalue()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "Hardware", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_description() -> dict:
    """What the fingerprint is made of: OS, architecture, CPU model, logical CPU count."""
    return {
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
    }


@functools.cache
def machine_fingerprint() -> str:
    """12 hex digits identifying the kind of machine (not the host): two machines with the
    same OS, architecture, CPU model and CPU count share cached latencies."""
    text = json.dumps(machine_description(), sort_keys=True)
    return cache_key({"machine": text})[:12]


GRAPH_OPTIMIZATION = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
"""ONNX Runtime's graph optimisation levels by the name the settings use (``all`` is ORT's
default and the search's; a device runtime that fuses less is closer to ``basic``)."""


def check_graph_optimization(level: str) -> str:
    if level not in GRAPH_OPTIMIZATION:
        raise ValueError(f"graph_optimization={level!r}; allowed: {', '.join(GRAPH_OPTIMIZATION)}")
    return level


def make_session(
    onnx_bytes: bytes, threads: int = 1, graph_optimization: str = "all"
) -> ort.InferenceSession:
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, one inter-op thread,
    sequential execution, graph optimisations at ``graph_optimization``
    (:data:`GRAPH_OPTIMIZATION`; all of them by default)."""
    so = session_options(threads, graph_optimization)
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def session_options(threads: int = 1, graph_optimization: str = "all") -> ort.SessionOptions:
    """The options of :func:`make_session`."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = GRAPH_OPTIMIZATION[check_graph_optimization(graph_optimization)]
    so.log_severity_level = 3
    return so
