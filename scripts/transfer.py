"""The MNASNet transfer experiments (torchvision mnasnet1_0 on CIFAR-10 / Fashion-MNIST).

    MNAS_DATA=../shared/datasets python scripts/transfer.py transfer_experiment=cifar10
    MNAS_DATA=../shared/datasets python scripts/transfer.py transfer_experiment=fashion_mnist
    python scripts/transfer.py transfer_experiment=cifar10 pretrained=true weights_path=mnasnet.pth

Config: conf/transfer.yaml (schema mnas/conf/schema.py:TransferConf). Writes metrics.json,
model.pt and model.onnx to the run directory and prints the report's table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from mnas.conf import register_configs
from mnas.conf.arguments import export_settings, latency_settings, load_data, train_config
from mnas.deploy import EpochProgress, finalize
from mnas.experiments.transfer import (
    TORCHVISION_BN_MOMENTUM,
    imagenet_state_dict,
    train_transfer,
    transfer_model,
)
from mnas.training.device import resolve_device

log = logging.getLogger(__name__)
register_configs()


def validate(cfg: DictConfig) -> None:
    """Every check that can run before loading data or building the model."""
    resolve_device(cfg.device)
    train_config(cfg.trainer)
    latency_settings(cfg.latency, measured_only=True)
    if cfg.weights_path is not None and not cfg.pretrained:
        raise ValueError(f"weights_path={cfg.weights_path!r} needs pretrained=true")
    if cfg.bn_momentum is not None and not 0.0 < cfg.bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum={cfg.bn_momentum} must lie in (0, 1] or be null")
    export_settings(cfg)


def output_dir(cfg: DictConfig) -> Path:
    if cfg.out_dir is not None:
        return Path(cfg.out_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def format_table(m: dict) -> str:
    """The course report's table, one row: dataset, parameters, accuracy, latencies."""
    header = (
        "dataset",
        "pretrained",
        "parameters",
        "test acc",
        "stale-BN acc",
        f"ORT ms/img ({m['latency_scale']})",
        f"ORT ms/batch{m['batch']}",
        "torch raw ms/img",
        f"torch raw ms/batch{m['batch']}",
    )
    row = (
        m["dataset"],
        str(m["pretrained"]).lower(),
        f"{m['params']:,}",
        f"{100 * m['test_accuracy']:.2f}%",
        f"{100 * m['test_accuracy_stale_bn']:.2f}%",
        f"{m['latency_ms']:.3f}",
        f"{m['latency_batch_ms']:.2f}",
        f"{m['latency_torch_raw_ms']:.3f}",
        f"{m['latency_torch_batch_raw_ms']:.2f}",
    )
    widths = [max(len(a), len(b)) for a, b in zip(header, row, strict=True)]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    cells = "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
    return "\n".join([line, "-" * len(line), cells])


def run(cfg: DictConfig) -> float:
    """Compose-independent body: validate, load, train, measure, write; returns test accuracy."""
    validate(cfg)
    device = resolve_device(cfg.device)
    # Before any data is loaded: missing weights must fail at once.
    weights = imagenet_state_dict(cfg.weights_path) if cfg.pretrained else None
    config = train_config(cfg.trainer)
    latency = latency_settings(cfg.latency, measured_only=True)
    out = output_dir(cfg)
    data = load_data(cfg.data)
    model = transfer_model(data.in_channels, data.num_classes, weights, cfg.bn_momentum)
    progress = EpochProgress(
        len(data.train_y), config.batch_size, lambda n, desc: tqdm(total=n, desc=desc, unit="step")
    )
    result = train_transfer(model, data, config, progress, device=device)
    progress.close()
    metrics = {
        "dataset": data.name,
        "pretrained": bool(cfg.pretrained),
        "weights_path": cfg.weights_path,
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "test_accuracy_stale_bn": result.test_accuracy_stale_bn,
        "bn_momentum": cfg.bn_momentum if cfg.bn_momentum is not None else TORCHVISION_BN_MOMENTUM,
        "bn_recalibrate": config.bn_recalibrate,
        "train_loss": result.train_loss,
        "train_steps": result.steps,
        "train_seconds": result.seconds,
        "diverged": result.diverged,
        "device": result.device,
        "precision": result.precision,
        "image_size": data.image_size,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
    }
    checkpoint = {
        "torchvision": "mnasnet1_0",
        "build_kwargs": {"in_channels": data.in_channels, "num_classes": data.num_classes},
    }
    metrics = finalize(
        model,
        data,
        out,
        f"mnasnet1_0 on {data.name}",
        checkpoint,
        metrics,
        latency,
        export_settings(cfg),
        batch_latency=config.batch_size,
    )
    print(format_table(metrics))
    print(
        f"ONNX vs PyTorch max |diff| {metrics['onnx_max_abs_diff']:.2e} on "
        f"{metrics['onnx_checked_images']} test images; files in {out}"
    )
    return metrics["test_accuracy"]


@hydra.main(version_base=None, config_path="../conf", config_name="transfer")
def main(cfg: DictConfig) -> float:
    return run(cfg)


if __name__ == "__main__":
    main()
