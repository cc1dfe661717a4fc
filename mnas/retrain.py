"""Retrain found architectures fully, measure them, and ship them as PyTorch and ONNX files.

Which architecture (``arch=`` of ``scripts/retrain.py``, :func:`resolve_choices`):

- ``<run>/pareto.json:<index>``: one point of a search's Pareto front (0 = fastest);
- ``<run>/pareto.json:all`` (or ``all=true`` with ``run=<run>``): every front point;
- a hash (or a unique prefix of at least 6 hex digits) of an architecture in
  ``<run>/results.jsonl`` or ``<run>/pareto.json`` (with ``run=<run>``);
- a reference name (``mobilenetv2``, ``mnasnet_a1``, ``mnasnet_b1``);
- comma-separated block strings (``ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24,...``).

What a retrain produces (:func:`retrain`, :func:`finalize`): the network trained on the training
split, its top-1 accuracy on the held-out TEST split (never seen by the search), its median ONNX
Runtime CPU latency, parameters and multiply-accumulates, and three files in its output folder:

- ``metrics.json``: ``params``, ``macs``, ``test_accuracy`` (0-1), ``latency_ms`` and more;
- ``model.pt``: ``{"state_dict", "arch", "build_kwargs", "input_size", "mean", "std", ...}``,
  rebuilt by :func:`load_checkpoint`;
- ``model.onnx``: the network in eval mode (BatchNorm folded), input ``input`` of shape
  ``(export_batch_size, C, H, W)`` normalised with ``mean``/``std``, output ``output`` (logits).
  Before it is accepted, its outputs on real test images are compared with PyTorch's; the
  largest absolute difference is recorded as ``onnx_max_abs_diff`` and a difference above the
  tolerance raises :class:`ExportMismatchError` (after the files are written, for inspection).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from torch import nn

from mnas.builder import build_model, model_stats
from mnas.config import DataConf, LatencyConf, ModelConf, TrainerConf
from mnas.data import DatasetSplits
from mnas.latency import LatencyStats, OrtLatency, export_onnx, make_session, stats_from_samples
from mnas.latency.ort import TimingPlan, machine_description
from mnas.space import REFERENCE_BLOCKS, Architecture, reference, resolve_arch
from mnas.train import TrainConfig, train_and_evaluate

logger = logging.getLogger(__name__)

ARCH_FORMS = (
    "'<run>/pareto.json:<index>', '<run>/pareto.json:all' (or all=true with run=<run>), "
    "a hash from <run>/results.jsonl (with run=<run>), a reference name "
    f"({', '.join(sorted(REFERENCE_BLOCKS))}), or comma-separated block strings "
    "such as 'ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24'"
)
_HASH = re.compile(r"[0-9a-f]{6,16}")


# ----------------------------------------------------------------------------- config schema


@dataclass
class RetrainConf:
    """Schema of ``conf/retrain.yaml`` (groups: data, model, trainer, latency)."""

    arch: str = "mobilenetv2"  # what to retrain: see mnas/retrain.py (ARCH_FORMS)
    run: str | None = None  # search run directory (hash look-up, all=true, data/model defaults)
    all: bool = False  # retrain every point of <run>/pareto.json, then the references
    references: list[str] = field(default_factory=lambda: ["mobilenetv2", "mnasnet_a1"])
    # ^ with all=true: references retrained under the same budget for the comparison table
    from_run: bool = True  # take data/model settings from <run>/run.json (CLI overrides win)
    out_dir: str | None = None  # output folder (None: Hydra's run directory)
    device: str = "cpu"  # training device (export and latency always on CPU)
    export_batch_size: int = 1  # static batch of model.onnx
    onnx_check_images: int = 64  # real test images compared between ONNX Runtime and PyTorch
    onnx_atol: float = 1e-4  # allowed |ONNX - PyTorch| of a logit: atol + rtol * |PyTorch|
    onnx_rtol: float = 1e-5  # (float32 BN folding reorders sums: scale-relative rounding)
    tensorboard: bool = True  # with all=true: accuracy-vs-latency figure under <out>/tb
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    latency: LatencyConf = field(default_factory=LatencyConf)


def register_configs() -> None:
    """Register ``retrain_schema`` so that ``conf/retrain.yaml`` can extend it."""
    ConfigStore.instance().store(name="retrain_schema", node=RetrainConf)


# ----------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class ArchChoice:
    """One architecture to retrain and where it came from.

    Attributes:
        label: short name for tables and folders (``front0``, ``mobilenetv2``, ``a1b2c3d4``).
        arch: the architecture.
        source: ``pareto``, ``results``, ``reference`` or ``blocks``.
        run_dir: the search run it came from, if any.
        search_accuracy: its proxy (validation) accuracy in the search, if known.
        search_latency_ms: its latency in the search, if known.
    """

    label: str
    arch: Architecture
    source: str
    run_dir: str | None = None
    search_accuracy: float | None = None
    search_latency_ms: float | None = None


def _split_pareto(text: str) -> tuple[Path, str] | None:
    """``(pareto path, selector)`` if ``text`` names a pareto.json, else None."""
    path, sep, selector = text.rpartition(":")
    if sep and Path(path).name == "pareto.json":
        return Path(path), selector.strip()
    if Path(text).name == "pareto.json":
        return Path(text), ""
    return None


def _read_pareto(path: Path) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"arch={str(path)!r}: no such file; allowed forms: {ARCH_FORMS}")
    try:
        points = json.loads(path.read_text())["points"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a search's pareto.json (needs a 'points' list): {e}"
        ) from e
    if not isinstance(points, list):
        raise ValueError(f"{path}: 'points' must be a list, got {type(points).__name__}")
    return points


def _choice_from_record(record: dict, label: str, source: str, run_dir: Path) -> ArchChoice:
    arch = Architecture.from_dict(record)
    if arch.space == "nasbench201":
        raise ValueError(
            f"architecture {arch.hash} is a NAS-Bench-201 cell: it has a table entry, "
            "not a network to retrain"
        )

    def num(key: str) -> float | None:
        value = record.get(key)
        return float(value) if isinstance(value, int | float) else None

    return ArchChoice(label, arch, source, str(run_dir), num("accuracy"), num("latency_ms"))


def front_choices(pareto_path: str | os.PathLike) -> list[ArchChoice]:
    """Every point of a run's ``pareto.json``, labelled ``front<i>`` in file order."""
    path = Path(pareto_path)
    return [
        _choice_from_record(r, f"front{i}", "pareto", path.parent)
        for i, r in enumerate(_read_pareto(path))
    ]


