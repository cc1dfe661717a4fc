"""Structured-config schemas for Hydra: every group of ``conf/`` and its fields.

The schemas make OmegaConf reject a misspelt key, a wrongly typed value or a name outside
a closed set (the enums below, made from the library's own registries) at compose time;
:mod:`mnas.conf.validate` then checks ranges before any work. Scripts turn these configs
into plain arguments (:mod:`mnas.conf.arguments`); library code never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore

from mnas.data import DATASETS
from mnas.evaluate.executors import EXECUTORS
from mnas.latency.cache import DEFAULT_CACHE_PATH
from mnas.latency.settings import KINDS
from mnas.search.controller import CONTROLLERS
from mnas.search.ppo import ADVANTAGES
from mnas.search.reward import PRESETS
from mnas.search.strategies import STRATEGIES
from mnas.space import SPACES
from mnas.training import OPTIMIZERS
from mnas.training.device import AMP_MODES
from mnas.training.supernet import BN_MODES, SAMPLINGS, SCHEDULES


class _Name(str, Enum):
    """A name from a closed set: compares equal to its string and prints as it."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def _names(cls_name: str, names) -> type[_Name]:
    return _Name(cls_name, {n: n for n in names})


DatasetName = _names("DatasetName", DATASETS)
SpaceName = _names("SpaceName", SPACES)
OptimizerName = _names("OptimizerName", OPTIMIZERS)
AmpMode = _names("AmpMode", AMP_MODES)
LatencyKind = _names("LatencyKind", KINDS)
RewardPreset = _names("RewardPreset", [*PRESETS, "custom"])
StrategyName = _names("StrategyName", STRATEGIES)
ExecutorName = _names("ExecutorName", EXECUTORS)
EvaluatorName = _names("EvaluatorName", ("trained", "tabular", "supernet"))
SamplingName = _names("SamplingName", SAMPLINGS)
ScheduleName = _names("ScheduleName", SCHEDULES)
BnMode = _names("BnMode", BN_MODES)
KernelSharing = _names("KernelSharing", ("crop", "separate"))
ControllerKind = _names("ControllerKind", CONTROLLERS)
AdvantageKind = _names("AdvantageKind", ADVANTAGES)


@dataclass
class DataConf:
    name: DatasetName = DatasetName.digits  # digits | fashion_mnist | cifar10 | imagefolder
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
    name: SpaceName = SpaceName.mnas  # mnas | mnas_mbconv | nasbench201


@dataclass
class TrainerConf:
    epochs: float = 1.0  # budget in passes over the training set
    max_steps: int | None = None  # optional cap on optimizer steps
    batch_size: int = 64  # images per optimizer step
    optimizer: OptimizerName = OptimizerName.sgd  # sgd | rmsprop | adam
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
    amp: AmpMode = (
        AmpMode.auto
    )  # mixed precision: auto (GPU: bf16, else fp16; CPU: off) | bf16 | fp16 | off
    deterministic: bool = False  # GPU: deterministic cuDNN kernels instead of the fastest


@dataclass
class LatencyConf:
    kind: LatencyKind = LatencyKind.measured  # measured (ORT) | lut | predictor | macs
    threads: int = 1  # ORT intra-op threads (the paper: one big core)
    batch_size: int = 1  # batch of the timed runs
    warmup: int = 5  # untimed runs first
    min_runs: int = 15  # at least this many timed runs
    max_runs: int = 300  # at most this many timed runs
    rel_ci: float = 0.01  # stop when the median's 95% CI half-width is below this fraction
    time_cap_s: float = 0.6  # or when this many seconds of timing have passed
    clock: str = "auto"  # cpu (thread CPU time, 1 thread) | wall (elapsed) | auto (cpu if 1)
    pin_cpu: int | None = None  # pin timing to this CPU (Linux), None: no pinning
    reference: bool = True  # interleave a reference network and correct the machine's drift
    references: list[str] = field(default_factory=lambda: ["auto"])
    # ^ reference networks, each in a block of its own: auto (space:7 + space:11 up to 32x32,
    #   mobilenetv2 above) | mobilenetv2 | space:SEED (several: the geometric mean of their
    #   medians reads the machine's speed)
    cache: str | None = DEFAULT_CACHE_PATH  # measurements + drift nominal (None: off)
    lut_path: str | None = None  # table built by scripts/latency_table.py (kind=lut)
    predictor_path: str | None = None  # scripts/latency_table.py --predictor (kind=predictor)
    out_of_range: str = "warn"  # predictor: warn | refuse a network outside the fitted range
    remeasure_front: bool | None = None  # time the final front on ORT (None: on for lut/predictor)
    graph_optimization: str = "all"  # ORT graph optimisations: all|extended|basic|disabled
    repeats: int = 1  # time each network this many times (new session each), median of all runs
    predictor_recheck: int = 20  # predictor_path=auto: re-time this many of its networks when
    # it was last timed over an hour ago, and re-calibrate it if that helps (0: never)


