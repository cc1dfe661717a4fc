"""Training a weight-sharing supernet, and scoring its sub-networks.

Training (:func:`train_supernet`) takes one optimizer step per batch after the gradients of
several sub-networks (``subnets_per_step``) on that same batch:

- **sampling**: ``uniform`` draws every decision of every sub-network at random; ``fair``
  (FairNAS) gives each decision a fresh random permutation of its choices per step and the
  ``j``-th sub-network takes its ``j``-th entry, so every choice is trained equally often;
- **sandwich rule** (BigNAS): the first two sub-networks of a step are the largest and the
  smallest network of the space;
- **in-place distillation** (BigNAS): every sub-network but the largest learns the largest
  one's soft predictions on the same batch instead of the labels;
- **warm-up** (TuNAS): during the first ``warmup_fraction`` of the steps a sampled block takes
  the largest filters and layer count with a probability that falls linearly from 1 to 0,
  so the shared leading channels are trained before narrow sub-networks depend on them;
- **progressive shrinking** (once-for-all; ``schedule="progressive"``): the steps are cut into
  :data:`STAGES`; the first trains the largest network only and each later one opens more
  decisions (kernel and SE, then layers and filters, then conv op and skip), the closed ones
  staying at their largest choice. It replaces the warm-up.

Scoring (:func:`score_subnet`) builds the sub-network as a stand-alone network with the
supernet's weights, re-estimates BatchNorm statistics on a fixed set of training batches
(``bn="recalibrate"``; every architecture sees the same images), or normalises each
validation batch by its own statistics (``bn="batch"``), and evaluates it on a fixed
validation subset.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnas.data import DatasetSplits
from mnas.nn.fuse import fold_batchnorm
from mnas.nn.supernet import Supernet, largest_specs, smallest_specs
from mnas.space import BlockSpec, MnasSpace
from mnas.training.batches import Normalizer, device_of, index_stream
from mnas.training.bn import recalibrate_bn
from mnas.training.device import autocast, autocast_dtype, check_amp, place_data, to_device
from mnas.training.trainer import CPU_CHUNK, _threads, evaluate, lr_at

logger = logging.getLogger(__name__)

SAMPLINGS = ("uniform", "fair")
BN_MODES = ("recalibrate", "batch")
SCHEDULES = ("joint", "progressive")
STAGES: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.15, ()),
    (0.15, ("kernel", "se_ratio")),
    (0.3, ("kernel", "se_ratio", "layers", "filters")),
    (0.4, ("kernel", "se_ratio", "layers", "filters", "conv_op", "skip")),
)
"""Progressive shrinking: (share of the steps, the decisions open in that stage)."""


@dataclass(frozen=True)
class SupernetTrainConfig:
    """Budget and hyperparameters of supernet training."""

    epochs: float = 2.0
    """Passes over the training set (each batch trains ``subnets_per_step`` sub-networks)."""
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 0.2
    """Linear learning-rate warm-up, then cosine decay to zero."""
    subnets_per_step: int = 3
    sampling: str = "fair"
    """``fair`` (every choice once per step, FairNAS) or ``uniform``."""
    sandwich: bool = True
    """The first two sub-networks of a step are the largest and the smallest."""
    distill: bool = True
    """Sub-networks other than the largest learn its soft predictions (needs ``sandwich``)."""
    warmup_fraction: float = 0.25
    """Share of the steps during which sampled blocks favour the largest filters and depth."""
    schedule: str = "joint"
    """``joint``: every decision open from the start; ``progressive``: :data:`STAGES`."""
    seed: int = 0
    threads: int | None = None
    amp: str = "auto"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"epochs={self.epochs!r} must be a finite number > 0")
        for name, low in (("batch_size", 1), ("subnets_per_step", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads={self.threads!r} must be an integer >= 1 or None")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum!r} must lie in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} must be >= 0")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError(f"warmup_fraction={self.warmup_fraction!r} must lie in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling={self.sampling!r}; allowed: {', '.join(SAMPLINGS)}")
        if self.distill and not self.sandwich:
            raise ValueError("distill=true needs sandwich=true (the largest network teaches)")
        if self.sandwich and self.subnets_per_step < 2:
            raise ValueError(
                f"subnets_per_step={self.subnets_per_step}: the sandwich rule needs >= 2"
            )
        check_amp(self.amp)


@dataclass(frozen=True)
class SupernetTrainResult:
    steps: int
    loss: float
    """Mean loss of the largest sub-network over the last 10% of steps."""
    seconds: float
    cpu_seconds: float
    """Process CPU time (all threads) of the training."""
    diverged: bool


class PathSampler:
    """Token sequences of sub-networks: uniform or fair, with the TuNAS warm-up."""

    def __init__(self, space: MnasSpace, sampling: str, seed: int) -> None:
        self.space = space
        self.sampling = sampling
        self.rng = random.Random(seed)
        names = space.DECISION_NAMES
        self._widest = [
            max(range(len(d.choices)), key=lambda i, d=d: d.choices[i])
            if d.name in ("filters", "layers")
            else None
            for d in space.decisions
        ]
        assert "filters" in names and "layers" in names

    def sample(
        self, n: int, warm: float = 0.0, closed: Sequence[int | None] | None = None
    ) -> list[tuple[int, ...]]:
        """``n`` token sequences; each block's filters and layers are the largest with
        probability ``warm``; where ``closed`` names a token, every sequence takes it."""
        decisions = self.space.decisions
        if self.sampling == "fair":
            perms = []
            for d in decisions:
                p = list(range(len(d.choices)))
                self.rng.shuffle(p)
                perms.append(p)
            out = [[perms[j][i % len(perms[j])] for j in range(len(decisions))] for i in range(n)]
        else:
            out = [[self.rng.randrange(len(d.choices)) for d in decisions] for _ in range(n)]
        if warm > 0:
            k = len(self.space.DECISION_NAMES)
            for tokens in out:
                for b in range(self.space.num_blocks):
                    if self.rng.random() < warm:
                        for j in range(b * k, (b + 1) * k):
                            if self._widest[j] is not None:
                                tokens[j] = self._widest[j]
        if closed is not None:
            for tokens in out:
                for j, t in enumerate(closed):
                    if t is not None:
                        tokens[j] = t
        return [tuple(t) for t in out]


def stage_plan(space: MnasSpace, total: int) -> list[tuple[int, list[int | None]]]:
    """Progressive shrinking over ``total`` steps: per stage, its first step and, per
    decision, the token it is held at (its largest choice) or ``None`` where it is open."""
    largest = space.encode(largest_specs(space))
    names = space.DECISION_NAMES
    plan, start = [], 0
    for share, open_names in STAGES:
        closed = [
            None if names[j % len(names)] in open_names else largest[j]
            for j in range(len(space.decisions))
        ]
        plan.append((start, closed))
        start += round(share * total)
    return plan


def train_supernet(
    net: Supernet,
    data: DatasetSplits,
    config: SupernetTrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> SupernetTrainResult:
    """Train ``net`` in place on ``data.train_*`` (on the device of its parameters).

    A non-finite loss stops training and is reported as ``diverged``.
    """
    device = device_of(net)
    data = place_data(data, device)
    space = net.space
    n = len(data.train_y)
    batch_size = min(config.batch_size, n)
    steps_per_epoch = n / batch_size
    total = max(1, math.ceil(config.epochs * steps_per_epoch))
    lr_warm = min(total, round(config.warmup_epochs * steps_per_epoch))
    path_warm = round(config.warmup_fraction * total)
    gen = torch.Generator().manual_seed(config.seed)
    sampler = PathSampler(space, config.sampling, config.seed)
    norm = Normalizer(data.mean, data.std, device)
    dtype = autocast_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    opt = _optimizer(net, config)
    big = net.choices(largest_specs(space))
    small = net.choices(smallest_specs(space))
    stages = stage_plan(space, total) if config.schedule == "progressive" else []
    closed: list[int | None] | None = None
    losses: list[float] = []
    diverged = False
    start, cpu_start = time.perf_counter(), time.process_time()
    net.train()
    with _threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        stream = index_stream(n, batch_size, total, gen, data.train_x.device)
        for step, idx in enumerate(stream):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, lr_warm, config.lr)
            warm = max(0.0, 1.0 - step / path_warm) if path_warm and not stages else 0.0
            if stages:
                now = max(i for i, (first, _) in enumerate(stages) if first <= step)
                if stages[now][1] is not closed:
                    closed = stages[now][1]
                    small = net.choices(space.decode(_smallest_open(space, closed)))
                    logger.info("supernet step %d: progressive shrinking stage %d", step, now)
            x = norm(to_device(data.train_x[idx], device))
            y = to_device(data.train_y[idx], device)
            paths = []
            if config.sandwich:
                paths = [big, small]
            n_random = config.subnets_per_step - len(paths)
            for tokens in sampler.sample(n_random, warm, closed):
                paths.append(net.choices(space.decode(tokens)))
            opt.zero_grad(set_to_none=True)
            teacher = None
            step_loss = math.nan
            for j, choice in enumerate(paths):
                with autocast(device, dtype):
                    logits = net.forward_choices(x, choice).float()
                if teacher is not None:
                    loss = F.kl_div(F.log_softmax(logits, 1), teacher, reduction="batchmean")
                else:
                    loss = F.cross_entropy(logits, y)
                if j == 0:
                    step_loss = loss.item()
                    if config.distill:
                        teacher = F.softmax(logits.detach(), 1)
                scaler.scale(loss / len(paths)).backward()
            if not math.isfinite(step_loss):
                logger.warning(
                    "supernet loss %s at step %d of %d: diverged", step_loss, step, total
                )
                diverged = True
                break
            scaler.step(opt)
            scaler.update()
            losses.append(step_loss)
            if progress is not None:
                progress(step + 1, total, step_loss)
            if step % 100 == 0:
                logger.info("supernet step %d/%d loss %.4f", step, total, step_loss)
    tail = losses[-max(1, len(losses) // 10) :]
    result = SupernetTrainResult(
        steps=len(losses),
        loss=sum(tail) / len(tail) if tail else math.nan,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        diverged=diverged,
    )
    logger.info(
        "supernet trained %d steps in %.1fs (%.1f CPU s): loss %.4f",
        result.steps,
        result.seconds,
        result.cpu_seconds,
        result.loss,
    )
    return result


class PathTrainer:
    """SGD steps on given sub-networks of a trained supernet: the weight updates of a
    TuNAS-style joint search, where the controller's own samples train the shared weights
    between its updates (``evaluator.supernet.joint_steps``).

    Each step trains one path on a random batch of the training split (own generator, seeded
    by ``config.seed``) at the constant learning rate ``lr``, with ``config``'s momentum and
    weight decay; the optimizer's momentum and the generator survive between calls and in
    :meth:`state_dict` (the search's resume).
    """

    def __init__(
        self, net: Supernet, data: DatasetSplits, config: SupernetTrainConfig, lr: float
    ) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"joint_lr={lr!r} must be a finite number > 0")
        self.net = net
        self.config = config
        self.device = device_of(net)
        self.data = place_data(data, self.device)
        self.norm = Normalizer(data.mean, data.std, self.device)
        self.opt = _optimizer(net, dataclasses.replace(config, lr=lr))
        self.gen = torch.Generator().manual_seed(config.seed + 1)
        self.dtype = autocast_dtype(config.amp, self.device)
        # fp16 (a GPU without bf16) trains with a loss scaler, as train_supernet does
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype is torch.float16)
        self.steps = 0
        self.cpu_seconds = 0.0
        """Process CPU time of every step so far (the joint search's training cost)."""

    def train(self, paths: Sequence[Sequence[BlockSpec]], steps_per_path: int) -> float:
        """``steps_per_path`` steps on each of ``paths`` in turn; returns the mean loss and
        leaves the supernet frozen in ``eval()`` as scoring expects.

        Raises:
            ValueError: on a non-finite loss (the weights are left as they were before
                that step).
        """
        net, data, cfg = self.net, self.data, self.config
        n = len(data.train_y)
        batch = min(cfg.batch_size, n)
        losses = []
        cpu_start = time.process_time()
        for p in net.parameters():
            p.requires_grad_(True)
        net.train()
        try:
            with _threads(cfg.threads):
                for specs in paths:
                    choice = net.choices(specs)
                    for _ in range(steps_per_path):
                        idx = torch.randint(n, (batch,), generator=self.gen)
                        idx = idx.to(data.train_x.device)  # the split lies on one device
                        x = self.norm(to_device(data.train_x[idx], self.device))
                        y = to_device(data.train_y[idx], self.device)
                        self.opt.zero_grad(set_to_none=True)
                        with autocast(self.device, self.dtype):
                            logits = net.forward_choices(x, choice).float()
                        loss = F.cross_entropy(logits, y)
                        if not math.isfinite(loss.item()):
                            raise ValueError(
                                f"joint supernet training diverged at step {self.steps} "
                                f"(loss {loss.item()}); lower evaluator.supernet.joint_lr"
                            )
                        self.scaler.scale(loss).backward()
                        self.scaler.step(self.opt)
                        self.scaler.update()
                        self.steps += 1
                        losses.append(loss.item())
        finally:
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
            self.cpu_seconds += time.process_time() - cpu_start
        return sum(losses) / len(losses) if losses else math.nan

    def state_dict(self) -> dict:
        """A copy (later steps leave it alone) of what resuming needs."""
        return copy.deepcopy(
            {
                "steps": self.steps,
                "cpu_seconds": self.cpu_seconds,
                "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(),
                "scaler": self.scaler.state_dict(),
            }
        )

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _smallest_open(space: MnasSpace, closed: Sequence[int | None]) -> tuple[int, ...]:
    """The smallest network whose closed decisions keep their token."""
    smallest = space.encode(smallest_specs(space))
    return tuple(s if c is None else c for s, c in zip(smallest, closed, strict=True))


def _optimizer(net: nn.Module, config: SupernetTrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
    )


@dataclass(frozen=True)
class ScoreConfig:
    """How a sub-network is scored."""

    bn: str = "recalibrate"
    """``recalibrate`` (BN statistics from fixed training batches) or ``batch``."""
    bn_batches: int = 2
    bn_batch_size: int = 256
    val_images: int = 1000
    """The first this many validation images (0: all)."""
    eval_batch_size: int = 500
    """Images per forward pass. With ``bn=batch`` these are the images whose statistics
    normalise each other; with ``bn=recalibrate`` it only groups the work (the result is the
    same), and on the CPU the work is done :data:`CPU_CHUNK` images at a time."""
    seed: int = 0
    """Seed of the BN re-estimation batches (the same for every architecture)."""
    amp: str = "auto"

    def __post_init__(self) -> None:
        if self.bn not in BN_MODES:
            raise ValueError(f"bn={self.bn!r}; allowed: {', '.join(BN_MODES)}")
        for name, low in (
            ("bn_batches", 1),
            ("bn_batch_size", 1),
            ("val_images", 0),
            ("eval_batch_size", 1),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        check_amp(self.amp)


CHEAP_SCORE = ScoreConfig(bn_batches=2, bn_batch_size=64, val_images=250, eval_batch_size=250)
"""About a quarter of the default's images (2 x 64 for the BN statistics, 250 validation
images): ~4x faster, and noisier (measured in docs/supernet.md). Two batches of 64 rather
than one of 128: the same images' worth of statistics, 14% less CPU time on the 2-core VM."""


def score_subnet(
    net: Supernet, specs: Sequence[BlockSpec], data: DatasetSplits, config: ScoreConfig
) -> tuple[float, float]:
    """``(accuracy, loss)`` of the sub-network ``specs`` with the supernet's weights on the
    first ``config.val_images`` validation images.

    On the CPU the sub-network runs in channels-last layout, and after the BN statistics are
    re-estimated they are folded into the convolutions (:func:`~mnas.nn.fuse.fold_batchnorm`)
    before the validation pass, which goes :data:`CPU_CHUNK` images at a time: the same
    scores (to float rounding), 2.9x less CPU time on 120 Fashion-MNIST children
    (docs/supernet.md)."""
    return score_network(net.extract(specs), data, config)


def score_network(sub: nn.Module, data: DatasetSplits, config: ScoreConfig) -> tuple[float, float]:
    """``(accuracy, loss)`` of an extracted sub-network (:meth:`Supernet.extract`), scored as
    :func:`score_subnet` scores it. ``sub`` is changed: with ``bn=recalibrate`` its BN
    statistics are re-estimated (and on the CPU folded into its convolutions,
    :func:`recalibrated`); on the CPU it is put in channels-last layout."""
    data = place_data(data, device_of(sub))
    val_x, val_y = data.val_x, data.val_y
    if config.val_images:
        val_x, val_y = val_x[: config.val_images], val_y[: config.val_images]
    if len(val_y) == 0:
        raise ValueError(f"{data.name} has no validation images to score sub-networks on")
    if config.bn == "recalibrate":
        sub, chunk = recalibrated(sub, data, config)
        return evaluate(sub, val_x, val_y, data.mean, data.std, chunk, config.amp)
    if device_of(sub).type == "cpu":
        sub = sub.to(memory_format=torch.channels_last)
    return _evaluate_batch_stats(sub, val_x, val_y, data, config)


def recalibrated(sub: nn.Module, data: DatasetSplits, config: ScoreConfig) -> tuple[nn.Module, int]:
    """``sub`` (changed in place) ready for ``bn=recalibrate`` scoring, and the images per
    forward pass to score it with: BN statistics re-estimated on ``config``'s training
    batches (``data`` on ``sub``'s device); on the CPU in channels-last layout with the BN
    layers then folded into the convolutions, :data:`CPU_CHUNK` images at a time."""
    on_cpu = device_of(sub).type == "cpu"
    if on_cpu:
        sub = sub.to(memory_format=torch.channels_last)
    recalibrate_bn(
        sub,
        data.train_x,
        data.mean,
        data.std,
        batch_size=config.bn_batch_size,
        num_batches=config.bn_batches,
        generator=torch.Generator().manual_seed(config.seed),
        amp=config.amp,
    )
    chunk = config.eval_batch_size
    if on_cpu:
        sub.eval()
        fold_batchnorm(sub)
        chunk = min(chunk, CPU_CHUNK)
    return sub, chunk


@torch.no_grad()
def _evaluate_batch_stats(
    sub: nn.Module, x: Tensor, y: Tensor, data: DatasetSplits, config: ScoreConfig
) -> tuple[float, float]:
    device = device_of(sub)
    dtype = autocast_dtype(config.amp, device)
    norm = Normalizer(data.mean, data.std, device)
    sub.train()
    for m in sub.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(y), config.eval_batch_size):
        xb = norm(to_device(x[start : start + config.eval_batch_size], device))
        yb = to_device(y[start : start + config.eval_batch_size], device)
        with autocast(device, dtype):
            logits = sub(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += int((logits.argmax(1) == yb).sum())
    return correct / len(y), loss_sum / len(y)


def probe_subnets(
    net: Supernet, data: DatasetSplits, config: ScoreConfig, n: int = 8, seed: int = 0
) -> list[float]:
    """Accuracies of ``n`` random sub-networks (the same draw for every supernet of the
    space), scored as :func:`score_subnet` scores a child.

    A supernet whose random sub-networks score at chance cannot rank architectures, however
    well its largest network learned (the sandwich rule trains that one on the labels)."""
    if n < 1:
        raise ValueError(f"n={n!r} must be >= 1")
    rng = random.Random(seed)
    space = net.space
    return [
        score_subnet(net, space.decode(space.sample(rng).tokens), data, config)[0] for _ in range(n)
    ]
