"""The supernet evaluator: children timed, then scored with a weight-sharing supernet.

Train-then-search: the supernet (:mod:`mnas.nn.supernet`) is trained once at the search's
set-up (or loaded from the run directory's ``supernet.pt``), then frozen; each child is
timed like a trained child (one at a time, on the CPU) and scored with the supernet's
weights (:func:`mnas.training.supernet.score_subnet`). Scores are cached by architecture
hash. With ``joint_steps > 0`` (TuNAS-style joint search) the trained supernet keeps
learning during the search: before a batch of children is scored, each child's own path
takes ``joint_steps`` SGD steps (:class:`~mnas.training.supernet.PathTrainer`), the
scores of earlier batches are forgotten, and ``supernet.pt`` is rewritten with the weights,
the optimizer and the step count, so a resumed search goes on from there.
:meth:`SupernetEvaluator.standalone` trains chosen architectures from scratch with the
trained evaluator's own :func:`~mnas.evaluate.trained.train_child` and times them again, so
that the end of a search reports both scores.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mnas.data.spec import DataSpec, get_dataset
from mnas.evaluate.protocol import FAILED, OK, EvalResult
from mnas.evaluate.trained import ModelSpec, TrainedEvaluator, latency_failure, time_batch
from mnas.nn.stats import model_stats
from mnas.nn.supernet import KERNEL_SHARING, Supernet
from mnas.space import Architecture, MnasSpace
from mnas.training.batches import device_of
from mnas.training.supernet import (
    PathTrainer,
    ScoreConfig,
    SupernetTrainConfig,
    probe_subnets,
    score_network,
    train_supernet,
)

log = logging.getLogger(__name__)

SUPERNET_CHECKPOINT = "supernet.pt"
PROBE_SUBNETS = 8
"""Random sub-networks scored once after training, to tell a supernet that ranks from one
whose sub-networks are at chance."""
PROBE_MARGIN = 0.05
"""Mean probe accuracy below chance + this is reported as 'at chance'."""


@dataclass(frozen=True)
class SupernetSettings:
    """Everything that decides a supernet and its scores."""

    train: SupernetTrainConfig = SupernetTrainConfig()
    score: ScoreConfig = ScoreConfig()
    kernel_sharing: str = "crop"
    standalone_top_k: int = 3
    """Front points trained stand-alone (and timed again) at the end of a search."""
    joint_steps: int = 0
    """0: the supernet is frozen after training (train-then-search); k > 0: TuNAS-style
    joint search, k SGD steps on each new child's path before its batch is scored."""
    joint_lr: float = 0.005
    """Constant learning rate of the joint steps."""

    def __post_init__(self) -> None:
        if self.kernel_sharing not in KERNEL_SHARING:
            raise ValueError(
                f"kernel_sharing={self.kernel_sharing!r}; allowed: {', '.join(KERNEL_SHARING)}"
            )
        k = self.standalone_top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"standalone_top_k={k!r} must be an integer >= 0")
        j = self.joint_steps
        if isinstance(j, bool) or not isinstance(j, int) or j < 0:
            raise ValueError(f"joint_steps={j!r} must be an integer >= 0")
        if not (math.isfinite(self.joint_lr) and self.joint_lr > 0):
            raise ValueError(f"joint_lr={self.joint_lr!r} must be a finite number > 0")

    def identity(self, model: ModelSpec, data: DataSpec) -> dict:
        """What a saved supernet must match to be reused (scoring may change freely; a
        jointly trained one also records its joint settings)."""
        out = {
            "train": dataclasses.asdict(dataclasses.replace(self.train, threads=None)),
            "kernel_sharing": self.kernel_sharing,
            "model": dataclasses.asdict(model),
            "data": _data_identity(dataclasses.asdict(data)),
        }
        if self.joint_steps:
            out["joint"] = {"steps": self.joint_steps, "lr": self.joint_lr}
        return out


def _data_identity(data: dict) -> dict:
    """What the data is, not where it lies: a supernet trained where the datasets sit under
    another directory (a GPU machine, a cluster node) or with a download allowed is the same."""
    return {k: v for k, v in data.items() if k not in ("root", "download")}


def checkpoint_identity(
    settings: SupernetSettings, model: ModelSpec, data: DataSpec, space: MnasSpace
) -> dict:
    """What ``supernet.pt`` records of how its supernet was made."""
    return {**settings.identity(model, data), "space": space.name}