def _find_hash(prefix: str, run_dir: Path) -> ArchChoice:
    files = [run_dir / "results.jsonl", run_dir / "pareto.json"]
    if not any(f.is_file() for f in files):
        raise ValueError(f"run={str(run_dir)!r} has neither results.jsonl nor pareto.json")
    found: dict[str, dict] = {}
    results = files[0]
    if results.is_file():
        for line in results.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if str(record.get("hash", "")).startswith(prefix):
                    found.setdefault(record["hash"], record)
    if files[1].is_file():
        for record in _read_pareto(files[1]):
            if str(record.get("hash", "")).startswith(prefix):
                found.setdefault(record["hash"], record)
    if not found:
        raise ValueError(f"arch={prefix!r}: no architecture with that hash in {run_dir}")
    if len(found) > 1:
        raise ValueError(f"arch={prefix!r} is ambiguous in {run_dir}: {sorted(found)}")
    ((full, record),) = found.items()
    return _choice_from_record(record, full[:8], "results", run_dir)


def resolve_choices(
    arch: str, run: str | os.PathLike | None = None, all_points: bool = False
) -> list[ArchChoice]:
    """The architectures that ``arch=`` (with ``run=`` and ``all=``) names.

    Args:
        arch: one of the forms in the module docstring.
        run: a search run directory (for a hash, or for ``all_points``).
        all_points: every point of the run's Pareto front (``run`` or a pareto.json ``arch``).

    Raises:
        ValueError: naming the bad value and the allowed forms.
    """
    text = arch.strip() if isinstance(arch, str) else arch
    if not isinstance(text, str) or not text:
        raise ValueError(f"arch={arch!r} is empty; allowed forms: {ARCH_FORMS}")
    pareto = _split_pareto(text)
    if all_points:
        if pareto is not None:
            return front_choices(pareto[0])
        if run is None:
            raise ValueError("all=true needs run=<run directory> or arch=<run>/pareto.json")
        return front_choices(Path(run) / "pareto.json")
    if pareto is not None:
        path, selector = pareto
        if selector == "all":
            return front_choices(path)
        points = _read_pareto(path)
        if not re.fullmatch(r"\d+", selector):
            raise ValueError(
                f"arch={text!r}: after 'pareto.json:' give an index 0..{len(points) - 1} or 'all'"
            )
        index = int(selector)
        if index >= len(points):
            raise ValueError(
                f"arch={text!r}: index {index} out of range; {path} has {len(points)} "
                f"points (0..{len(points) - 1})"
            )
        return [_choice_from_record(points[index], f"front{index}", "pareto", path.parent)]
    if text in REFERENCE_BLOCKS:
        return [ArchChoice(text, reference(text), "reference")]
    if _HASH.fullmatch(text):
        if run is None:
            raise ValueError(f"arch={text!r} looks like a hash: give run=<run directory> too")
        return [_find_hash(text, Path(run))]
    try:
        found = resolve_arch(text)
    except ValueError as e:
        raise ValueError(f"arch={text!r} is not valid ({e}); allowed forms: {ARCH_FORMS}") from e
    return [ArchChoice(found.hash[:8], found, "blocks")]


