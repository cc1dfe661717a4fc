"""Lookup-table latency: per-layer timings summed over a network, then calibrated.

Building a table (``scripts/latency_table.py`` or :func:`build_table`):

1. :func:`space_layer_configs` lists every distinct layer the space can produce at the
   resolution it sees: (op, kernel, expansion, SE, effective shortcut, in/out channels,
   stride, input resolution), plus the stem and each possible head. A block's layers
   depend only on its own decisions, the previous block's width and the (fixed) stride
   chain, so this is a few thousand configurations, not 432^7 networks;
2. each configuration is exported alone as a tiny ONNX graph and timed like a whole
   network; the per-call overhead (timed on a trivial graph) is subtracted;
3. a handful of whole networks are measured and the sum is calibrated against them: the
   plain sum, ``b * sum``, ``a + b * sum`` or ``a + b * sum + c * Mparams``, whichever
   predicts left-out networks best (:func:`fit_calibration`); the fit absorbs what summing
   misses (fusion across layers, cache effects). It is constrained to predict at least the
   call overhead for the cheapest network the table can describe (:func:`table_floor`), so
   no network in the table's range is predicted at or below 0 ms.

A prediction is then ``a + b * (overhead + sum of the network's layer entries)``, plus
``c * (millions of parameters)`` when the weights term won the calibration; a prediction
that is still <= 0 (a table built before the constraint) is a :class:`LatencyError`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnxruntime as ort
from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.ops import Conv2dNormActivation

from mnas.latency.calibration import Calibration, Floor, fit_calibration, mape
from mnas.latency.ort import OrtLatency, describe_arch
from mnas.latency.session import export_onnx, machine_description, machine_fingerprint
from mnas.latency.stats import LatencyError, LatencyStats
from mnas.nn import HEAD_CHS, STEM_CHS, make_layer
from mnas.space import Architecture, BlockSpec, specs_of

log = logging.getLogger(__name__)

TABLE_FORMAT = 2
# Format 1 tables have no per-layer parameter counts (no ``affine_weights`` calibration).
READABLE_FORMATS = (1, 2)


@dataclass(frozen=True)
class LayerConfig:
    """One layer as the latency table sees it.

    ``kind`` is ``stem``, ``layer`` or ``head`` (1x1 conv, pool, classifier). ``skip`` is
    the *effective* shortcut: ``identity`` only where shapes match, ``pool`` only where
    they do not (a projection), else ``none``, so equivalent choices share one entry.
    """

    kind: str
    in_chs: int
    out_chs: int
    res: int
    stride: int = 1
    block_type: str = "cn"
    kernel: int = 1
    exp_ratio: float = 1.0
    se_ratio: float = 0.0
    skip: str = "none"
    num_classes: int = 0

    @property
    def key(self) -> str:
        if self.kind == "stem":
            return f"stem_k{self.kernel}_s{self.stride}_i{self.in_chs}_o{self.out_chs}_r{self.res}"
        if self.kind == "head":
            return f"head_i{self.in_chs}_o{self.out_chs}_n{self.num_classes}_r{self.res}"
        # The block-string grammar, written out: this runs ~20 times per prediction.
        op = f"{self.block_type}_k{self.kernel}_s{self.stride}"
        if self.block_type == "ir":
            op += f"_e{_fmt(self.exp_ratio)}"
        op += f"_c{self.out_chs}"
        if self.se_ratio > 0:
            op += f"_se{_fmt(self.se_ratio)}"
        op += {"none": "_noskip", "identity": "", "pool": "_pool"}[self.skip]
        return f"{op}_i{self.in_chs}_r{self.res}"

    def module(self) -> nn.Module:
        """The layer as a standalone module, built with the same code as whole networks."""
        norm = nn.BatchNorm2d
        if self.kind == "stem":
            return Conv2dNormActivation(
                self.in_chs, self.out_chs, self.kernel, self.stride, norm_layer=norm
            )
        if self.kind == "head":
            return nn.Sequential(
                Conv2dNormActivation(self.in_chs, self.out_chs, 1, norm_layer=norm),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(1),
                nn.Linear(self.out_chs, self.num_classes),
            )
        spec = BlockSpec(
            self.block_type,
            1,
            self.kernel,
            self.stride,
            self.out_chs,
            self.exp_ratio,
            self.se_ratio,
            self.skip,
        )
        return make_layer(spec, self.in_chs, self.out_chs, self.stride, norm)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _conv_out(res: int, stride: int) -> int:
    # Odd kernel k, padding (k - 1) // 2: floor((res - 1) / stride) + 1 for every k.
    return (res - 1) // stride + 1


def _effective_skip(skip: str, same_shape: bool) -> str:
    if skip == "identity":
        return "identity" if same_shape else "none"
    if skip == "pool":
        return "identity" if same_shape else "pool"
    return "none"


def network_layers(
    specs: Sequence[BlockSpec],
    input_size: int,
    in_channels: int = 3,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem_stride: int = 2,
) -> list[LayerConfig]:
    """The layers ``mnas.nn.build_model`` makes for ``specs``, with their input sizes."""
    stem_chs = _make_divisible(STEM_CHS * width_mult, 8)
    layers = [LayerConfig("stem", in_channels, stem_chs, input_size, stem_stride, kernel=3)]
    res = _conv_out(input_size, stem_stride)
    in_chs = stem_chs
    for spec in specs:
        block, in_chs, res = block_layers(spec, in_chs, res, width_mult)
        layers += block
    head_chs = _make_divisible(HEAD_CHS * max(1.0, width_mult), 8)
    layers.append(LayerConfig("head", in_chs, head_chs, res, num_classes=num_classes))
    return layers


def block_layers(
    spec: BlockSpec, in_chs: int, res: int, width_mult: float = 1.0
) -> tuple[list[LayerConfig], int, int]:
    """The layers of one block whose input has ``in_chs`` channels at ``res`` x ``res``;
    returns them with the block's output channels and resolution."""
    out_chs = _make_divisible(spec.out_chs * width_mult, 8)
    layers = []
    for i in range(spec.repeats):
        stride = spec.stride if i == 0 else 1
        same = stride == 1 and in_chs == out_chs
        layers.append(
            LayerConfig(
                "layer",
                in_chs,
                out_chs,
                res,
                stride,
                spec.block_type,
                spec.kernel,
                spec.exp_ratio,
                spec.se_ratio,
                _effective_skip(spec.skip, same),
            )
        )
        res = _conv_out(res, stride)
        in_chs = out_chs
    return layers, out_chs, res


