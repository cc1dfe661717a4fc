"""Where training runs: ``device=cpu|cuda|auto``, mixed precision, and GPU-side data.

Every trainer (search children, retraining, the transfer experiments) takes a plain device
string. :func:`resolve_device` turns the configured ``cpu``, ``cuda``, ``cuda:N`` or ``auto``
into the one that will be used, and refuses ``cuda`` where there is no CUDA device instead of
falling back to the CPU. Latency is never measured on the training device: it always runs on
ONNX Runtime's CPU provider (``mnas.latency``).

On a GPU, one training call:

- puts the dataset's uint8 tensors on the device once (:func:`place_data`; a process keeps the
  last copy, so a search worker uploads its data once for all of its children) and gathers each
  batch there; a dataset too large for the device stays on the host and each batch is copied
  from pinned memory without blocking;
- runs forward passes under ``torch.autocast`` (:func:`autocast_dtype`): bf16 where the GPU has
  it, else fp16 with a gradient scaler;
- lets cuDNN pick the fastest kernels for the fixed batch shape (``cudnn.benchmark``), unless
  ``deterministic`` asks for reproducible kernels (:class:`cuda_settings`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace

import torch

from mnas.data import DatasetSplits

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
AMP_MODES = ("auto", "bf16", "fp16", "off")
# Share of the device's free memory a dataset may take before it stays on the host.
DATA_SHARE_OF_FREE = 0.5
_CUDA_N = re.compile(r"cuda:(\d+)")


def check_device(requested: object) -> str:
    """``requested`` if it names a device this project trains on, else ValueError."""
    if isinstance(requested, str) and (requested in DEVICES or _CUDA_N.fullmatch(requested)):
        return requested
    raise ValueError(f"device={requested!r}; allowed: cpu, cuda, cuda:<index>, auto")


def resolve_device(requested: str, cuda_devices: int | None = None, where: str = "") -> str:
    """The device training will use: ``cpu``, ``cuda`` or ``cuda:N``.

    ``auto`` is ``cuda`` when there is a CUDA device, else ``cpu``. ``cuda`` without one is an
    error, never a silent move to the CPU.

    Args:
        requested: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        cuda_devices: how many CUDA devices the training processes will see (a Ray executor
            passes its cluster's GPUs); ``None`` asks PyTorch in this process.
        where: what ``cuda_devices`` describes, for the error message.

    Raises:
        ValueError: an unknown name, ``cuda`` with no CUDA device, or ``cuda:N`` with N out
            of range.
    """
    check_device(requested)
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count()
        where = where or _torch_cuda_description()
    if requested == "cpu":
        return "cpu"
    if requested == "auto":
        return "cuda" if cuda_devices > 0 else "cpu"
    if cuda_devices == 0:
        raise ValueError(
            f"device={requested}: no CUDA device is available ({where}); use device=cpu, "
            "or device=auto to train on a GPU only when there is one"
        )
    match = _CUDA_N.fullmatch(requested)
    if match and int(match.group(1)) >= cuda_devices:
        raise ValueError(
            f"device={requested}: only {cuda_devices} CUDA device(s) visible "
            f"(cuda:0..cuda:{cuda_devices - 1})"
        )
    return requested


def _torch_cuda_description() -> str:
    if torch.version.cuda is None:
        return f"PyTorch {torch.__version__} is a CPU-only build"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hidden = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU{hidden}"


def visible_gpus() -> list[str]:
    """This process's CUDA devices as ``CUDA_VISIBLE_DEVICES`` entries, in PyTorch's order,
    so that a worker restricted to one of them sees that same GPU."""
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:count]


def check_amp(amp: object) -> str:
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r}; allowed: {', '.join(AMP_MODES)}")
    return amp


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (``None``: float32 throughout).

    ``auto`` is float32 on the CPU (bf16 there is emulated on most CPUs and slower) and on a
    GPU bf16 where it has native support (Ampere and later), else fp16, which trains with a
    gradient scaler. bf16 has float32's range, so no loss scaling and no overflow; its 8-bit
    mantissa only touches the convolution and matmul inputs, while BatchNorm statistics, the
    loss, the weights and the optimizer stay float32.
    """
    check_amp(amp)
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``bf16`` or ``fp16``, for records."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


class cuda_settings:
    """Context manager: cuDNN's kernel choice for one training call on ``device``.

    With ``deterministic=False`` cuDNN benchmarks the candidate kernels for each new input
    shape and keeps the fastest (batches are always full, so the shapes repeat). With
    ``deterministic=True`` it uses deterministic kernels only and PyTorch warns about any
    operation that has none, so two runs on the same GPU and software give the same bits.
    The previous settings are restored afterwards; nothing changes on the CPU.
    """

    def __init__(self, device: torch.device, deterministic: bool) -> None:
        self.active = device.type == "cuda"
        self.deterministic = deterministic

    def __enter__(self) -> None:
        if not self.active:
            return
        cudnn = torch.backends.cudnn
        self.before = (
            cudnn.benchmark,
            cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        cudnn.benchmark = not self.deterministic
        cudnn.deterministic = self.deterministic
        if self.deterministic:
            # cuBLAS needs a fixed workspace for reproducible matmuls; read when its first
            # handle is made, so a fresh worker process picks it up.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        cudnn = torch.backends.cudnn
        cudnn.benchmark, cudnn.deterministic, enabled, warn_only = self.before
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def forked_rng(device: torch.device):
    """``torch.random.fork_rng`` over the CPU's global RNG and, on a GPU, ``device``'s: the
    caller's random state is the same after training as before."""
    if device.type != "cuda":
        return torch.random.fork_rng(devices=[])
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.random.fork_rng(devices=[index], device_type="cuda")


def fits_on_device(nbytes: int, free_bytes: int) -> bool:
    """Whether a dataset of ``nbytes`` goes to a device with ``free_bytes`` free: at most
    :data:`DATA_SHARE_OF_FREE` of it, leaving the rest to the network and its activations."""
    return nbytes <= DATA_SHARE_OF_FREE * free_bytes


# The last dataset placed on a device, per process: (source, device, placed copy).
_PLACED: tuple[DatasetSplits, torch.device, DatasetSplits] | None = None


def place_data(data: DatasetSplits, device: torch.device) -> DatasetSplits:
    """``data`` with its tensors on ``device``.

    The CPU, or tensors already there, return ``data`` itself. On a GPU the copy is kept for
    the next call with the same ``data`` object, so a worker that trains many children on
    one dataset uploads it once. A dataset larger than :func:`fits_on_device` allows stays on
    the host; the trainer then copies each batch through pinned memory.
    """
    global _PLACED
    if data.train_x.device == device or device.type != "cuda":
        return data
    if _PLACED is not None and _PLACED[0] is data and _PLACED[1] == device:
        return _PLACED[2]
    tensors = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
    nbytes = sum(getattr(data, t).nbytes for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if not fits_on_device(nbytes, free):
        log.info(
            "%s: %.1f GB of images stay in host memory (%.1f GB free on %s); batches are "
            "copied from pinned memory",
            data.name,
            nbytes / 1e9,
            free / 1e9,
            device,
        )
        return data
    _PLACED = None  # drop the previous copy before making the next
    placed = replace(data, **{t: getattr(data, t).to(device) for t in tensors})
    _PLACED = (data, device, placed)
    log.debug("%s: %.1f MB of images moved to %s", data.name, nbytes / 1e6, device)
    return placed


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host tensor bound for a GPU goes through pinned memory, so the
    copy does not block the host (the batch is a fresh gather, pinned once)."""
    if t.device == device:
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; a no-op context for ``None``."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
