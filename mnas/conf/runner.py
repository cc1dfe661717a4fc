"""Glue from a composed search config to library objects (used by scripts/search.py).

This is the one place that reads a whole config: it turns each node into the plain
arguments of the library's constructors, so that the library itself never sees one.
It lives in the package rather than in the script so tests can call it directly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnas.conf.arguments import (
    child_timeout,
    data_root,
    latency_settings,
    name_of,
    plain,
    ppo_config,
    reward_params,
    supernet_settings,
    target_value,
    train_config,
)
from mnas.conf.schema import SearchConf
from mnas.conf.validate import search_device, validate_search
from mnas.data import DataSpec
from mnas.evaluate.executors import make_executor
from mnas.evaluate.tabular import NB201Table, TableEvaluator, TabularEvaluator
from mnas.evaluate.trained import ModelSpec, TrainedEvaluator, default_time_limit
from mnas.latency import make_latency_evaluator, measured_ort_latency, resolve_auto_predictor
from mnas.search import RUN_INFO, Search, make_strategy
from mnas.search.loop import check_same_experiment
from mnas.search.pareto import median_reference
from mnas.search.records import unit_key, write_atomic
from mnas.space import make_space

log = logging.getLogger(__name__)

SAVED_CONFIG = "config.yaml"
NB201_CSV = "nasbench201/nb201_acc_latency.csv"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

# What a resumed run may change: none of it changes a result (how many steps, how the work
# is spread over processes and how long a child may take, what is logged). Everything else
# is the experiment.
RESUMABLE = ("steps", "executor", "tensorboard", "hparams")
NOT_RESUMABLE = {"executor.latency_resource": "where latency is measured"}
WHY_FIXED = {
    "data": "the data children are trained and scored on",
    "model": "the networks that are built",
    "space": "the search space",
    "trainer": "how children are trained",
    "latency": "how latency is measured",
    "reward": "the reward",
    "strategy": "the strategy",
    "controller": "the strategy's controller",
    "evaluator": "how children are evaluated",
    "seed": "the sampled sequence",
    "batch_size": "the sampled sequence",
    "device": "where children train (and so their numerics)",
}
_MISSING = object()


def _refuse(override: str, key: str) -> ValueError:
    why = NOT_RESUMABLE.get(key) or WHY_FIXED.get(key.split(".")[0], "the experiment")
    return ValueError(
        f"resume: {override} would change {why}; a resumed run may change only steps, "
        "executor.* (not executor.latency_resource), tensorboard and hparams. "
        "Start a new run directory for another experiment."
    )


def _is_resumable(key: str) -> bool:
    return key not in NOT_RESUMABLE and key.split(".")[0] in RESUMABLE


def load_resume_config(
    run_dir: str | Path, overrides: list[str], conf_dir: str | Path = CONF_DIR
) -> DictConfig:
    """The saved config of a run with the command line's overrides of what cannot change a
    result: ``steps`` (``steps=20`` extends a search), ``executor`` settings (a group choice
    such as ``executor=pool`` included), ``tensorboard``, ``hparams``; ``hydra.*`` is
    Hydra's own. Any other override, and any key the schema lacks (``+foo=1`` included), is
    refused before any work, naming the key and what it would change.
    """
    path = Path(run_dir) / SAVED_CONFIG
    if not path.exists():
        raise ValueError(
            f"resume={run_dir}: no {SAVED_CONFIG} there; is it a search run directory?"
        )
    # On the schema, so that a resumed run's overrides are checked like a new run's.
    schema = OmegaConf.structured(SearchConf)
    cfg = OmegaConf.merge(schema, OmegaConf.load(path))
    OmegaConf.set_struct(cfg, True)
    for o in overrides:
        if o.startswith(("resume=", "hydra.")):
            continue
        key, sep, value = o.lstrip("+").partition("=")
        if o.startswith("~") or not sep:
            raise ValueError(f"resume: override {o!r}: only key=value overrides can resume")
        current = OmegaConf.select(cfg, key, default=_MISSING)
        if current is _MISSING:
            raise ValueError(
                f"resume: {key} does not name a setting of the search (override {o!r})"
            )
        if isinstance(current, DictConfig):  # a group choice, e.g. executor=pool
            if not _is_resumable(key):
                raise _refuse(o, key)
            group = Path(conf_dir) / key / f"{value}.yaml"
            if not group.exists():
                raise ValueError(f"resume: override {o!r}: no {group}")
            cfg[key] = OmegaConf.merge(schema[key], OmegaConf.load(group))
            continue
        new = OmegaConf.from_dotlist([f"{key}={value}"])
        if OmegaConf.select(new, key) == current:
            continue  # restating the saved value changes nothing
        if not _is_resumable(key):
            raise _refuse(o, key)
        cfg.merge_with(new)
    cfg.resume = str(run_dir)
    return cfg


def experiment_settings(cfg: DictConfig) -> dict:
    """The settings that decide a search's results: the whole config less what a resumed
    run may change (and ``resume`` itself)."""
    out = {k: v for k, v in plain(cfg).items() if k not in RESUMABLE and k != "resume"}
    out["executor"] = {"latency_resource": cfg.executor.latency_resource}
    return out


def make_strategy_from(cfg: DictConfig, space):
    s = cfg.strategy
    name = name_of(s.name)
    if name in ("ppo", "reinforce"):
        ctl = plain(cfg.controller)
        return make_strategy(
            name,
            space,
            seed=cfg.seed,
            lr=s.lr,
            adam_beta1=s.adam_beta1,
            ppo=ppo_config(s),
            resample=s.resample,
            controller=name_of(ctl.pop("kind")),
            **ctl,
        )
    if name == "evolution":
        return make_strategy(
            name, space, seed=cfg.seed, population=s.population, sample_size=s.sample_size
        )
    return make_strategy(name, space, seed=cfg.seed)


def make_executor_from(cfg: DictConfig):
    """The search's executor; it resolves ``device`` where its workers run."""
    kwargs = {k: v for k, v in plain(cfg.executor).items() if k not in ("name", "child_timeout_s")}
    return make_executor(name_of(cfg.executor.name), device=search_device(cfg), **kwargs)