def space_layer_configs(
    space,
    input_size: int,
    in_channels: int = 3,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem_stride: int = 2,
) -> set[LayerConfig]:
    """Every distinct layer configuration that ``space`` can produce.

    ``space`` needs ``decisions`` (with ``name``, ``block``, ``choices``) and ``decode``
    (tokens to block specs), as :class:`mnas.space.MnasSpace` has. For each block all of its
    decisions and the previous block's ``filters`` decision are enumerated with every other
    token at 0, which reaches every (layer, input width) pair of that block.
    """
    by_block: dict[int, list[int]] = {}
    for i, d in enumerate(space.decisions):
        by_block.setdefault(d.block, []).append(i)
    configs: set[LayerConfig] = set()
    blocks = sorted(by_block)
    for pos, b in enumerate(blocks):
        varied = list(by_block[b])
        if pos > 0:
            varied += [i for i in by_block[blocks[pos - 1]] if space.decisions[i].name == "filters"]
        ranges = [range(len(space.decisions[i].choices)) for i in varied]
        tokens = [0] * len(space.decisions)
        for combo in itertools.product(*ranges):
            for i, t in zip(varied, combo, strict=True):
                tokens[i] = t
            specs = space.decode(tokens)
            configs.update(
                network_layers(specs, input_size, in_channels, num_classes, width_mult, stem_stride)
            )
    return configs


def _sort_key(cfg: LayerConfig) -> tuple:
    return ({"stem": 0, "layer": 1, "head": 2}[cfg.kind], -cfg.res, cfg.key)


def _overhead_ms(evaluator: OrtLatency) -> float:
    # A trivial graph on a 1x1 input: the fixed cost of one session call, which every
    # standalone layer timing includes once but a whole network pays only once in total.
    onnx_bytes = export_onnx(_Neg(), 1, 1, evaluator.batch_size)
    samples = evaluator.time_onnx(onnx_bytes, (evaluator.batch_size, 1, 1, 1))
    return float(np.median(samples))


class _Neg(nn.Module):
    def forward(self, x):
        return -x


