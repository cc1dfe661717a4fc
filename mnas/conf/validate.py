"""Every check of a search config that can run before any work.

Names of closed sets (strategy, executor, latency kind, space, optimizer, reward preset)
are enums in :mod:`mnas.conf.schema`, checked by OmegaConf when the config is composed;
ranges are checked here by building the library's own frozen settings objects, so every
rule lives in one place.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from mnas.conf.arguments import (
    child_timeout,
    latency_settings,
    name_of,
    ppo_config,
    reward_params,
    supernet_settings,
    target_value,
    train_config,
)
from mnas.conf.schema import SearchConf
from mnas.evaluate.executors import check_gpu_share
from mnas.search.reward import check_reward_params
from mnas.training.device import check_device


def search_device(cfg: DictConfig) -> str:
    """The search's ``device``; ``cpu`` for a run saved before it had one (it trained there)."""
    return OmegaConf.select(cfg, "device", default="cpu")


def unknown_keys(cfg: DictConfig, schema: type) -> list[str]:
    """Dotted keys of ``cfg`` that ``schema`` (a structured-config dataclass) lacks: Hydra's
    ``+key=value`` adds them to a composed config, and nothing would read them."""
    known = OmegaConf.to_container(OmegaConf.structured(schema), resolve=False)
    given = OmegaConf.to_container(cfg, resolve=False)

    def walk(have: dict, allowed: dict, prefix: str) -> list[str]:
        out = []
        for key, value in have.items():
            name = f"{prefix}{key}"
            if key not in allowed:
                out.append(name)
            elif isinstance(value, dict) and isinstance(allowed[key], dict):
                out += walk(value, allowed[key], f"{name}.")
        return out

    return walk(given, known, "")


def validate_search(cfg: DictConfig) -> None:
    """Raises ValueError naming the key of the first bad setting."""
    extra = unknown_keys(cfg, SearchConf)
    if extra:
        key = extra[0]
        raise ValueError(
            f"{key}={OmegaConf.select(cfg, key)!r}: {key} is not a setting of the search "
            "(Hydra's '+' adds keys, but nothing reads them); settings: docs/configuration.md"
        )
    for key in ("steps", "batch_size"):
        if cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]} must be >= 1")
    if cfg.seed < 0:
        raise ValueError(f"seed={cfg.seed} must be >= 0")
    ppo_config(cfg.strategy)
    if cfg.strategy.lr <= 0:
        raise ValueError(f"strategy.lr={cfg.strategy.lr} must be > 0")
    if not 0 <= cfg.strategy.adam_beta1 < 1:
        raise ValueError(f"strategy.adam_beta1={cfg.strategy.adam_beta1} must lie in [0, 1)")
    if cfg.strategy.resample < 0:
        raise ValueError(f"strategy.resample={cfg.strategy.resample} must be >= 0")
    if name_of(cfg.controller.kind) == "independent":
        for key in ("hidden_size", "init_range"):
            if cfg.controller[key] is not None:
                raise ValueError(
                    f"controller.{key}={cfg.controller[key]} is an LSTM setting; "
                    "use controller=nasnet (kind lstm) or leave it null"
                )
    alpha, beta = reward_params(cfg.reward)
    target = target_value(cfg.reward)
    check_reward_params(target if target is not None else 1.0, alpha, beta)
    space, evaluator = name_of(cfg.space.name), name_of(cfg.evaluator.name)
    if (space == "nasbench201") != (evaluator == "tabular"):
        raise ValueError(
            f"space={space} with evaluator={evaluator}: the nasbench201 space "
            "is evaluated by evaluator=tabular, the mnas space by evaluator=trained or supernet"
        )
    if cfg.executor.retries < 0:
        raise ValueError(f"executor.retries={cfg.executor.retries} must be >= 0")
    for key in ("workers", "threads_per_worker"):
        value = cfg.executor[key]
        if value is not None and value < 1:
            raise ValueError(f"executor.{key}={value} must be >= 1")
    child_timeout(cfg.executor)
    if evaluator == "supernet":
        supernet_settings(cfg.evaluator.supernet, cfg.seed, name_of(cfg.trainer.amp))
    if evaluator in ("trained", "supernet"):
        # Whether the device exists is decided with the executor, which knows where its
        # workers run (this machine, or a Ray cluster).
        check_device(search_device(cfg))
        check_gpu_share(OmegaConf.select(cfg, "executor.gpus_per_worker"))
        latency_settings(cfg.latency)
        if cfg.model.width_mult <= 0:
            raise ValueError(f"model.width_mult={cfg.model.width_mult} must be > 0")
        if cfg.model.stem_stride < 1:
            raise ValueError(f"model.stem_stride={cfg.model.stem_stride} must be >= 1")
        if cfg.data.image_size < 1:
            raise ValueError(f"data.image_size={cfg.data.image_size} must be >= 1")
        train_config(cfg.trainer)