@dataclass
class RewardConf:
    preset: RewardPreset = (
        RewardPreset.soft
    )  # soft (alpha=beta=-0.07) | hard (alpha=0, beta=-1) | custom
    alpha: float | None = None  # exponent when LAT <= T (None: from preset)
    beta: float | None = None  # exponent when LAT > T (None: from preset)
    target_ms: Any = "auto"  # T in the latency source's units, or auto (MobileNetV2's latency)


@dataclass
class StrategyConf:
    name: StrategyName = StrategyName.ppo  # ppo | reinforce | random | evolution
    lr: float = 0.1  # Adam learning rate of the controller
    adam_beta1: float = 0.0  # Adam's first-moment decay (TuNAS: 0)
    clip_eps: float = 0.2  # PPO clipping range
    epochs: int = 4  # PPO passes over each batch
    entropy_coef: float = 1e-5  # entropy bonus
    max_grad_norm: float = 1.0  # gradient clipping
    advantages: AdvantageKind = AdvantageKind.rank  # rank | baseline
    baseline_decay: float = 0.7  # baseline advantages: EMA decay of the reward baseline
    normalize_advantages: bool = True  # baseline advantages: centre, divide by floored std
    resample: int = 50  # redraws per architecture proposed before (0: keep repeats)
    population: int = 10  # evolution: population size
    sample_size: int = 3  # evolution: tournament size


@dataclass
class ControllerConf:
    kind: ControllerKind = ControllerKind.independent  # independent | lstm
    temperature: float = 1.0  # logits are divided by it
    tanh_constant: float | None = None  # cap logits at C * tanh(logits) (None: no cap)
    hidden_size: int | None = None  # lstm only: units (None: NASNet's 100)
    init_range: float | None = None  # lstm only: weights uniform in +-init_range (None: 0.1)


@dataclass
class ExecutorConf:
    name: ExecutorName = ExecutorName.serial  # serial | pool | ray
    workers: int | None = None  # pool: processes (None: one per core); ray: None = CPUs/threads
    threads_per_worker: int | None = None  # torch threads per trainer (pool: cores/workers; ray: 1)
    address: str | None = None  # ray: cluster address (auto: a running cluster), None: local
    retries: int = 1  # a crashed worker's architecture is retried this often, then failed
    latency_resource: str | None = None  # ray: custom resource of the node that times children
    gpus_per_worker: float | None = None  # share of a GPU per child (None: 1; 0.25: 4 per GPU)
    child_timeout_s: Any = "auto"  # seconds per child (auto: from the trainer budget; null: none)


@dataclass
class SupernetConf:
    """evaluator=supernet: training of the weight-sharing supernet and scoring of children."""

    epochs: float = 2.0  # passes over the training set (each batch trains subnets_per_step)
    batch_size: int = 64  # images per supernet step
    lr: float = 0.05  # peak SGD learning rate (warm-up, then cosine)
    momentum: float = 0.9  # SGD (Nesterov) momentum
    weight_decay: float = 4e-5  # L2 on weights
    warmup_epochs: float = 0.2  # learning-rate warm-up
    subnets_per_step: int = 3  # sub-networks whose gradients make one step
    sampling: SamplingName = SamplingName.fair  # fair (every choice equally often) | uniform
    sandwich: bool = True  # largest + smallest network in every step (BigNAS)
    distill: bool = True  # in-place distillation from the largest network (needs sandwich)
    warmup_fraction: float = 0.25  # TuNAS warm-up: share of steps favouring the largest blocks
    schedule: ScheduleName = ScheduleName.joint  # joint | progressive (once-for-all stages)
    kernel_sharing: KernelSharing = KernelSharing.crop  # crop (3x3 = centre of 5x5) | separate
    bn: BnMode = BnMode.recalibrate  # BN statistics: recalibrate (train batches) | batch
    bn_batches: int = 2  # training batches that re-estimate a child's BN statistics
    bn_batch_size: int = 256  # images per re-estimation batch
    val_images: int = 1000  # validation images a child is scored on (0: all)
    eval_batch_size: int = 500  # images per scoring forward pass
    threads: int | None = None  # torch threads while training (None: leave as is)
    standalone_top_k: int = 3  # front points re-trained stand-alone and re-timed at the end
    joint_steps: int = 0  # 0: frozen after training; k: TuNAS-style, k SGD steps per new child
    joint_lr: float = 0.005  # constant learning rate of the joint steps