def profile_layers(
    configs: Iterable[LayerConfig],
    evaluator: OrtLatency,
    progress: Callable[[int, int, LayerConfig], None] | None = None,
) -> tuple[dict[str, float], float, dict[str, float]]:
    """Time each configuration alone; returns (key -> ms without call overhead, overhead ms,
    key -> millions of parameters).

    Raises:
        LatencyError: naming the layer configuration that failed.
    """
    overhead = _overhead_ms(evaluator)
    ordered = sorted(set(configs), key=_sort_key)
    entries: dict[str, float] = {}
    mparams: dict[str, float] = {}
    batch = evaluator.batch_size
    for i, cfg in enumerate(ordered):
        try:
            module = cfg.module()
            mparams[cfg.key] = sum(p.numel() for p in module.parameters()) / 1e6
            onnx_bytes = export_onnx(module, cfg.res, cfg.in_chs, batch)
            samples = evaluator.time_onnx(onnx_bytes, (batch, cfg.in_chs, cfg.res, cfg.res))
        except Exception as e:
            raise LatencyError(f"cannot time layer {cfg.key}: {type(e).__name__}: {e}") from e
        entries[cfg.key] = max(0.0, float(np.median(samples)) - overhead)
        if progress is not None:
            progress(i + 1, len(ordered), cfg)
    return entries, overhead, mparams


def table_floor(
    configs: Iterable[LayerConfig],
    entries: dict[str, float],
    overhead_ms: float,
    mparams: dict[str, float],
) -> Floor:
    """The :class:`Floor` of a table with these layer ``configs``."""
    raw, params = overhead_ms, 0.0
    for kind in ("stem", "head"):
        keys = [c.key for c in configs if c.kind == kind]
        if keys:
            raw += min(entries[k] for k in keys)
            params += min(mparams.get(k, 0.0) for k in keys)
    return Floor(raw, params, overhead_ms)


def build_table(
    evaluator: OrtLatency,
    configs: Iterable[LayerConfig],
    calibration_archs: Sequence[Architecture],
    progress: Callable[[int, int, LayerConfig], None] | None = None,
) -> dict:
    """Profile ``configs`` and calibrate on ``calibration_archs``; returns the table as a dict.

    ``evaluator`` fixes the setup (input size, channels, classes, width, stem stride, batch,
    threads) and the timing plan for layers and calibration networks alike.
    """
    t0 = time.perf_counter()
    configs = list(configs)
    entries, overhead, mparams = profile_layers(configs, evaluator, progress)
    setup = evaluator.setup()
    table = {
        "format": TABLE_FORMAT,
        "setup": setup,
        "machine_description": machine_description(),
        "overhead_ms": overhead,
        "entries": entries,
        "mparams": mparams,
    }
    raw, weights = [], []
    for arch in calibration_archs:
        r, w = _sums(table, arch)
        raw.append(r)
        weights.append(w)
    measured = [evaluator.measure(arch).median_ms for arch in calibration_archs]
    floor = table_floor(configs, entries, overhead, mparams)
    cal = fit_calibration(raw, measured, weights, floor) if calibration_archs else Calibration()
    predicted = [cal.predict(r, w) for r, w in zip(raw, weights, strict=True)]
    table["calibration"] = {
        "kind": cal.kind,
        "intercept_ms": cal.intercept_ms,
        "slope": cal.slope,
        "ms_per_mparam": cal.ms_per_mparam,
        "archs": [a.key for a in calibration_archs],
        "raw_ms": raw,
        "mparams": weights,
        "measured_ms": measured,
        "mape_percent": mape(predicted, measured) if calibration_archs else None,
        "floor": {"raw_ms": floor.raw_ms, "mparams": floor.mparams, "min_ms": floor.min_ms},
    }
    table["build_seconds"] = time.perf_counter() - t0
    log.info(
        "latency table: %d layers, overhead %.4f ms, calibration %s, %.0f s",
        len(entries),
        overhead,
        cal,
        table["build_seconds"],
    )
    return table


def _layers_of(table: dict, arch: Architecture) -> list[LayerConfig]:
    s = table["setup"]
    _, in_channels, input_size, _ = s["input_shape"]
    return network_layers(
        specs_of(arch),
        input_size,
        in_channels,
        s["num_classes"],
        s["width_mult"],
        s["stem_stride"],
    )


