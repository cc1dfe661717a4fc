"""A trained network measured and written out: ``model.pt``, ``model.onnx``, ``metrics.json``.

What :func:`finalize` produces in its output folder:

- ``metrics.json``: ``params``, ``macs``, ``test_accuracy`` (0-1), ``latency_ms`` and more;
- ``model.pt``: ``{"state_dict", "arch", "build_kwargs", "input_size", "mean", "std", ...}``,
  rebuilt by :func:`load_checkpoint`;
- ``model.onnx``: the network in eval mode (BatchNorm folded), input ``input`` of shape
  ``(export_batch_size, C, H, W)`` normalised with ``mean``/``std``, output ``output`` (logits).
  Before it is accepted, its outputs on real test images are compared with PyTorch's; the
  largest absolute difference is recorded as ``onnx_max_abs_diff`` and a difference above the
  tolerance raises :class:`~mnas.deploy.onnx_check.ExportMismatchError` (after the files are
  written, for inspection).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnas.data import DatasetSplits
from mnas.deploy.onnx_check import ExportMismatchError, ExportSettings, check_onnx
from mnas.latency import (
    LatencySettings,
    LatencyStats,
    export_onnx,
    machine_description,
    measured_ort_latency,
)
from mnas.latency.eager import time_torch
from mnas.nn import build_model, model_stats
from mnas.space import Architecture

logger = logging.getLogger(__name__)


def finalize(
    model: nn.Module,
    data: DatasetSplits,
    out_dir: str | os.PathLike,
    name: str,
    checkpoint: dict,
    metrics: dict,
    latency: LatencySettings,
    export: ExportSettings = ExportSettings(),
    batch_latency: int | None = None,
) -> dict:
    """Measure a trained model and write ``model.pt``, ``model.onnx`` and ``metrics.json``.

    Adds to ``metrics``: ``params``, ``macs``, ``latency_ms`` (ORT median at
    ``latency.batch_size`` on the scale named by ``latency_scale``: ``drift-corrected`` by
    default, the search's, with ``latency_nominal_ms`` its nominal), ``latency_raw_ms`` (the
    same runs uncorrected), ``latency_clock``, ``latency`` (the full statistics, with the
    confidence interval ``ci_rel``), ``latency_torch_raw_ms`` (eager PyTorch, same threads and
    clock; there is no drift correction for it), the ONNX check (``onnx_max_abs_diff``,
    ...), and with ``batch_latency`` also ``latency_batch_ms`` / ``latency_batch_raw_ms`` /
    ``latency_torch_batch_raw_ms`` (one batch of that many images on ORT / PyTorch). The
    reference network of the drift correction is built from ``checkpoint["build_kwargs"]``
    (``num_classes``, ``width_mult``, ``stem_stride``), as the search built it. When
    ``metrics`` carries the search's nominal and it differs from this one, the two latencies
    are on different scales and a warning says so.

    Args:
        model: the trained network (moved to CPU here).
        data: its dataset (test images for the ONNX check; size, channels, mean/std).
        out_dir: folder for the three files (created).
        name: what the log and errors call it.
        checkpoint: extra entries of ``model.pt`` (``arch``, ``build_kwargs``, ...).
        metrics: the metrics so far (test accuracy, training numbers); not modified.
        latency: timing settings.
        export: the ONNX file's batch and the tolerances of its check.
        batch_latency: also time a batch of this many images.

    Returns:
        The complete metrics (as written to ``metrics.json``).

    Raises:
        ExportMismatchError: the ONNX outputs are not within tolerance (the files are
            written first, for inspection).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    size, chans = data.image_size, data.in_channels
    stats = model_stats(model, size, chans)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "input_size": size,
            "in_channels": chans,
            "mean": list(data.mean),
            "std": list(data.std),
            **checkpoint,
        },
        out / "model.pt",
    )
    onnx_bytes = export_onnx(model, size, chans, export.batch_size)
    (out / "model.onnx").write_bytes(onnx_bytes)
    check_n = max(export.check_images, export.batch_size)
    check = check_onnx(model, onnx_bytes, data.test_x[:check_n], data.mean, data.std, export)
    build = checkpoint.get("build_kwargs", {})
    net = {k: build[k] for k in ("num_classes", "width_mult", "stem_stride") if k in build}
    evaluator = measured_ort_latency(latency, size, chans, **net)
    ort_stats = evaluator.measure_model(model, name)
    shape = (latency.batch_size, chans, size, size)
    torch_stats = time_torch(model, shape, latency.threads, latency.plan, evaluator.clock)
    _check_same_scale(name, metrics.get("search_latency_nominal_ms"), ort_stats)
    result = {
        **metrics,
        "params": stats.params,
        "macs": stats.macs,
        "latency_ms": ort_stats.median_ms,
        "latency_scale": ort_stats.scale,
        "latency_nominal_ms": ort_stats.nominal_ms,
        "latency_raw_ms": ort_stats.raw_median_ms,
        "latency_clock": ort_stats.clock,
        "latency": ort_stats.to_dict(),
        "latency_torch_raw_ms": torch_stats.median_ms,
        "latency_torch": torch_stats.to_dict(),
        "latency_threads": latency.threads,
        "latency_batch_size": latency.batch_size,
        "onnx_max_abs_diff": check.max_abs_diff,
        "onnx_max_abs_logit": check.max_abs_logit,
        "onnx_ok": check.ok,
        "onnx_checked_images": check.images,
        "onnx_atol": export.atol,
        "onnx_rtol": export.rtol,
        "onnx_batch_size": export.batch_size,
        "machine": machine_description(),
    }
    if batch_latency is not None:
        batch_ev = measured_ort_latency(latency, size, chans, batch_latency, **net)
        batch_ort = batch_ev.measure_model(model, name)
        shape = (batch_latency, chans, size, size)
        batch_torch = time_torch(model, shape, latency.threads, latency.plan, evaluator.clock)
        result.update(
            batch=batch_latency,
            latency_batch_ms=batch_ort.median_ms,
            latency_batch_raw_ms=batch_ort.raw_median_ms,
            latency_torch_batch_raw_ms=batch_torch.median_ms,
        )
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=json_default) + "\n")
    logger.info(
        "%s: test accuracy %.4f, %s params, %.1fM MACs, ORT %.3f ms, ONNX diff %.2e -> %s",
        name,
        result.get("test_accuracy", math.nan),
        f"{stats.params:,}",
        stats.macs / 1e6,
        ort_stats.median_ms,
        check.max_abs_diff,
        out,
    )
    if not check.ok:
        raise ExportMismatchError(
            f"{name}: ONNX outputs differ from PyTorch by up to {check.max_abs_diff:.3g} "
            f"(logits up to {check.max_abs_logit:.3g}), beyond atol={export.atol} + "
            f"rtol={export.rtol} * |logit| on {check.images} test images ({out / 'model.onnx'})"
        )
    return result


def json_default(value: object) -> object:
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return str(value)


def _check_same_scale(name: str, search_nominal: float | None, stats: LatencyStats) -> None:
    if search_nominal is None or stats.nominal_ms is None:
        return
    if not math.isclose(search_nominal, stats.nominal_ms, rel_tol=1e-9):
        logger.warning(
            "%s: the search's latency was drift-corrected with nominal %.4f ms, this one with "
            "%.4f ms (another machine, setup or cache): search_latency_ms and latency_ms are "
            "on different scales",
            name,
            search_nominal,
            stats.nominal_ms,
        )


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild a network saved by :func:`retrain` (``model.pt``), in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "arch" not in ckpt or "build_kwargs" not in ckpt:
        raise ValueError(f"{path} is not a retrain checkpoint (needs 'arch' and 'build_kwargs')")
    model = build_model(Architecture.from_dict(ckpt["arch"]), **ckpt["build_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