@dataclass
class EvaluatorConf:
    name: EvaluatorName = (
        EvaluatorName.trained
    )  # trained (proxy training + latency) | tabular (NAS-Bench-201 table) | supernet
    table: str | None = None  # tabular: CSV path (default $MNAS_DATA/nasbench201/...)
    dataset: str = "cifar10"  # tabular: cifar10 | cifar100 | imagenet16
    metric: str = "valid_acc_12ep"  # tabular: column searched on
    device: str = "pixel3"  # tabular: latency column
    supernet: SupernetConf = field(default_factory=SupernetConf)  # supernet: see SupernetConf


@dataclass
class SearchConf:
    steps: int = 8  # controller updates
    batch_size: int = 8  # architectures sampled per update
    seed: int = 0  # seeds the strategy (controller weights, sampling); trainers: trainer.seed
    resume: str | None = None  # run directory to continue
    tensorboard: bool = True  # write tb/ and pareto.png
    hparams: bool = True  # one TensorBoard HParams session per architecture
    device: str = "auto"  # children train on cpu | cuda | cuda:N | auto (cuda if there is one)
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


@dataclass
class RetrainConf:
    """Schema of ``conf/retrain.yaml`` (groups: data, model, trainer, latency)."""

    arch: str = "mobilenetv2"  # what to retrain: see mnas/deploy/choose.py (ARCH_FORMS)
    run: str | None = None  # search run directory (hash look-up, all=true, data/model defaults)
    all: bool = False  # retrain every point of <run>/pareto.json, then the references
    references: list[str] = field(default_factory=lambda: ["mobilenetv2", "mnasnet_a1"])
    # ^ with all=true: references retrained under the same budget for the comparison table
    from_run: bool = True  # take data/model settings from <run>/run.json (CLI overrides win)
    out_dir: str | None = None  # output folder (None: Hydra's run directory)
    device: str = "auto"  # training: cpu | cuda | cuda:N | auto (export, latency: always CPU)
    export_batch_size: int = 1  # static batch of model.onnx
    onnx_check_images: int = 64  # real test images compared between ONNX Runtime and PyTorch
    onnx_atol: float = 1e-4  # allowed |ONNX - PyTorch| of a logit: atol + rtol * |PyTorch|
    onnx_rtol: float = 1e-5  # (float32 BN folding reorders sums: scale-relative rounding)
    tensorboard: bool = True  # with all=true: accuracy-vs-latency figure under <out>/tb
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    latency: LatencyConf = field(default_factory=LatencyConf)


@dataclass
class TransferConf:
    """Schema of ``conf/transfer.yaml`` (groups: data, trainer, latency)."""

    pretrained: bool = False  # start from ImageNet weights (torchvision enum or weights_path)
    weights_path: str | None = None  # local torchvision mnasnet1_0 ImageNet state dict (.pth)
    bn_momentum: float | None = None  # override torchvision's 0.0003 (None: keep it)
    out_dir: str | None = None  # output folder (None: Hydra's run directory)
    device: str = "auto"  # training: cpu | cuda | cuda:N | auto (export, latency: always CPU)
    export_batch_size: int = 1  # static batch of model.onnx
    onnx_check_images: int = 64  # real test images compared between ONNX Runtime and PyTorch
    onnx_atol: float = 1e-4  # allowed |ONNX - PyTorch| of a logit: atol + rtol * |PyTorch|
    onnx_rtol: float = 1e-5  # (see mnas.deploy.ExportSettings)
    data: DataConf = field(default_factory=DataConf)
    trainer: TrainerConf = field(default_factory=TrainerConf)
    latency: LatencyConf = field(default_factory=LatencyConf)


def register_configs() -> None:
    """Register the schemas so that ``conf/*.yaml`` can extend them."""
    cs = ConfigStore.instance()
    cs.store(name="search_schema", node=SearchConf)
    cs.store(name="retrain_schema", node=RetrainConf)
    cs.store(name="transfer_schema", node=TransferConf)