def read_run_json(run_dir: str | os.PathLike) -> dict:
    """A search's ``run.json`` (data and model settings), or ``{}`` when it has none."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        logger.warning("%s not found: using the configured data and model settings", path)
        return {}
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class LatencySettings:
    """How ONNX Runtime (and PyTorch) timing is done; see :class:`mnas.latency.OrtLatency`."""

    threads: int = 1
    batch_size: int = 1
    warmup: int = 5
    min_runs: int = 15
    max_runs: int = 300
    rel_ci: float = 0.01
    time_cap_s: float = 1.0
    pin_cpu: int | None = None

    def ort(self, input_size: int, in_channels: int, batch_size: int | None = None) -> OrtLatency:
        return OrtLatency(
            input_size=input_size,
            in_channels=in_channels,
            batch_size=batch_size or self.batch_size,
            threads=self.threads,
            warmup=self.warmup,
            min_runs=self.min_runs,
            max_runs=self.max_runs,
            rel_ci=self.rel_ci,
            time_cap_s=self.time_cap_s,
            pin_cpu=self.pin_cpu,
        )

    @property
    def plan(self) -> TimingPlan:
        return TimingPlan(self.warmup, self.min_runs, self.max_runs, self.rel_ci, self.time_cap_s)


@torch.no_grad()
def time_torch(
    model: nn.Module, input_shape: tuple[int, ...], threads: int, plan: TimingPlan
) -> LatencyStats:
    """Eager PyTorch CPU latency of ``model`` in eval mode: the same stopping rule and
    statistics as ONNX Runtime timing, with ``threads`` torch threads."""
    from mnas.latency.stats import median_ci_halfwidth

    was_training = model.training
    before = torch.get_num_threads()
    model.eval()
    torch.set_num_threads(threads)
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(plan.warmup):
            model(x)
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < plan.max_runs:
            t0 = time.perf_counter_ns()
            model(x)
            samples.append((time.perf_counter_ns() - t0) / 1e6)
            n = len(samples)
            if n >= 5 and time.perf_counter() - start > plan.time_cap_s:
                break
            if n >= plan.min_runs and (n - plan.min_runs) % 5 == 0:
                if median_ci_halfwidth(samples) <= plan.rel_ci:
                    break
    finally:
        if gc_was_enabled:
            gc.enable()
        torch.set_num_threads(before)
        model.train(was_training)
    return stats_from_samples(samples, 0.0, "measured")


class ExportMismatchError(RuntimeError):
    """The ONNX file's outputs differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ExportSettings:
    """The shipped ONNX file and its check against PyTorch.

    A logit passes when ``|onnx - torch| <= atol + rtol * |torch|`` (numpy's ``allclose``):
    the exporter folds BatchNorm into the convolutions, which reorders float32 sums, so the
    rounding error grows with the size of the activations; ``rtol`` only matters for logits
    far above 10.
    """

    batch_size: int = 1
    check_images: int = 64
    atol: float = 1e-4
    rtol: float = 1e-5

    def __post_init__(self) -> None:
        for key in ("batch_size", "check_images"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value!r} must be a positive integer")
        if not (self.atol > 0 and self.rtol >= 0):
            raise ValueError(f"atol={self.atol}, rtol={self.rtol}: need atol > 0, rtol >= 0")


