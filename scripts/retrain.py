"""Retrain found architectures fully; report test accuracy, latency, params, MACs; export ONNX.

    python scripts/retrain.py arch=outputs/search/<run>/pareto.json:0
    python scripts/retrain.py all=true run=outputs/search/<run>          # the whole front + refs
    python scripts/retrain.py arch=mnasnet_a1 data=cifar10 trainer.epochs=10
    python scripts/retrain.py -m arch=<run>/pareto.json:0,<run>/pareto.json:1,mobilenetv2

Config: conf/retrain.yaml (schema mnas/conf/schema.py:RetrainConf). Each model's folder gets
metrics.json, model.pt and model.onnx; with all=true the output folder also gets summary.txt,
summary.json, comparison.png and a TensorBoard figure (tb/).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from mnas.conf import register_configs
from mnas.conf.arguments import (
    export_settings,
    latency_settings,
    load_data,
    plain,
    train_config,
)
from mnas.deploy import (
    ArchChoice,
    ComparisonBoard,
    EpochProgress,
    comparison_table,
    read_run_json,
    resolve_choices,
    retrain,
    write_comparison,
)
from mnas.space import reference
from mnas.training.device import resolve_device

log = logging.getLogger(__name__)
register_configs()

RUN_SECTIONS = ("data", "model")
# The search's subset sizes make its proxy cheap; a full retrain uses the whole split.
PROXY_ONLY = {"data": {"train_size", "val_size", "test_size"}, "model": set()}


def apply_run_settings(cfg: DictConfig, run_json: dict, overrides: list[str]) -> None:
    """Make the run's data/model settings the defaults: every field saved in ``run.json``
    replaces the configured one unless the command line set it (``data.x=...``) or chose
    another group (``data=...``), except the proxy's subset sizes (``PROXY_ONLY``)."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    for section in RUN_SECTIONS:
        if section in keys:
            continue
        explicit = {k[len(section) + 1 :] for k in keys if k.startswith(f"{section}.")}
        for key, value in (run_json.get(section) or {}).items():
            if key in cfg[section] and key not in explicit | PROXY_ONLY[section]:
                cfg[section][key] = value


def choices_of(cfg: DictConfig) -> tuple[list[ArchChoice], str | None]:
    """The architectures to retrain (references appended with all=true) and the run dir."""
    choices = resolve_choices(cfg.arch, cfg.run, cfg.all)
    run_dir = cfg.run or next((c.run_dir for c in choices if c.run_dir), None)
    if cfg.all:
        choices += [ArchChoice(name, reference(name), "reference") for name in cfg.references]
    return choices, run_dir


def validate(cfg: DictConfig) -> list[ArchChoice]:
    """Every check that can run before loading data; returns what will be retrained."""
    resolve_device(cfg.device)
    train_config(cfg.trainer)
    latency_settings(cfg.latency, measured_only=True)
    export_settings(cfg)
    if cfg.model.width_mult <= 0:
        raise ValueError(f"model.width_mult={cfg.model.width_mult} must be > 0")
    if cfg.model.stem_stride < 1:
        raise ValueError(f"model.stem_stride={cfg.model.stem_stride} must be >= 1")
    if cfg.all:
        for name in cfg.references:
            reference(name)
    return choices_of(cfg)[0]


def output_dir(cfg: DictConfig) -> Path:
    if cfg.out_dir is not None:
        return Path(cfg.out_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


class ConfigError(ValueError):
    """A bad setting, found before any training."""


def run(cfg: DictConfig, overrides: list[str] = ()) -> float:
    """Validate, load data, retrain every chosen architecture, print the table.

    Returns the best test accuracy among the found architectures (the reference's when only a
    reference was retrained), so that sweeps can optimise it.
    """
    try:
        _, run_dir = choices_of(cfg)
        if run_dir is not None and cfg.from_run:
            apply_run_settings(cfg, read_run_json(run_dir), list(overrides))
        choices = validate(cfg)
        device = resolve_device(cfg.device)
        config = train_config(cfg.trainer)
        latency = latency_settings(cfg.latency, measured_only=True)
        out = output_dir(cfg)
        data = load_data(cfg.data)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from e
    build_kwargs = plain(cfg.model)
    log.info(
        "retraining %d architecture(s) on %s on %s into %s", len(choices), data.name, device, out
    )
    board = None
    if len(choices) > 1 and cfg.tensorboard:
        board = ComparisonBoard(out / "tb")
        print(f"tensorboard:   tensorboard --logdir {board.log_dir}   (comparison, per model)")
    rows = []
    for i, choice in enumerate(choices, start=1):
        progress = EpochProgress(
            len(data.train_y),
            config.batch_size,
            lambda n, desc: tqdm(total=n, desc=desc, unit="step", leave=len(choices) == 1),
        )
        progress.prefix = f"[{i}/{len(choices)}] {choice.label} " if len(choices) > 1 else ""
        folder = out / f"{choice.label}_{choice.arch.hash[:8]}" if len(choices) > 1 else out
        try:
            metrics = retrain(
                choice,
                data,
                config,
                build_kwargs,
                folder,
                latency,
                export_settings(cfg),
                device,
                progress,
            )
        finally:
            progress.close()
        rows.append(metrics)
        if board is not None:
            board.update(rows)
        tqdm.write(
            f"{choice.label}: test accuracy {100 * metrics['test_accuracy']:.2f}%, "
            f"ORT {metrics['latency_ms']:.3f} ms {metrics['latency_scale']} "
            f"({metrics['latency_raw_ms']:.3f} raw), {metrics['params']:,} params -> {folder}"
        )
    if len(rows) > 1:
        write_comparison(rows, out)
    print(comparison_table(rows))
    print(f"files in {out}")
    if board is not None:
        board.close()
        print(f"tensorboard:   tensorboard --logdir {board.log_dir}")
    found = [r["test_accuracy"] for r in rows if r["source"] != "reference"] or [
        r["test_accuracy"] for r in rows
    ]
    return max(found)


@hydra.main(version_base=None, config_path="../conf", config_name="retrain")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    try:
        return run(cfg, list(HydraConfig.get().overrides.task))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