def build_search(cfg: DictConfig, run_dir: str | Path, tensorboard: bool | None = None) -> Search:
    """Validate ``cfg`` and assemble a :class:`Search` writing to ``run_dir``.

    Raises:
        ValueError: for any bad setting, before data is loaded or anything is timed.
    """
    validate_search(cfg)
    run_dir = Path(run_dir)
    experiment = experiment_settings(cfg)
    check_same_experiment(run_dir, experiment)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The effective config (a resume's new steps or executor included), so that the next
    # resume starts from it.
    write_atomic(run_dir / SAVED_CONFIG, OmegaConf.to_yaml(cfg).encode())
    alpha, beta = reward_params(cfg.reward)
    target = target_value(cfg.reward)
    if target is None and (run_dir / RUN_INFO).exists():
        import json

        info = json.loads((run_dir / RUN_INFO).read_text())
        target = info[unit_key("target", info.get("latency_unit", "ms"))]
        log.info("resume: target T = %.4g from the run", target)
    space = make_space(name_of(cfg.space.name))
    strategy = make_strategy_from(cfg, space)
    unit = "ms"
    remeasure = None
    if name_of(cfg.evaluator.name) == "tabular":
        path = cfg.evaluator.table or (
            os.path.join(os.environ["MNAS_DATA"], NB201_CSV)
            if os.environ.get("MNAS_DATA")
            else None
        )
        if not path or not os.path.exists(path):
            raise ValueError(
                f"evaluator=tabular needs the NAS-Bench-201 table: evaluator.table={path!r} "
                "does not exist (set evaluator.table, or MNAS_DATA so that "
                f"$MNAS_DATA/{NB201_CSV} exists)"
            )
        table = TabularEvaluator(
            NB201Table(path), cfg.evaluator.dataset, cfg.evaluator.metric, cfg.evaluator.device
        )
        if target is None:
            target, _ = median_reference(table.latencies, table.accuracies, table.table.connected)
            log.info("target T = %.4g ms: median latency of connected cells", target)
        evaluator = TableEvaluator(table)
        run_info = {"evaluator": plain(cfg.evaluator)}
    else:
        # Built first: a missing optional dependency (Ray) is a config error before any work.
        executor = make_executor_from(cfg)
        try:
            evaluator, run_info, target, unit = _trained_parts(
                cfg, space, executor, target, run_dir
            )
            remeasure = _front_remeasure(cfg)
        except BaseException:
            executor.close()
            raise
    tb = None
    if cfg.tensorboard if tensorboard is None else tensorboard:
        from mnas.search.tensorboard import HPARAMS_DIR, SEARCH_DIR, TBLogger

        tb = TBLogger(run_dir / SEARCH_DIR, run_dir / HPARAMS_DIR if cfg.hparams else None)
    return Search(
        run_dir,
        space,
        strategy,
        evaluator,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        target=target,
        alpha=alpha,
        beta=beta,
        tb=tb,
        run_info=run_info,
        latency_unit=unit,
        experiment=experiment,
        remeasure=remeasure,
    )


def _front_remeasure(cfg: DictConfig):
    """What re-times the final front on ONNX Runtime (``latency.remeasure_front``; on by
    default for a predicted latency), on the search's drift-corrected scale; or None."""
    settings = latency_settings(cfg.latency)
    if not settings.remeasures_front or settings.kind == "macs":
        return None
    ort_latency = measured_ort_latency(settings, **latency_setup_from(cfg))
    return ort_latency.measure_afresh


def data_spec_from(cfg: DictConfig) -> DataSpec:
    """The search's dataset: train and validation splits only (no test set is loaded)."""
    return DataSpec(
        name=name_of(cfg.data.name),
        root=data_root(cfg.data),
        image_size=cfg.data.image_size,
        train_size=cfg.data.train_size,
        val_size=cfg.data.val_size,
        test_size=0,
        seed=cfg.data.seed,
        download=cfg.data.download,
    )


def latency_setup_from(cfg: DictConfig) -> dict:
    """The network setup the search times children at (``input_size``, ``in_channels``,
    ``num_classes``, ``width_mult``, ``stem_stride``), as :func:`make_latency_evaluator`
    takes it. Channels and classes come from the dataset itself; only a few images are
    loaded to learn them."""
    from mnas.data.spec import get_dataset

    splits = get_dataset(replace(data_spec_from(cfg), train_size=16, val_size=8))
    return dict(
        input_size=cfg.data.image_size,
        in_channels=splits.in_channels,
        num_classes=splits.num_classes,
        width_mult=cfg.model.width_mult,
        stem_stride=cfg.model.stem_stride,
    )


def model_spec_from(cfg: DictConfig, splits) -> ModelSpec:
    """How the search builds its children: the ``model`` node, with classes and channels
    from the dataset (``splits``, a :class:`mnas.data.DatasetSplits`)."""
    return ModelSpec(
        num_classes=splits.num_classes,
        in_channels=splits.in_channels,
        width_mult=cfg.model.width_mult,
        stem_stride=cfg.model.stem_stride,
        dropout=cfg.model.dropout,
        bn_momentum=cfg.model.bn_momentum,
    )


def _trained_parts(cfg: DictConfig, space, executor, target: float | None, run_dir: Path):
    """Evaluator, run info, target and unit of a search that trains its children (or scores
    them with a supernet: ``evaluator=supernet``)."""
    from mnas.data.spec import get_dataset

    data = data_spec_from(cfg)
    splits = get_dataset(data)
    model = model_spec_from(cfg, splits)
    net = dict(
        input_size=cfg.data.image_size,
        in_channels=splits.in_channels,
        num_classes=splits.num_classes,
        width_mult=cfg.model.width_mult,
        stem_stride=cfg.model.stem_stride,
    )
    # predictor_path=auto: this machine's predictor, built here on first use (minutes)
    settings = resolve_auto_predictor(latency_settings(cfg.latency), net, _predictor_progress)
    latency = make_latency_evaluator(settings, **net)
    unit = "MMACs" if settings.kind == "macs" else "ms"
    train = train_config(cfg.trainer)
    limit = child_timeout(cfg.executor)
    if limit == "auto":
        limit = default_time_limit(train, len(splits.train_y), len(splits.val_y))
        log.info("child time limit: %g s (executor.child_timeout_s=auto)", limit)
    evaluator = TrainedEvaluator(
        latency,
        executor,
        model,
        data,
        train,
        input_size=cfg.data.image_size,
        device=executor.device,
        time_limit_s=limit,
    )
    log.info("children train on %s (executor %s)", executor.device, executor.name)
    if name_of(cfg.evaluator.name) == "supernet":
        evaluator = _supernet_evaluator(cfg, space, evaluator, latency, settings, run_dir)
    if target is None:
        # timed where the children will be timed (the latency device, if there is one)
        baseline = space.architecture(space.baseline_tokens())
        ((_, target, _, err),) = evaluator.time_children([baseline])
        if err:
            raise ValueError(f"reward.target_ms=auto: cannot time MobileNetV2: {err}")
        log.info("target T = %.4g %s: MobileNetV2 at this width and input size", target, unit)
    run_info = {
        "data": plain(cfg.data),
        "model": plain(cfg.model),
        "num_classes": splits.num_classes,
        "in_channels": splits.in_channels,
        "input_size": cfg.data.image_size,
        "latency": plain(cfg.latency),
        "trainer": plain(cfg.trainer),
        "device": executor.device,
    }
    if settings.kind == "predictor":  # the file, where the config says auto
        run_info["latency"]["predictor_path"] = settings.predictor_path
    if name_of(cfg.evaluator.name) == "supernet":
        run_info["evaluator"] = plain(cfg.evaluator)
    return evaluator, run_info, target, unit


def _predictor_progress(done: int, total: int, seconds: float) -> None:
    if done % 10 == 0 or done == total:
        log.info("latency predictor: %d/%d timings (two passes), %.0f s", done, total, seconds)


def _supernet_evaluator(cfg: DictConfig, space, trained, latency, settings, run_dir: Path):
    """A supernet evaluator whose end-of-search check trains with ``trained`` and times on
    ONNX Runtime whatever the search's latency kind (a table or MACs are not the runtime)."""
    from dataclasses import replace

    from mnas.evaluate.supernet import SupernetEvaluator

    if settings.kind != "measured":
        trained.latency = make_latency_evaluator(
            replace(settings, kind="measured", lut_path=None),
            input_size=cfg.data.image_size,
            in_channels=trained.model.in_channels,
            num_classes=trained.model.num_classes,
            width_mult=cfg.model.width_mult,
            stem_stride=cfg.model.stem_stride,
        )
    sn = supernet_settings(cfg.evaluator.supernet, cfg.seed, name_of(cfg.trainer.amp))
    log.info("children scored by a supernet on %s", trained.device)
    return SupernetEvaluator(
        latency,
        space,
        trained.model,
        trained.data,
        sn,
        run_dir,
        input_size=cfg.data.image_size,
        device=trained.device,
        standalone=trained if sn.standalone_top_k > 0 else None,
    )
