"""Structured-config schemas for Hydra, and the checks that run before any work.

The schemas make OmegaConf reject a misspelt key or a wrongly typed value at compose
time; :func:`validate_search` then checks ranges (alpha <= 0, T > 0, batch >= 1, ...)
by building the library's own frozen settings objects, so every rule lives in one place.
Scripts turn these configs into plain arguments; library code never sees them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


@dataclass
class DataConf:
    name: str = "digits"  # digits | fashion_mnist | cifar10 | imagefolder
    root: str | None = None  # data folder; default: the MNAS_DATA environment variable
    image_size: int = 32  # images are resized to image_size x image_size
    train_size: int | None = None  # training images (None: all that remain after val)
    val_size: int | None = None  # validation images held out from train (None: dataset default)
    test_size: int | None = None  # test images (None: the whole test set)
    seed: int = 0  # seed of the train/validation split
    download: bool = False  # let torchvision download Fashion-MNIST / CIFAR-10 into root


@dataclass
class ModelConf:
    width_mult: float = 1.0  # multiplier on every width of the child networks
    stem_stride: int = 1  # stride of the stem conv (1 for 28-32 px inputs, 2 for 224 px)
    dropout: float = 0.2  # dropout before the classifier
    bn_momentum: float = 0.1  # BatchNorm momentum (PyTorch convention)


@dataclass
class SpaceConf:
    name: str = "mnas"  # mnas | nasbench201


@dataclass
class TrainerConf:
    epochs: float = 1.0  # budget in passes over the training set
    max_steps: int | None = None  # optional cap on optimizer steps
    batch_size: int = 64  # images per optimizer step
    optimizer: str = "sgd"  # sgd | rmsprop | adam
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD / RMSProp momentum
    weight_decay: float = 4e-5  # L2 on weights (not on biases / BN)
    warmup_epochs: float = 0.0  # linear warm-up, then cosine to zero
    label_smoothing: float = 0.0  # label smoothing of the training loss
    augment: bool = False  # random crop + flip on tensors
    hflip: bool | None = None  # flip when augmenting (None: by dataset)
    bn_recalibrate: bool = True  # re-estimate BN statistics before evaluation
    bn_recalibrate_batches: int = 8  # batches used to re-estimate them
    seed: int = 0  # seed of data order, augmentation, dropout
    threads: int | None = None  # torch threads while training (None: leave as is)
    eval_batch_size: int = 512  # batch size of evaluation


@dataclass
class LatencyConf:
    kind: str = "measured"  # measured (ONNX Runtime) | lut (lookup table) | macs
    threads: int = 1  # ORT intra-op threads (the paper: one big core)
    batch_size: int = 1  # batch of the timed runs
    warmup: int = 5  # untimed runs first
    min_runs: int = 15  # at least this many timed runs
    max_runs: int = 300  # at most this many timed runs
    rel_ci: float = 0.01  # stop when the median's 95% CI half-width is below this fraction
    time_cap_s: float = 0.6  # or when this many seconds of timing have passed
    pin_cpu: int | None = None  # pin timing to this CPU (Linux), None: no pinning
    reference: bool = True  # interleave a reference network and correct the machine's drift
    cache: str | None = "~/.cache/mnas/latency.sqlite"  # persistent cache (None: off)
    lut_path: str | None = None  # table built by scripts/latency_table.py (kind=lut)


@dataclass
class RewardConf:
    preset: str = "soft"  # soft (alpha=beta=-0.07) | hard (alpha=0, beta=-1) | custom
    alpha: float | None = None  # exponent when LAT <= T (None: from preset)
    beta: float | None = None  # exponent when LAT > T (None: from preset)
    target_ms: Any = "auto"  # T in the latency source's units, or auto (MobileNetV2's latency)


@dataclass
class StrategyConf:
    name: str = "ppo"  # ppo | reinforce | random | evolution
    lr: float = 0.01  # Adam learning rate of the controller
    clip_eps: float = 0.2  # PPO clipping range
    epochs: int = 4  # PPO passes over each batch
    entropy_coef: float = 1e-5  # entropy bonus
    max_grad_norm: float = 1.0  # gradient clipping
    baseline_decay: float = 0.7  # EMA decay of the reward baseline
    normalize_advantages: bool = True  # divide advantages by their batch std
    population: int = 10  # evolution: population size
    sample_size: int = 3  # evolution: tournament size


@dataclass
class ControllerConf:
    hidden_size: int = 100  # LSTM units (NASNet: 100)
    temperature: float = 1.0  # logits are divided by it
    tanh_constant: float | None = None  # cap logits at C * tanh(logits) (None: no cap)
    init_range: float = 0.1  # weights uniform in +-init_range


@dataclass
class ExecutorConf:
    name: str = "serial"  # serial | pool | ray
    workers: int | None = None  # pool: processes (None: one per core); ray: None = CPUs/threads
    threads_per_worker: int | None = None  # torch threads per trainer (pool: cores/workers; ray: 1)
    address: str | None = None  # ray: cluster address (auto: a running cluster), None: local
    retries: int = 1  # a crashed worker's architecture is retried this often, then failed
    latency_resource: str | None = None  # ray: custom resource of the node that times children


@dataclass
class EvaluatorConf:
    name: str = "trained"  # trained (proxy training + latency) | tabular (NAS-Bench-201 table)
    table: str | None = None  # tabular: CSV path (default $MNAS_DATA/nasbench201/...)
    dataset: str = "cifar10"  # tabular: cifar10 | cifar100 | imagenet16
    metric: str = "valid_acc_12ep"  # tabular: column searched on
    device: str = "pixel3"  # tabular: latency column


@dataclass
class SearchConf:
    steps: int = 8  # controller updates
    batch_size: int = 8  # architectures sampled per update
    seed: int = 0  # seeds the strategy and the trainers
    resume: str | None = None  # run directory to continue
    tensorboard: bool = True  # write tb/ and pareto.png
    hparams: bool = True  # one TensorBoard HParams session per architecture
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    space: SpaceConf = field(default_factory=SpaceConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    latency: LatencyConf = field(default_factory=LatencyConf)
    reward: RewardConf = field(default_factory=RewardConf)
    strategy: StrategyConf = field(default_factory=StrategyConf)
    controller: ControllerConf = field(default_factory=ControllerConf)
    executor: ExecutorConf = field(default_factory=ExecutorConf)
    evaluator: EvaluatorConf = field(default_factory=EvaluatorConf)


def register_configs() -> None:
    """Register the schemas so that ``conf/*.yaml`` can extend them."""
    cs = ConfigStore.instance()
    cs.store(name="search_schema", node=SearchConf)


def plain(cfg: DictConfig | Any) -> dict:
    """A config node as a plain, resolved dict."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def train_config(cfg: DictConfig, seed: int | None = None):
    """The library's :class:`mnas.train.TrainConfig` from a ``trainer`` node (validates)."""
    from mnas.train import TrainConfig

    kwargs = plain(cfg)
    if seed is not None:
        kwargs["seed"] = seed
    return TrainConfig(**kwargs)


def reward_params(cfg: DictConfig) -> tuple[float, float]:
    """(alpha, beta) from a ``reward`` node: the preset, with explicit values winning."""
    from mnas.reward import PRESETS

    if cfg.preset != "custom" and cfg.preset not in PRESETS:
        raise ValueError(f"reward.preset={cfg.preset!r}; allowed: {[*PRESETS, 'custom']}")
    if cfg.preset == "custom" and (cfg.alpha is None or cfg.beta is None):
        raise ValueError("reward.preset=custom needs reward.alpha and reward.beta")
    alpha, beta = PRESETS.get(cfg.preset, (None, None))
    alpha = cfg.alpha if cfg.alpha is not None else alpha
    beta = cfg.beta if cfg.beta is not None else beta
    return float(alpha), float(beta)


def target_value(cfg: DictConfig) -> float | None:
    """The target T as a number, or None for ``auto``."""
    t = cfg.target_ms
    if isinstance(t, str):
        if t == "auto":
            return None
        try:
            t = float(t)
        except ValueError:
            raise ValueError(f"reward.target_ms={t!r}; allowed: a number > 0 or 'auto'") from None
    return float(t)


def data_root(cfg: DictConfig) -> str | None:
    root = cfg.root if cfg.root is not None else os.environ.get("MNAS_DATA")
    return os.path.expanduser(root) if root else None


def load_data(cfg: DictConfig):
    """Load the dataset a ``data`` node describes (:func:`mnas.data.load_dataset`)."""
    from mnas.data import load_dataset

    return load_dataset(
        cfg.name,
        root=data_root(cfg),
        image_size=cfg.image_size,
        train_size=cfg.train_size,
        val_size=cfg.val_size,
        test_size=cfg.test_size,
        seed=cfg.seed,
        download=cfg.download,
    )


def validate_search(cfg: DictConfig) -> None:
    """Every check that can run before any work; raises ValueError naming the key."""
    from mnas.ppo import PPOConfig
    from mnas.reward import check_reward_params
    from mnas.strategies import STRATEGIES

    for key in ("steps", "batch_size"):
        if cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    if cfg.seed < 0:
        raise ValueError(f"seed={cfg.seed} must be >= 0")
    if cfg.strategy.name not in STRATEGIES:
        raise ValueError(f"strategy.name={cfg.strategy.name!r}; allowed: {list(STRATEGIES)}")
    PPOConfig(
        clip_eps=cfg.strategy.clip_eps,
        epochs=cfg.strategy.epochs,
        entropy_coef=cfg.strategy.entropy_coef,
        max_grad_norm=cfg.strategy.max_grad_norm,
        baseline_decay=cfg.strategy.baseline_decay,
        normalize_advantages=cfg.strategy.normalize_advantages,
    )
    if cfg.strategy.lr <= 0:
        raise ValueError(f"strategy.lr={cfg.strategy.lr} must be > 0")
    alpha, beta = reward_params(cfg.reward)
    target = target_value(cfg.reward)
    check_reward_params(target if target is not None else 1.0, alpha, beta)
    if cfg.space.name not in ("mnas", "nasbench201"):
        raise ValueError(f"space.name={cfg.space.name!r}; allowed: ['mnas', 'nasbench201']")
    if cfg.evaluator.name not in ("trained", "tabular"):
        raise ValueError(f"evaluator.name={cfg.evaluator.name!r}; allowed: ['trained', 'tabular']")
    if (cfg.space.name == "nasbench201") != (cfg.evaluator.name == "tabular"):
        raise ValueError(
            f"space={cfg.space.name} with evaluator={cfg.evaluator.name}: the nasbench201 space "
            "is evaluated by evaluator=tabular, the mnas space by evaluator=trained"
        )
    if cfg.executor.name not in ("serial", "pool", "ray"):
        raise ValueError(f"executor.name={cfg.executor.name!r}; allowed: serial, pool, ray")
    if cfg.executor.retries < 0:
        raise ValueError(f"executor.retries={cfg.executor.retries} must be >= 0")
    for key in ("workers", "threads_per_worker"):
        value = cfg.executor[key]
        if value is not None and value < 1:
            raise ValueError(f"executor.{key}={value} must be >= 1")
    if cfg.evaluator.name == "trained":
        if cfg.latency.kind not in ("measured", "lut", "macs"):
            raise ValueError(f"latency.kind={cfg.latency.kind!r}; allowed: measured, lut, macs")
        if cfg.latency.kind == "lut" and not cfg.latency.lut_path:
            raise ValueError("latency.kind=lut needs latency.lut_path (scripts/latency_table.py)")
        if cfg.model.width_mult <= 0:
            raise ValueError(f"model.width_mult={cfg.model.width_mult} must be > 0")
        if cfg.model.stem_stride < 1:
            raise ValueError(f"model.stem_stride={cfg.model.stem_stride} must be >= 1")
        if cfg.data.image_size < 1:
            raise ValueError(f"data.image_size={cfg.data.image_size} must be >= 1")
        train_config(cfg.trainer)