def load_or_train(
    path: str | Path,
    space: MnasSpace,
    model: ModelSpec,
    data: DataSpec,
    settings: SupernetSettings,
    device: str = "cpu",
) -> tuple[Supernet, dict]:
    """The supernet saved at ``path`` if it was made with the same settings, else a new one
    trained now and saved there (atomically). A supernet that a joint search has trained
    (``joint_steps``) matches only the same joint settings; one that none has, any. Returns
    it (frozen, in ``eval()``) and its training record (steps, loss, seconds, cpu_seconds).

    Raises:
        ValueError: ``path`` holds a supernet made with other settings (naming them), or
            training diverged.
    """
    path = Path(path)
    # The supernet's initial weights come from the training seed alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.train.seed)
        net = Supernet(
            space,
            model.num_classes,
            model.in_channels,
            model.width_mult,
            model.stem_stride,
            model.dropout,
            model.bn_momentum,
            kernel_sharing=settings.kernel_sharing,
        )
    identity = checkpoint_identity(settings, model, data, space)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        # supernets saved before spaces other than "mnas" existed did not record it
        saved_identity = {"space": "mnas", **saved["identity"]}
        # supernets saved before the data's location left the identity recorded it
        saved_identity["data"] = _data_identity(saved_identity.get("data", {}))
        if "joint" not in saved:
            # never trained jointly: the training before any joint step is the same whatever
            # the joint settings, so a frozen supernet may start a joint search
            saved_identity.pop("joint", None)
            wanted = {k: v for k, v in identity.items() if k != "joint"}
        else:
            wanted = identity
        if saved_identity != wanted:
            diff = sorted(
                k for k in {*wanted, *saved_identity} if saved_identity.get(k) != wanted.get(k)
            )
            raise ValueError(
                f"{path} holds a supernet trained with other {', '.join(diff)} settings; "
                "remove it or use the settings it was trained with"
            )
        net.load_state_dict(saved["state"])
        net.to(device)
        log.info("supernet loaded from %s", path)
        record = saved["record"]
    else:
        net.to(device)
        result = train_supernet(net, get_dataset(data), settings.train)
        if result.diverged:
            raise ValueError(
                "supernet training diverged; lower supernet.lr or raise supernet.warmup_epochs"
            )
        record = dataclasses.asdict(result)
        record["device"] = device
        save_supernet(path, identity, net, record)
        log.info("supernet trained and saved to %s", path)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, record


def save_supernet(
    path: Path, identity: dict, net: Supernet, record: dict, joint: dict | None = None
) -> None:
    """Write a supernet checkpoint atomically (temporary file + rename); ``joint``: the
    joint search's :meth:`PathTrainer.state_dict`."""
    tmp = path.with_name(path.name + ".tmp")
    saved = {"identity": identity, "state": net.state_dict(), "record": record}
    if joint is not None:
        saved["joint"] = joint
    torch.save(saved, tmp)
    os.replace(tmp, path)