def _sums(table: dict, arch: Architecture) -> tuple[float, float]:
    """(call overhead + the network's layer entries in ms, its millions of parameters from
    the table's per-layer counts; 0 for a format-1 table, which has none), from one walk
    over the network's layers."""
    entries = table["entries"]
    counts = table.get("mparams") or {}
    total, mparams = table["overhead_ms"], 0.0
    for cfg in _layers_of(table, arch):
        ms = entries.get(cfg.key)
        if ms is None:
            raise LatencyError(
                f"{describe_arch(arch)}: the latency table has no entry for layer {cfg.key}; "
                "build a table for this space and setup with scripts/latency_table.py"
            )
        total += ms
        mparams += counts.get(cfg.key, 0.0)
    return total, mparams


def save_table(table: dict, path: str | os.PathLike) -> None:
    """Write ``table`` as JSON, atomically (temporary file + rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class LutLatency:
    """Latency predicted from a table built by ``scripts/latency_table.py``.

    Args:
        path: the table's JSON file.
        input_size, in_channels, num_classes, width_mult, stem_stride, batch_size, threads:
            if given, must equal the table's setup (a table answers for one setup only).

    Raises:
        ValueError: if the file is not a latency table or its setup differs from the one given.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        input_size: int | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        width_mult: float | None = None,
        stem_stride: int | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        with open(self.path, encoding="utf-8") as f:
            table = json.load(f)
        if not isinstance(table, dict) or table.get("format") not in READABLE_FORMATS:
            formats = " or ".join(map(str, READABLE_FORMATS))
            raise ValueError(f"{self.path} is not a latency table of format {formats}")
        self.table = table
        setup = table["setup"]
        batch, chans, size, _ = setup["input_shape"]
        have = {
            "input_size": size,
            "in_channels": chans,
            "num_classes": setup["num_classes"],
            "width_mult": setup["width_mult"],
            "stem_stride": setup["stem_stride"],
            "batch_size": batch,
            "threads": setup["threads"],
        }
        wanted = {
            "input_size": input_size,
            "in_channels": in_channels,
            "num_classes": num_classes,
            "width_mult": width_mult,
            "stem_stride": stem_stride,
            "batch_size": batch_size,
            "threads": threads,
        }
        wrong = {k: v for k, v in wanted.items() if v is not None and not math.isclose(v, have[k])}
        if wrong:
            raise ValueError(
                f"latency table {self.path} was built for {have}; asked for {wrong}. "
                "Build one for this setup with scripts/latency_table.py"
            )
        if setup["machine"] != machine_fingerprint() or setup["onnxruntime"] != ort.__version__:
            log.info(
                "latency table %s comes from machine %s (%s), onnxruntime %s",
                self.path,
                setup["machine"],
                table.get("machine_description", {}).get("cpu", "?"),
                setup["onnxruntime"],
            )
        c = table["calibration"]
        self.calibration = Calibration(
            c.get("kind", "affine"),
            float(c["intercept_ms"]),
            float(c["slope"]),
            float(c.get("ms_per_mparam", 0.0)),
        )

    def raw_ms(self, arch: Architecture) -> float:
        """Uncalibrated sum: call overhead plus the network's layer entries."""
        return _sums(self.table, arch)[0]

    def measure(self, arch: Architecture) -> LatencyStats:
        """Predicted latency of ``arch`` (``source="lut"``, no spread), on the scale the
        table was built on (drift-corrected, with its nominal, when it was).

        Raises:
            LatencyError: if a layer of ``arch`` is missing from the table, or the
                prediction is <= 0 ms (a calibration fitted before that was ruled out).
        """
        ms = self.calibration.predict(*_sums(self.table, arch))
        if not ms > 0:
            raise LatencyError(
                f"{describe_arch(arch)}: the latency table {self.path} predicts {ms:.4g} ms "
                f"(<= 0) with its {self.calibration.kind} calibration; rebuild the table with "
                "scripts/latency_table.py (calibrations are now kept above 0)"
            )
        setup = self.table["setup"]
        return replace(
            LatencyStats.point(ms, "lut"),
            nominal_ms=setup.get("nominal_ms"),
            clock=setup.get("clock", "wall"),
        )


def table_configs_for(
    archs: Iterable[Architecture],
    input_size: int,
    in_channels: int = 3,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    stem_stride: int = 2,
) -> set[LayerConfig]:
    """The layer configurations that ``archs`` use (a table for just these networks)."""
    out: set[LayerConfig] = set()
    for arch in archs:
        out.update(
            network_layers(
                specs_of(arch), input_size, in_channels, num_classes, width_mult, stem_stride
            )
        )
    return out