@dataclass(frozen=True)
class OnnxCheck:
    """Outcome of :func:`check_onnx`.

    Attributes:
        max_abs_diff: largest ``|onnx - torch|`` over all logits compared.
        max_abs_logit: largest ``|torch|`` logit (the scale of the rounding error).
        ok: every logit within ``atol + rtol * |torch|``.
        images: test images compared.
    """

    max_abs_diff: float
    max_abs_logit: float
    ok: bool
    images: int


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


@torch.no_grad()
def check_onnx(
    model: nn.Module,
    onnx_bytes: bytes,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    settings: ExportSettings,
) -> OnnxCheck:
    """Compare ONNX Runtime's logits with PyTorch's (eval mode, CPU) on real images.

    Args:
        model: the PyTorch network.
        onnx_bytes: its export with a static batch of ``settings.batch_size``.
        images: uint8 images ``(N, C, H, W)``; the full export batches among them are used.
        mean, std: the normalisation the network was trained with (0-1 units).
        settings: batch and tolerances.
    """
    n = (len(images) // settings.batch_size) * settings.batch_size
    if n == 0:
        raise ValueError(
            f"need at least {settings.batch_size} images to check the ONNX export, "
            f"got {len(images)}"
        )
    session = make_session(onnx_bytes, threads=1)
    was_training = model.training
    model.eval()
    worst, scale, ok = 0.0, 0.0, True
    try:
        for start in range(0, n, settings.batch_size):
            x = _normalise(images[start : start + settings.batch_size], mean, std)
            expected = model(x).numpy()
            got = session.run(["output"], {"input": x.numpy()})[0]
            diff = np.abs(got - expected)
            worst = max(worst, float(diff.max()))
            scale = max(scale, float(np.abs(expected).max()))
            ok = ok and bool(np.all(diff <= settings.atol + settings.rtol * np.abs(expected)))
    finally:
        model.train(was_training)
    return OnnxCheck(worst, scale, ok, n)


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
    ``latency.batch_size``), ``latency`` (its full statistics), ``latency_torch_ms`` (eager
    PyTorch, same threads), the ONNX check (``onnx_max_abs_diff``, ...), and with
    ``batch_latency`` also ``latency_batch_ms`` / ``latency_torch_batch_ms`` (one batch of that
    many images on ORT / PyTorch).

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
    ort_stats = latency.ort(size, chans).measure_model(model, name)
    shape = (latency.batch_size, chans, size, size)
    torch_stats = time_torch(model, shape, latency.threads, latency.plan)
    result = {
        **metrics,
        "params": stats.params,
        "macs": stats.macs,
        "latency_ms": ort_stats.median_ms,
        "latency": ort_stats.to_dict(),
        "latency_torch_ms": torch_stats.median_ms,
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
        batch_ort = latency.ort(size, chans, batch_latency).measure_model(model, name)
        shape = (batch_latency, chans, size, size)
        batch_torch = time_torch(model, shape, latency.threads, latency.plan)
        result.update(
            batch=batch_latency,
            latency_batch_ms=batch_ort.median_ms,
            latency_torch_batch_ms=batch_torch.median_ms,
        )
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
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


def _json_default(value: object) -> object:
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return str(value)


# ----------------------------------------------------------------------------- retraining


def retrain(
    choice: ArchChoice,
    data: DatasetSplits,
    config: TrainConfig,
    build_kwargs: dict,
    out_dir: str | os.PathLike,
    latency: LatencySettings,
    export: ExportSettings = ExportSettings(),
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train ``choice`` from scratch on ``data``'s training split, evaluate it on the TEST
    split, measure it and write its files (see :func:`finalize`).

    Args:
        choice: the architecture and its origin.
        data: dataset splits (the test split is the held-out one).
        config: training budget and hyperparameters.
        build_kwargs: ``width_mult``, ``stem_stride``, ``dropout``, ``bn_momentum`` for
            :func:`mnas.builder.build_model` (classes and channels come from ``data``).
        out_dir: where ``metrics.json``, ``model.pt`` and ``model.onnx`` go.
        latency: timing settings.
        export: the ONNX file and its check (see :func:`finalize`).
        device: training device (``cpu``, ``cuda``, ...).
        progress: called after every step as ``progress(step, total_steps, loss)``.

    Returns:
        The metrics written to ``metrics.json``.
    """
    kwargs = {**build_kwargs, "num_classes": data.num_classes, "in_channels": data.in_channels}
    torch.manual_seed(config.seed)
    model = build_model(choice.arch, **kwargs).to(device)
    result = train_and_evaluate(model, data, config, eval_split="test", progress=progress)
    metrics = {
        "label": choice.label,
        "source": choice.source,
        "run_dir": choice.run_dir,
        "hash": choice.arch.hash,
        "space": choice.arch.space,
        "blocks": list(choice.arch.blocks),
        "search_accuracy": choice.search_accuracy,
        "search_latency_ms": choice.search_latency_ms,
        "test_accuracy": result.accuracy,
        "test_loss": result.eval_loss,
        "train_loss": result.loss,
        "train_steps": result.steps,
        "train_seconds": result.seconds,
        "diverged": result.diverged,
        "dataset": data.name,
        "image_size": data.image_size,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        **kwargs,
        "trainer": asdict(config),
    }
    checkpoint = {"arch": choice.arch.to_dict(), "build_kwargs": kwargs}
    return finalize(
        model,
        data,
        out_dir,
        f"{choice.label} ({choice.arch.hash})",
        checkpoint,
        metrics,
        latency,
        export,
    )


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Rebuild a network saved by :func:`retrain` (``model.pt``), in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "arch" not in ckpt or "build_kwargs" not in ckpt:
        raise ValueError(f"{path} is not a retrain checkpoint (needs 'arch' and 'build_kwargs')")
    model = build_model(Architecture.from_dict(ckpt["arch"]), **ckpt["build_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


# ----------------------------------------------------------------------------- comparing


def comparison_table(rows: Sequence[dict]) -> str:
    """A plain-text table of retrained models: accuracy and latency side by side."""
    header = ("model", "source", "hash", "params", "MMACs", "proxy val acc", "test acc", "ORT ms")
    lines = [header]
    for r in sorted(rows, key=lambda r: r["latency_ms"]):
        search = r.get("search_accuracy")
        lines.append(
            (
                r["label"],
                r["source"],
                r["hash"][:8],
                f"{r['params']:,}",
                f"{r['macs'] / 1e6:.1f}",
                "-" if search is None else f"{100 * search:.2f}%",
                f"{100 * r['test_accuracy']:.2f}%",
                f"{r['latency_ms']:.3f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = [
        line[0].ljust(widths[0])
        + "  "
        + "  ".join(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))
        for line in lines
    ]
    return "\n".join([fmt[0], "-" * len(fmt[0]), *fmt[1:]])


def comparison_figure(rows: Sequence[dict], title: str = "retrained: accuracy vs latency"):
    """Matplotlib figure: retrained front points (line) and references (markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    found = sorted((r for r in rows if r["source"] != "reference"), key=lambda r: r["latency_ms"])
    if found:
        ax.plot(
            [r["latency_ms"] for r in found],
            [100 * r["test_accuracy"] for r in found],
            "o-",
            color="tab:red",
            label="found (retrained)",
        )
        for r in found:
            ax.annotate(
                r["label"],
                (r["latency_ms"], 100 * r["test_accuracy"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for r, marker in zip((r for r in rows if r["source"] == "reference"), "s^Dv", strict=False):
        ax.scatter(
            [r["latency_ms"]],
            [100 * r["test_accuracy"]],
            marker=marker,
            s=50,
            label=r["label"],
            zorder=3,
        )
    ax.set_xlabel("ONNX Runtime latency (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def write_comparison(rows: Sequence[dict], out_dir: str | os.PathLike, tensorboard: bool) -> None:
    """``summary.json``, ``summary.txt``, ``comparison.png`` and (optionally) a TensorBoard
    figure plus per-model scalars under ``out_dir/tb``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(list(rows), indent=2, default=_json_default))
    (out / "summary.txt").write_text(comparison_table(rows) + "\n")
    fig = comparison_figure(rows)
    fig.savefig(out / "comparison.png")
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        writer.add_figure("retrain/accuracy_vs_latency", fig, 0, close=False)
        writer.add_text("retrain/table", "```\n" + comparison_table(rows) + "\n```", 0)
        writer.close()
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------- script helpers


def latency_settings(conf: dict) -> LatencySettings:
    """:class:`LatencySettings` from a plain ``latency`` config dict (``kind`` must be
    ``measured``: a trained model is always timed on ONNX Runtime)."""
    if conf.get("kind", "measured") != "measured":
        raise ValueError(
            f"latency.kind={conf['kind']!r}: a trained model is timed on ONNX Runtime; "
            "use latency=measured"
        )
    fields = LatencySettings.__dataclass_fields__
    settings = LatencySettings(**{k: v for k, v in conf.items() if k in fields})
    settings.plan  # noqa: B018 - validates the timing plan now, before any work
    for key in ("threads", "batch_size"):
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"latency.{key}={value!r} must be a positive integer")
    return settings


def export_settings(conf: Any) -> ExportSettings:
    """:class:`ExportSettings` from a config with ``export_batch_size``, ``onnx_check_images``,
    ``onnx_atol`` and ``onnx_rtol`` (validated)."""
    return ExportSettings(
        conf["export_batch_size"], conf["onnx_check_images"], conf["onnx_atol"], conf["onnx_rtol"]
    )


class EpochProgress:
    """A ``progress(step, total, loss)`` callback that opens one bar per epoch.

    Args:
        train_images: size of the training split.
        batch_size: the training batch size.
        make_bar: ``make_bar(total_steps, description)`` returns a tqdm-like bar
            (``update``, ``set_postfix``, ``close``); the caller owns the console.
    """

    def __init__(self, train_images: int, batch_size: int, make_bar: Callable) -> None:
        self.per_epoch = -(-train_images // max(1, min(batch_size, train_images)))
        self.make_bar = make_bar
        self.bar = None
        self.prefix = ""

    def __call__(self, step: int, total: int, loss: float) -> None:
        epoch = (step - 1) // self.per_epoch
        if self.bar is None or step - 1 == epoch * self.per_epoch:
            self.close()
            epochs = -(-total // self.per_epoch)
            left = min(self.per_epoch, total - epoch * self.per_epoch)
            self.bar = self.make_bar(left, f"{self.prefix}epoch {epoch + 1}/{epochs}")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