class SupernetEvaluator:
    """Latency phase (as :class:`~mnas.evaluate.trained.TrainedEvaluator`), then each child
    scored with the supernet: frozen, or with ``settings.joint_steps`` trained on each
    batch's paths first (joint search).

    Args:
        latency: latency evaluator of the search (``measure(arch) -> LatencyStats``).
        space: the MnasNet space.
        model: builder arguments (the supernet is built at the same set-up).
        data: the search's dataset (its validation split scores the children).
        settings: supernet training and scoring.
        run_dir: where ``supernet.pt`` is kept (reused on resume).
        input_size: image size (MACs).
        device: where the supernet trains and scores (``cpu``, ``cuda``, ``cuda:N``).
        standalone: the trained evaluator that trains chosen architectures from scratch
            at the end (its latency evaluator should time on the real runtime); ``None``:
            no stand-alone check.
    """

    def __init__(
        self,
        latency,
        space: MnasSpace,
        model: ModelSpec,
        data: DataSpec,
        settings: SupernetSettings,
        run_dir: str | Path,
        input_size: int,
        device: str = "cpu",
        standalone: TrainedEvaluator | None = None,
    ) -> None:
        self.latency = latency
        self.space = space
        self.model = model
        self.data = data
        self.settings = settings
        self.path = Path(run_dir) / SUPERNET_CHECKPOINT
        self.input_size = input_size
        self.device = device
        self.standalone_evaluator = standalone
        self.cache: dict[str, tuple[float, int, int]] = {}
        self._net: Supernet | None = None
        self.record: dict = {}
        self.trainer: PathTrainer | None = None

    @property
    def net(self) -> Supernet:
        if self._net is None:
            self._net, self.record = load_or_train(
                self.path, self.space, self.model, self.data, self.settings, self.device
            )
            if self.settings.joint_steps:
                self.trainer = PathTrainer(
                    self._net, get_dataset(self.data), self.settings.train, self.settings.joint_lr
                )
                if self.record.get("joint_steps_done"):  # a joint search's checkpoint
                    saved = torch.load(self.path, map_location="cpu", weights_only=False)
                    self.trainer.load_state_dict(saved["joint"])
                    log.info("joint supernet resumed after %d steps", self.trainer.steps)
            self._probe()
        return self._net

    def _train_jointly(self, archs: Sequence[Architecture]) -> None:
        """The joint search's weight updates on ``archs``' paths, then the checkpoint."""
        net = self.net
        assert self.trainer is not None
        start = time.perf_counter()
        loss = self.trainer.train(
            [self.space.decode(a.tokens) for a in archs], self.settings.joint_steps
        )
        self.cache.clear()  # earlier scores belong to earlier weights
        self.record["joint_steps_done"] = self.trainer.steps
        self.record["joint_last_loss"] = loss
        self.record["joint_cpu_seconds"] = self.trainer.cpu_seconds
        identity = checkpoint_identity(self.settings, self.model, self.data, self.space)
        save_supernet(self.path, identity, net, self.record, self.trainer.state_dict())
        log.info(
            "joint supernet: %d steps on %d paths, loss %.3f, %.1f s (%d steps in all)",
            self.settings.joint_steps * len(archs),
            len(archs),
            loss,
            time.perf_counter() - start,
            self.trainer.steps,
        )

    def _probe(self) -> None:
        """Score a few random sub-networks once and warn if they are at chance: the scores
        of such a supernet order architectures by noise (docs/supernet.md)."""
        splits = get_dataset(self.data)
        accs = probe_subnets(self._net, splits, self.settings.score, n=PROBE_SUBNETS)
        chance = 1.0 / self.model.num_classes
        mean = sum(accs) / len(accs)
        self.record["probe_accuracy"] = accs
        self.record["chance_accuracy"] = chance
        if mean < chance + PROBE_MARGIN:
            log.warning(
                "the supernet's random sub-networks score %.1f%% on average (chance %.1f%%, "
                "%d of them): its scores will not rank architectures. Train it longer "
                "(evaluator.supernet.epochs, on a GPU) or use evaluator=trained; see "
                "docs/supernet.md, 'When to trust it'",
                100 * mean,
                100 * chance,
                len(accs),
            )
        else:
            log.info(
                "supernet probe: %d random sub-networks score %.1f%% on average (chance %.1f%%)",
                len(accs),
                100 * mean,
                100 * chance,
            )

    def time_children(self, archs: Sequence[Architecture]) -> list[tuple[dict, float, float, str]]:
        return time_batch((self.latency, list(archs)))

    def score(self, arch: Architecture) -> tuple[float, int, int]:
        """(accuracy, params, MACs) of ``arch`` with the supernet's weights; cached."""
        if arch.hash not in self.cache:
            net = self.net
            sub = net.extract(self.space.decode(arch.tokens))
            # counted before scoring folds its BN layers away (on the CPU, in place)
            on_cpu = device_of(sub).type == "cpu"
            stats = model_stats(
                sub if on_cpu else copy.deepcopy(sub).cpu(),
                self.input_size,
                self.model.in_channels,
            )
            acc, _ = score_network(sub, get_dataset(self.data), self.settings.score)
            self.cache[arch.hash] = (acc, stats.params, stats.macs)
        return self.cache[arch.hash]

    def evaluate(
        self, archs: Sequence[Architecture], on_result: Callable[[EvalResult], None]
    ) -> list[EvalResult]:
        timed = self.time_children(archs)
        joint_error = None
        if self.settings.joint_steps:
            ok = [a for a, (_, _, _, err) in zip(archs, timed, strict=True) if not err]
            if ok:
                try:
                    self._train_jointly(ok)
                except ValueError as e:  # diverged: recorded per child, the search goes on
                    joint_error = e
        out = []
        for arch, (stats, median, secs, err) in zip(archs, timed, strict=True):
            start = time.perf_counter()
            if err:
                res = latency_failure(arch, stats, err, secs)
            else:
                try:
                    if joint_error is not None:
                        raise joint_error
                    acc, params, macs = self.score(arch)
                    res = EvalResult(
                        arch,
                        acc,
                        median,
                        stats,
                        params,
                        macs,
                        OK,
                        "",
                        time.perf_counter() - start,
                        secs,
                        extra=self._extra(),
                    )
                except ValueError as e:
                    res = EvalResult(
                        arch,
                        math.nan,
                        median,
                        stats,
                        status=FAILED,
                        reason=f"supernet: {e}",
                        latency_seconds=secs,
                    )
            out.append(res)
            on_result(res)
        return out

    def _extra(self) -> dict:
        if self.trainer is None:
            return {"accuracy_source": "supernet"}
        return {"accuracy_source": "supernet", "supernet_joint_steps": self.trainer.steps}

    def standalone(
        self, archs: Sequence[Architecture], on_result: Callable[[EvalResult], None]
    ) -> list[EvalResult]:
        """``archs`` trained from scratch and timed again (the trained evaluator's way)."""
        if self.standalone_evaluator is None:
            return []
        return self.standalone_evaluator.evaluate(archs, on_result)

    @property
    def standalone_top_k(self) -> int:
        return self.settings.standalone_top_k if self.standalone_evaluator is not None else 0

    def close(self) -> None:
        if self.standalone_evaluator is not None:
            self.standalone_evaluator.close()
