"""Turning config nodes into the library's plain arguments and frozen settings objects.

Every function here takes one node of a composed config (``cfg.trainer``, ``cfg.latency``,
...) and returns what the library takes; this is the only place besides
:mod:`mnas.conf.runner` that reads configs.
"""

from __future__ import annotations

import math
import os
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnas.data import DatasetSplits, load_dataset
from mnas.deploy import ExportSettings
from mnas.latency import LatencySettings
from mnas.search.ppo import PPOConfig
from mnas.search.reward import PRESETS
from mnas.training import TrainConfig


def plain(cfg: DictConfig | Any) -> dict:
    """A config node as a plain, resolved dict (names of closed sets as strings)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return dict(cfg)


def name_of(value: Any) -> str:
    """A name from a closed set as a plain string (a schema's enum, or the string a saved
    config holds)."""
    return value.value if isinstance(value, Enum) else str(value)


def train_config(cfg: DictConfig, seed: int | None = None) -> TrainConfig:
    """The library's :class:`mnas.training.TrainConfig` from a ``trainer`` node (validates)."""
    kwargs = plain(cfg)
    if seed is not None:
        kwargs["seed"] = seed
    return TrainConfig(**kwargs)


def supernet_settings(cfg: DictConfig, seed: int, amp: str = "auto"):
    """:class:`mnas.evaluate.supernet.SupernetSettings` from ``evaluator.supernet`` (validates);
    ``seed`` is the search's, ``amp`` the trainer's."""
    from mnas.evaluate.supernet import SupernetSettings
    from mnas.training.supernet import ScoreConfig, SupernetTrainConfig

    c = plain(cfg)
    score_keys = ("bn", "bn_batches", "bn_batch_size", "val_images", "eval_batch_size")
    score = ScoreConfig(**{k: c.pop(k) for k in score_keys}, seed=seed, amp=amp)
    sharing, top_k = c.pop("kernel_sharing"), c.pop("standalone_top_k")
    joint_steps, joint_lr = c.pop("joint_steps"), c.pop("joint_lr")
    train = SupernetTrainConfig(**c, seed=seed, amp=amp)
    return SupernetSettings(train, score, sharing, top_k, joint_steps, joint_lr)


def ppo_config(cfg: DictConfig) -> PPOConfig:
    """The library's :class:`mnas.search.ppo.PPOConfig` from a ``strategy`` node (validates)."""
    return PPOConfig(
        clip_eps=cfg.clip_eps,
        epochs=cfg.epochs,
        entropy_coef=cfg.entropy_coef,
        max_grad_norm=cfg.max_grad_norm,
        advantages=name_of(cfg.advantages),
        baseline_decay=cfg.baseline_decay,
        normalize_advantages=cfg.normalize_advantages,
    )


def reward_params(cfg: DictConfig) -> tuple[float, float]:
    """(alpha, beta) from a ``reward`` node: the preset, with explicit values winning."""
    preset = name_of(cfg.preset)
    if preset != "custom" and preset not in PRESETS:
        raise ValueError(f"reward.preset={preset!r}; allowed: {[*PRESETS, 'custom']}")
    if preset == "custom" and (cfg.alpha is None or cfg.beta is None):
        raise ValueError("reward.preset=custom needs reward.alpha and reward.beta")
    alpha, beta = PRESETS.get(preset, (None, None))
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


def child_timeout(cfg: DictConfig) -> float | str | None:
    """``executor.child_timeout_s`` of an ``executor`` node as seconds, ``"auto"`` or None
    (no limit)."""
    t = cfg.get("child_timeout_s", "auto")
    if t is None or t == "auto":
        return t
    try:
        seconds = float(t)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(t, bool) or not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"executor.child_timeout_s={t!r}; allowed: seconds > 0, "
            "auto (from the trainer budget) or null (no limit)"
        )
    return seconds


def data_root(cfg: DictConfig) -> str | None:
    root = cfg.root if cfg.root is not None else os.environ.get("MNAS_DATA")
    return os.path.expanduser(root) if root else None


def load_data(cfg: DictConfig) -> DatasetSplits:
    """Load the dataset a ``data`` node describes (:func:`mnas.data.load_dataset`)."""
    return load_dataset(
        name_of(cfg.name),
        root=data_root(cfg),
        image_size=cfg.image_size,
        train_size=cfg.train_size,
        val_size=cfg.val_size,
        test_size=cfg.test_size,
        seed=cfg.seed,
        download=cfg.download,
    )


def latency_settings(cfg: DictConfig, measured_only: bool = False) -> LatencySettings:
    """:class:`LatencySettings` from a ``latency`` node (validated). ``measured_only``: the
    caller times a trained model on ONNX Runtime, so ``lut`` and ``macs`` are errors."""
    kind = name_of(cfg.kind)
    if measured_only and kind != "measured":
        raise ValueError(
            f"latency.kind={kind!r}: a trained model is timed on ONNX Runtime; use latency=measured"
        )
    if kind == "lut" and OmegaConf.is_missing(cfg, "lut_path"):
        raise ValueError("latency.kind=lut needs latency.lut_path (scripts/latency_table.py)")
    if kind == "predictor" and OmegaConf.is_missing(cfg, "predictor_path"):
        raise ValueError(
            "latency.kind=predictor needs latency.predictor_path "
            "(scripts/latency_table.py --predictor)"
        )
    return LatencySettings(**plain(cfg))


def export_settings(cfg: Any) -> ExportSettings:
    """:class:`ExportSettings` from a config with ``export_batch_size``, ``onnx_check_images``,
    ``onnx_atol`` and ``onnx_rtol`` (validated)."""
    return ExportSettings(
        cfg["export_batch_size"], cfg["onnx_check_images"], cfg["onnx_atol"], cfg["onnx_rtol"]
    )
