"""Proxy and full training, evaluation, and divergence detection.

The trainer works on the in-memory uint8 tensors of :class:`mnas.data.DatasetSplits`: each step
gathers a batch of uint8 images, optionally augments it (random crop with 4 px zero padding and
horizontal flip, on tensors), normalises it on the fly with the training-set mean and standard
deviation, and takes one optimizer step. Batches are always full: the index stream runs through
one seeded permutation after another, so ``epochs=2.5`` is exactly ``ceil(2.5 * N / batch)``
steps.

Evaluation always runs in ``eval()`` mode, using BatchNorm's running statistics. With a slow BN
momentum and a short budget those statistics are still mostly their initial values and the
network predicts one class (torchvision's MNASNet uses momentum 0.0003: after 1,565 steps the
statistics have moved only 37% of the way, and the course report this project started from
scored 10.00%). ``bn_recalibrate`` therefore re-estimates the running statistics of the final
weights on a few training batches before evaluation, whatever the momentum.

Devices (:mod:`mnas.training.device`): ``device=`` moves the model; on a GPU the data tensors
go to the device once, forward passes run under autocast (``TrainConfig.amp``), and the loss is
read back every :data:`LOSS_CHECK_EVERY` steps instead of every step, so that the host queues
work ahead of the GPU; divergence is still reported at its exact step.

Determinism: the data order, the augmentation and dropout draw from ``seed`` (dropout through a
forked global RNG, so the caller's RNG state is left untouched); with the same model weights,
data, config and thread count the result is bit-identical on CPU. On a GPU the data order and
augmentation are the same draws as on the CPU (they are made on the host) but the arithmetic
differs; ``docs/gpu.md`` says by how much.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnas.data import DatasetSplits, default_hflip
from mnas.nn.fuse import fold_batchnorm
from mnas.training.augment import augment_batch
from mnas.training.batches import Normalizer, device_of, index_stream
from mnas.training.bn import recalibrate_bn
from mnas.training.device import (
    autocast,
    autocast_dtype,
    check_amp,
    cuda_settings,
    forked_rng,
    place_data,
    precision_name,
    to_device,
)

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "rmsprop", "adam")
SPLITS = ("train", "val", "test")
# Steps between reads of the loss on a GPU (each read waits for the device to catch up).
LOSS_CHECK_EVERY = 16


@dataclass(frozen=True)
class TrainConfig:
    """Budget and hyperparameters of one training run (proxy search or full retrain)."""

    epochs: float = 1.0
    """Budget in passes over the training set (fractional allowed)."""
    max_steps: int | None = None
    """Optional cap on optimizer steps; the run takes ``min(epoch steps, max_steps)``."""
    batch_size: int = 64
    """Images per optimizer step (clipped to the training-set size)."""
    optimizer: str = "sgd"
    """``sgd`` (momentum, Nesterov), ``rmsprop`` (the paper's: decay 0.9, eps 1e-3) or ``adam``."""
    lr: float = 0.05
    """Peak learning rate (reached after warm-up)."""
    momentum: float = 0.9
    """Momentum of SGD and RMSProp (ignored by Adam)."""
    weight_decay: float = 4e-5
    """L2 penalty on weight matrices and kernels; biases and BN parameters are not decayed."""
    warmup_epochs: float = 0.0
    """Linear warm-up from ~0 to ``lr``; afterwards cosine decay to zero at the last step."""
    label_smoothing: float = 0.0
    """Label smoothing of the training loss (the evaluation loss never smooths)."""
    augment: bool = False
    """Random crop (4 px zero padding) and, if ``hflip`` allows, horizontal flip, on tensors."""
    hflip: bool | None = None
    """Flip when augmenting; ``None`` decides by dataset (off for digits, on otherwise)."""
    bn_recalibrate: bool = True
    """Re-estimate BN running statistics of the final weights on training batches before eval."""
    bn_recalibrate_batches: int = 8
    """Training batches (of ``batch_size``, no augmentation) used by ``bn_recalibrate``."""
    seed: int = 0
    """Seed of data order, augmentation and dropout."""
    threads: int | None = None
    """``torch.set_num_threads`` for this call (restored afterwards); ``None`` keeps it."""
    eval_batch_size: int = 512
    """Batch size of evaluation and BN recalibration forward passes."""
    amp: str = "auto"
    """Mixed precision: ``auto`` (bf16 on a GPU that has it, else fp16; off on the CPU),
    ``bf16``, ``fp16`` or ``off`` (see :func:`mnas.training.device.autocast_dtype`)."""
    deterministic: bool = False
    """On a GPU, deterministic kernels instead of the fastest (the CPU always is)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int | float) and math.isfinite(self.epochs)) or not (
            self.epochs > 0
        ):
            raise ValueError(f"epochs={self.epochs!r} must be a finite number > 0")
        _check_int("batch_size", self.batch_size, 1)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        _check_int("bn_recalibrate_batches", self.bn_recalibrate_batches, 1)
        if self.max_steps is not None:
            _check_int("max_steps", self.max_steps, 1)
        if self.threads is not None:
            _check_int("threads", self.threads, 1)
        _check_int("seed", self.seed, 0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum!r} must lie in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} must be a finite number >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing!r} must lie in [0, 1)")
        check_amp(self.amp)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_and_evaluate`.

    Attributes:
        accuracy: top-1 accuracy (0-1) on ``split``; 0.0 when training diverged.
        loss: mean training loss over the last epoch's worth of steps (all steps if fewer);
            NaN if no step had a finite loss.
        eval_loss: mean cross-entropy on ``split`` (no label smoothing); NaN when diverged.
        steps: optimizer steps taken (the diverging step included).
        seconds: wall time of training plus evaluation.
        diverged: the training loss (or the evaluation loss) became NaN or infinite.
        diverged_step: 1-based step whose loss was not finite (``steps`` if only the
            evaluation loss was), else ``None``.
        split: the split that was evaluated.
        device: where it trained (``cpu``, ``cuda:0``, ...).
        precision: ``fp32``, or the autocast dtype of the forward passes (``bf16``, ``fp16``).
    """

    accuracy: float
    loss: float
    eval_loss: float
    steps: int
    seconds: float
    diverged: bool
    diverged_step: int | None
    split: str
    device: str = "cpu"
    precision: str = "fp32"


def train_and_evaluate(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    eval_split: str = "val",
    progress: Callable[[int, int, float], None] | None = None,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train_*`` under ``config``, then evaluate it.

    Never raises because training went bad: a NaN or infinite loss stops training and is
    reported as ``diverged=True`` with ``accuracy=0.0`` (so a search ranks such a child last).

    Args:
        model: the network; trained in place.
        data: the dataset splits (uint8 images, normalised on the fly).
        config: budget and hyperparameters.
        eval_split: ``val`` (search), ``test`` (final evaluation) or ``train``.
        progress: called after every step as ``progress(step, total_steps, loss)``.
        device: where to train (``cpu``, ``cuda``, ``cuda:N``, as resolved by
            :func:`mnas.training.device.resolve_device`); the model is moved there.
            ``None`` trains on the device of the model's parameters.

    Returns:
        The accuracy and losses, step count, wall time and divergence flag.

    Raises:
        ValueError: unknown ``eval_split`` or an empty split.
    """
    if eval_split not in SPLITS:
        raise ValueError(f"eval_split={eval_split!r} is not one of {', '.join(SPLITS)}")
    if len(data.split(eval_split)[1]) == 0:
        raise ValueError(f"split {eval_split!r} of {data.name} is empty; choose another split")
    if len(data.train_y) == 0:
        raise ValueError(f"training split of {data.name} is empty")
    if device is not None:
        model.to(device)
    dev = device_of(model)
    start = time.perf_counter()
    data = place_data(data, dev)
    eval_x, eval_y = data.split(eval_split)
    with (
        _threads(config.threads),
        forked_rng(dev),
        cuda_settings(dev, config.deterministic),
    ):
        torch.manual_seed(config.seed)
        fit = fit_model(model, data, config, progress)
        if fit.diverged_step is not None:
            accuracy, eval_loss = 0.0, math.nan
        else:
            # on the CPU a folded channels-last copy, a few images at a time: the same
            # scores, 2.6x faster over 8 Fashion-MNIST children; the trained model is
            # returned as it is
            scored, batch = model, config.eval_batch_size
            if dev.type == "cpu":
                scored, batch = cpu_inference_copy(model), min(batch, CPU_CHUNK)
            accuracy, eval_loss = evaluate(
                scored, eval_x, eval_y, data.mean, data.std, batch, config.amp
            )
    diverged_step = fit.diverged_step
    if diverged_step is None and not math.isfinite(eval_loss):
        diverged_step, accuracy = fit.steps, 0.0
    seconds = time.perf_counter() - start
    result = TrainResult(
        accuracy=accuracy,
        loss=fit.loss,
        eval_loss=eval_loss,
        steps=fit.steps,
        seconds=seconds,
        diverged=diverged_step is not None,
        diverged_step=diverged_step,
        split=eval_split,
        device=str(dev),
        precision=fit.precision,
    )
    logger.info(
        "trained %d steps in %.2fs on %s (%s): %s accuracy %.4f, eval loss %.4f, train loss %.4f%s",
        result.steps,
        seconds,
        dev,
        fit.precision,
        eval_split,
        accuracy,
        eval_loss,
        fit.loss,
        f" (diverged at step {diverged_step})" if result.diverged else "",
    )
    return result


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_model`: steps taken, smoothed final loss, divergence step, and
    the precision of the forward passes (``fp32``, ``bf16``, ``fp16``)."""

    steps: int
    loss: float
    diverged_step: int | None
    precision: str = "fp32"


def fit_model(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> FitResult:
    """Train ``model`` in place without evaluating it (fine-tuning, retraining).

    Uses the global RNG for dropout; :func:`train_and_evaluate` seeds and isolates it.
    Recalibrates BatchNorm statistics at the end if ``config.bn_recalibrate``.

    Args:
        model: the network, trained on the device of its parameters (the data is moved
            there once, :func:`mnas.training.device.place_data`).
        data: dataset splits; only ``train_x``/``train_y`` are used.
        config: budget and hyperparameters (``threads`` is applied by the caller).
        progress: called after every step as ``progress(step, total_steps, loss)``.

    Returns:
        Steps, the mean loss of the last epoch's worth of steps, and the diverging step.
    """
    device = device_of(model)
    data = place_data(data, device)
    n = len(data.train_y)
    batch_size = min(config.batch_size, n)
    steps_per_epoch = n / batch_size
    total = max(1, math.ceil(config.epochs * steps_per_epoch))
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))
    hflip = default_hflip(data.name) if config.hflip is None else config.hflip
    norm = Normalizer(data.mean, data.std, device)
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    dtype = autocast_dtype(config.amp, device)
    # fp16's narrow range needs loss scaling; bf16 and float32 do not.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    check_every = _loss_check_every(device)
    recent: list[float] = []
    window = max(1, math.ceil(steps_per_epoch))
    unread: list[tuple[int, Tensor]] = []
    diverged_step = None
    step = 0

    def read_losses() -> int | None:
        """Read the unread losses in one transfer; the first non-finite one's step, if any."""
        values = torch.stack([loss for _, loss in unread]).tolist()
        steps = [s for s, _ in unread]
        unread.clear()
        for s, value in zip(steps, values, strict=True):
            if not math.isfinite(value):
                logger.warning("loss %s at step %d of %d: diverged", value, s, total)
                return s
            recent.append(value)
            if len(recent) > window:
                recent.pop(0)
            if progress is not None:
                progress(s, total, value)
            if s % 100 == 0:
                logger.debug("step %d/%d loss %.4f", s, total, value)
        return None

    model.train()
    stream = index_stream(n, batch_size, total, gen, data.train_x.device)
    for step, idx in enumerate(stream, start=1):
        lr = lr_at(step - 1, total, warmup, config.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = data.train_x[idx]
        if config.augment:
            x = augment_batch(x, gen, hflip)
        x = norm(to_device(x, device))
        y = to_device(data.train_y[idx], device)
        with autocast(device, dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
        unread.append((step, loss.detach()))
        # Read before this step's update, so that on the CPU (every step) a non-finite
        # loss never reaches the weights; on a GPU up to check_every - 1 updates may follow it.
        if len(unread) >= check_every:
            diverged_step = read_losses()
            if diverged_step is not None:
                break
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if unread and diverged_step is None:
        diverged_step = read_losses()
    if diverged_step is not None:
        step = diverged_step

    if diverged_step is None and config.bn_recalibrate:
        recalibrate_bn(
            model,
            data.train_x,
            data.mean,
            data.std,
            batch_size=batch_size,
            num_batches=config.bn_recalibrate_batches,
            generator=gen,
            amp=config.amp,
        )
    mean_loss = sum(recent) / len(recent) if recent else math.nan
    return FitResult(
        steps=step, loss=mean_loss, diverged_step=diverged_step, precision=precision_name(dtype)
    )


def _loss_check_every(device: torch.device) -> int:
    """Steps between loss reads: every step on the CPU (free there), else
    :data:`LOSS_CHECK_EVERY`."""
    return 1 if device.type == "cpu" else LOSS_CHECK_EVERY


CPU_CHUNK = 50
"""Images per forward pass of an evaluation on the CPU: small enough for the activations of
the 28x28 layers to stay in cache (on the 2-core development VM a chunk of 50 scored 250
images 1.5x faster than one pass of 250; 10 was slower again)."""


def cpu_inference_copy(model: nn.Module) -> nn.Module:
    """An ``eval()`` copy of ``model`` (on the CPU) for scoring it: channels-last layout, its
    BatchNorm layers folded into the convolutions (:func:`~mnas.nn.fuse.fold_batchnorm`).
    It computes what ``model`` computes in ``eval()`` mode, to float rounding, in up to 4x less
    CPU time (2.6x less over 8 Fashion-MNIST children, 1x-4.3x by network;
    ``bench/eval_cpu.py``); ``model`` itself is left as it is."""
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fast.eval()
    fold_batchnorm(fast)
    return fast


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config``; weight decay applies only to parameters with 2+ dims."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )
    if config.optimizer == "rmsprop":
        # MnasNet/EfficientNet TPU code: RMSProp decay 0.9, momentum 0.9, epsilon 1e-3.
        return torch.optim.RMSprop(
            groups, lr=config.lr, alpha=0.9, eps=1e-3, momentum=config.momentum
        )
    return torch.optim.Adam(groups, lr=config.lr)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Learning rate at 0-based ``step``: linear warm-up over ``warmup`` steps, then cosine
    from ``peak`` to zero at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * (step - warmup) / span))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    amp: str = "auto",
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` in ``eval()`` mode, on the device
    of its parameters.

    The model's previous train/eval mode is restored afterwards.

    Args:
        model: the network.
        x: uint8 images ``(N, C, H, W)`` (0-255).
        y: int64 labels.
        mean: per-channel mean in 0-1 units.
        std: per-channel standard deviation in 0-1 units.
        batch_size: images per forward pass.
        amp: autocast of the forward passes (as :attr:`TrainConfig.amp`); the loss is
            computed in float32.

    Returns:
        ``(accuracy, loss)``; accuracy in 0-1.
    """
    if len(y) == 0 or len(x) != len(y):
        raise ValueError(f"need as many labels as images (> 0), got {len(x)} and {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    device = device_of(model)
    dtype = autocast_dtype(amp, device)
    norm = Normalizer(mean, std, device)
    was_training = model.training
    model.eval()
    # Summed on the device and read once; float64 sums as the host would add them.
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for start in range(0, len(y), batch_size):
            xb = norm(to_device(x[start : start + batch_size], device))
            yb = to_device(y[start : start + batch_size], device)
            with autocast(device, dtype):
                logits = model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(y), loss_sum.item() / len(y)


class _threads:
    """Context manager: ``torch.set_num_threads(n)`` inside, the previous count after."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.before = torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
