"""The search loop: ask, evaluate, reward, tell, log, checkpoint.

It only coordinates: the strategy proposes architectures, the evaluator scores new ones
(already-evaluated hashes reuse their results), :mod:`mnas.search.reward` turns accuracy and
latency into rewards, and the run directory receives

- ``results.jsonl``: one flushed line per evaluated architecture;
- ``pareto.json``: the non-dominated set (max accuracy, min latency), by latency;
- ``checkpoint.pt``: strategy state and step, written atomically after every step;
- ``run.json``: the settings needed to rebuild and retrain children;
- ``tb/`` (scalars, the Pareto figure per step, the best architectures: the search at a
  glance, flushed after every step), ``hparams/`` (one HParams session per architecture,
  written as each is scored) and ``pareto.png``.

A run killed at any point resumes from its directory: the checkpoint holds the strategy
after the last completed step, so the resumed run asks for the same architectures, and
those already written to ``results.jsonl`` are reused instead of evaluated again. Their
rewards are recomputed from accuracy and latency (never taken from the file); a checkpoint
that cannot be read is moved aside and the strategy replays its steps from the results.
A run directory continues only the experiment it started: ``run.json`` and the checkpoint
hold a fingerprint of the settings that decide the results, and the strategy's name.

Latency fields are named by their unit: ``latency_ms``/``target_ms``, or
``latency_mmacs``/``target_mmacs`` with ``latency=macs``, and ``latency_unit`` says which.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from mnas.evaluate import OK, EvalResult, Evaluator
from mnas.search.pareto import hypervolume
from mnas.search.records import (
    CHECKPOINT,
    PARETO,
    RUN_INFO,
    EvalRecord,
    append_result,
    append_standalone,
    check_same_experiment,
    fingerprint,
    finite_or_none,
    front_markdown,
    front_of,
    load_standalone,
    measured_markdown,
    repair_results,
    standalone_markdown,
    unit_key,
    write_atomic,
)
from mnas.search.reward import FAILED_REWARD, mnas_reward
from mnas.search.strategies import Strategy
from mnas.space import Architecture, SearchSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepReport:
    """What one step did (for progress bars and tests)."""

    step: int
    evaluated: int
    reused: int
    reward_mean: float
    reward_max: float
    best_reward: float
    front_size: int
    hypervolume: float
    seconds: float
    eval_seconds: float
    diagnostics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSummary:
    """What a whole run did: its front, its best record and its times."""

    run_dir: Path
    steps: int
    evaluated: int
    front: tuple[EvalRecord, ...]
    best: EvalRecord | None
    seconds: float
    eval_seconds: float


class Search:
    """One search run.

    Args:
        run_dir: output directory (created; an existing checkpoint there is resumed).
        space: the search space.
        strategy: proposes architectures (``ask``) and learns from rewards (``tell``).
        evaluator: scores new architectures.
        steps: strategy updates in total (a resumed run continues up to this).
        batch_size: architectures per step.
        target: target latency T, in ``latency_unit``.
        alpha, beta: reward exponents.
        tb: an optional :class:`mnas.search.tensorboard.TBLogger`.
        run_info: settings stored in ``run.json`` (data, model, ...).
        latency_unit: "ms", or "MMACs" when latency is multiply-adds.
        experiment: the settings that decide the results (plain values), stored in
            ``run.json`` with their fingerprint; a directory that holds a run of other
            settings is refused, naming each setting that differs.
        remeasure: times an architecture on the real runtime (returns an object with
            ``median_ms`` and ``to_dict()``, e.g. :class:`mnas.latency.LatencyStats`); when
            given, the final front is re-timed with it and ``pareto.json`` holds both
            figures, ``latency_ms`` (what the search used, e.g. predicted) and
            ``measured_latency_ms``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        space: SearchSpace,
        strategy: Strategy,
        evaluator: Evaluator,
        steps: int,
        batch_size: int,
        target: float,
        alpha: float,
        beta: float,
        tb=None,
        run_info: dict | None = None,
        latency_unit: str = "ms",
        experiment: dict | None = None,
        remeasure: Callable[[Architecture], object] | None = None,
    ) -> None:
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps={steps} and batch_size={batch_size} must be >= 1")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.space = space
        self.strategy = strategy
        self.evaluator = evaluator
        self.steps = steps
        self.batch_size = batch_size
        self.target, self.alpha, self.beta = float(target), float(alpha), float(beta)
        self.tb = tb
        self.latency_unit = latency_unit
        self.latency_key = unit_key("latency", latency_unit)
        self.remeasure = remeasure
        self.measured: dict[str, dict] = {}
        if tb is not None:
            tb.hparams_experiment(
                {_hparam_name(d): d.choices for d in space.decisions},
                {
                    "accuracy": "accuracy (validation)",
                    self.latency_key: f"latency ({latency_unit})",
                    "reward": "reward",
                    "params": "parameters",
                },
                description=f"{space.name} search in {self.run_dir}",
            )
        self.step = 0
        self.records: list[EvalRecord] = []
        self.by_hash: dict[str, EvalRecord] = {}
        self.best_reward = -math.inf
        info = dict(run_info or {})
        info.update(
            space=space.name,
            **{unit_key("target", latency_unit): self.target},
            alpha=self.alpha,
            beta=self.beta,
            steps=steps,
            batch_size=batch_size,
            latency_unit=latency_unit,
        )
        if experiment is not None:
            check_same_experiment(self.run_dir, experiment)
            info.update(experiment=experiment, fingerprint=fingerprint(experiment))
        self.run_info = info
        self._resume_if_possible()
        write_atomic(self.run_dir / RUN_INFO, json.dumps(self.run_info, indent=2).encode())

    # ---- state -------------------------------------------------------------------------
    def _resume_if_possible(self) -> None:
        ckpt_path = self.run_dir / CHECKPOINT
        recomputed = 0
        for r in repair_results(self.run_dir):
            # Rewards come from the reward function, never from the file: a stored reward
            # is only what an earlier process computed.
            reward = self.reward_of_record(r)
            if not math.isclose(reward, r.reward, rel_tol=1e-9, abs_tol=1e-12):
                recomputed += 1
                r = replace(r, reward=reward)
            self.records.append(r)
            self.by_hash[r.hash] = r
            self.best_reward = max(self.best_reward, r.reward)
        if recomputed:
            log.warning(
                "resume: %d stored reward(s) differ from the reward function's; using the "
                "recomputed values",
                recomputed,
            )
        ckpt = self._load_checkpoint(ckpt_path)
        if ckpt is None:
            if self.records:
                log.info(
                    "no usable checkpoint in %s: the strategy starts fresh and replays its "
                    "steps from the %d results (nothing is evaluated again)",
                    self.run_dir,
                    len(self.records),
                )
            return
        stored_target = ckpt.get("target", ckpt.get("target_ms"))
        stored = {"target": stored_target, "alpha": ckpt["alpha"], "beta": ckpt["beta"]}
        for key, value in stored.items():
            if not math.isclose(value, getattr(self, key), rel_tol=1e-9):
                raise ValueError(
                    f"resume: {key}={getattr(self, key)} differs from the run's {value}; "
                    "a resumed search must keep its reward"
                )
        if ckpt["space"] != self.space.name:
            raise ValueError(
                f"resume: space {self.space.name!r} differs from the run's {ckpt['space']!r}"
            )
        ours = self.run_info.get("fingerprint")
        if ckpt.get("fingerprint") and ours and ckpt["fingerprint"] != ours:
            raise ValueError(
                f"resume: {ckpt_path} belongs to another experiment "
                f"(fingerprint {ckpt['fingerprint']}, this config's {ours})"
            )
        if ckpt.get("strategy_name", self.strategy.name) != self.strategy.name:
            raise ValueError(
                f"resume: strategy {self.strategy.name!r} differs from the run's "
                f"{ckpt['strategy_name']!r}; a run continues with the strategy it started with"
            )
        self.strategy.load_state_dict(ckpt["strategy"])
        self.step = int(ckpt["step"])
        log.info(
            "resumed %s at step %d with %d results", self.run_dir, self.step, len(self.records)
        )

    def _load_checkpoint(self, path: Path) -> dict | None:
        """The checkpoint, or None when there is none or it cannot be read (it is then moved
        aside to ``checkpoint.pt.corrupt``): the strategy replays the finished steps from
        ``results.jsonl``, which holds everything a checkpoint adds to."""
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=False)
        except Exception as e:  # truncated or corrupted on disk
            aside = path.with_name(path.name + ".corrupt")
            os.replace(path, aside)
            log.warning("resume: cannot read %s (%s); moved to %s", path, e, aside.name)
            return None

    def _checkpoint(self) -> None:
        state = {
            "step": self.step,
            "strategy": self.strategy.state_dict(),
            "strategy_name": self.strategy.name,
            "space": self.space.name,
            "target": self.target,
            "alpha": self.alpha,
            "beta": self.beta,
            "fingerprint": self.run_info.get("fingerprint"),
        }
        tmp = self.run_dir / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.run_dir / CHECKPOINT)

    # ---- records -----------------------------------------------------------------------
    def reward_of(self, res: EvalResult) -> float:
        if res.status != OK:
            return FAILED_REWARD
        return mnas_reward(res.accuracy, res.latency_ms, self.target, self.alpha, self.beta)

    def reward_of_record(self, rec: EvalRecord) -> float:
        if rec.status != OK or rec.accuracy is None or rec.latency_value is None:
            return FAILED_REWARD
        return mnas_reward(rec.accuracy, rec.latency_value, self.target, self.alpha, self.beta)

    def _record(self, res: EvalResult) -> EvalRecord:
        arch = res.arch
        return EvalRecord(
            step=self.step,
            hash=arch.hash,
            space=arch.space,
            tokens=arch.tokens,
            key=arch.key,
            blocks=arch.blocks,
            accuracy=finite_or_none(res.accuracy),
            latency_value=finite_or_none(res.latency_ms),
            latency=res.latency,
            params=res.params,
            macs=res.macs,
            reward=self.reward_of(res),
            target_value=self.target,
            alpha=self.alpha,
            beta=self.beta,
            seconds=round(res.train_seconds + res.latency_seconds, 4),
            train_seconds=round(res.train_seconds, 4),
            latency_seconds=round(res.latency_seconds, 4),
            status=res.status,
            reason=res.reason,
            latency_unit=self.latency_unit,
            extra=res.extra,
        )

    def _append(self, rec: EvalRecord) -> None:
        append_result(self.run_dir, rec)
        self.records.append(rec)
        self.by_hash[rec.hash] = rec
        self.best_reward = max(self.best_reward, rec.reward)

    def front(self) -> list[EvalRecord]:
        return front_of(self.records)

    def hypervolume(self) -> float:
        """Dominated area with the reference at (2T, accuracy 0): a fixed corner per run."""
        pts = [(r.latency_value, r.accuracy) for r in self.records if r.status == OK]
        return hypervolume(pts, 2 * self.target, 0.0)

    def _write_front(self) -> list[EvalRecord]:
        front = self.front()
        checks = load_standalone(self.run_dir)
        doc = {
            unit_key("target", self.latency_unit): self.target,
            "alpha": self.alpha,
            "beta": self.beta,
            "latency_unit": self.latency_unit,
            "points": [
                {
                    **r.to_dict(),
                    **self.measured.get(r.hash, {}),
                    **_standalone_fields(checks.get(r.hash)),
                }
                for r in front
            ],
        }
        if self.measured:
            doc["measured_latency"] = "front re-timed on ONNX Runtime at the end of the search"
        if checks:
            doc["labels"] = STANDALONE_LABELS
        write_atomic(self.run_dir / PARETO, json.dumps(doc, indent=1).encode())
        return front

    # ---- the loop ----------------------------------------------------------------------
    def run_step(self, on_child: Callable[[EvalRecord], None] | None = None) -> StepReport:
        start = time.perf_counter()
        archs = self.strategy.ask(self.batch_size)
        new: list[Architecture] = []
        seen: set[str] = set()
        for a in archs:
            if a.hash not in self.by_hash and a.hash not in seen:
                new.append(a)
                seen.add(a.hash)

        def on_result(res: EvalResult) -> None:
            rec = self._record(res)
            self._append(rec)
            if rec.status != OK:
                log.warning("child %s %s: %s", rec.hash, rec.status, rec.reason)
            if self.tb is not None:
                self._log_session(rec)
            if on_child is not None:
                on_child(rec)

        t0 = time.perf_counter()
        self.evaluator.evaluate(new, on_result)
        eval_seconds = time.perf_counter() - t0
        rewards = [self.by_hash[a.hash].reward for a in archs]
        diag = self.strategy.tell(archs, rewards)
        self.step += 1
        front = self._write_front()
        self._checkpoint()
        report = StepReport(
            step=self.step,
            evaluated=len(new),
            reused=len(archs) - len(new),
            reward_mean=sum(rewards) / len(rewards),
            reward_max=max(rewards),
            best_reward=self.best_reward,
            front_size=len(front),
            hypervolume=self.hypervolume(),
            seconds=time.perf_counter() - start,
            eval_seconds=eval_seconds,
            diagnostics=diag,
        )
        if self.tb is not None:
            self._log_tb(report, archs, front)
        return report

    def run(
        self,
        on_child: Callable[[EvalRecord], None] | None = None,
        on_step: Callable[[StepReport], None] | None = None,
    ) -> SearchSummary:
        start = time.perf_counter()
        eval_seconds = 0.0
        steps_done = 0
        while self.step < self.steps:
            report = self.run_step(on_child)
            eval_seconds += report.eval_seconds
            steps_done += 1
            if on_step is not None:
                on_step(report)
        if self.remeasure is not None:
            self._remeasure_front()
        self._standalone_check()
        front = self._write_front()
        ok = [r for r in self.records if r.status == OK]
        best = max(ok, key=lambda r: r.reward) if ok else None
        if self.tb is not None:
            self.tb.flush()
        return SearchSummary(
            self.run_dir,
            self.step,
            len(self.records),
            tuple(front),
            best,
            time.perf_counter() - start,
            eval_seconds,
        )

    def _remeasure_front(self) -> None:
        """Time the front's architectures on the real runtime (the search may have used a
        predictor): ``measured_latency_ms`` and its record go beside ``latency_ms``."""
        for rec in self.front():
            if rec.hash in self.measured:
                continue
            arch = Architecture(space=rec.space, tokens=rec.tokens, key=rec.key)
            try:
                stats = self.remeasure(arch)
            except Exception as e:  # noqa: BLE001 - one network's failure is recorded, not fatal
                log.warning("re-measuring %s failed: %s", rec.hash, e)
                self.measured[rec.hash] = {"measured_latency_ms": None, "measured_error": str(e)}
                continue
            self.measured[rec.hash] = {
                "measured_latency_ms": stats.median_ms,
                "measured_latency": stats.to_dict(),
            }
            log.info(
                "front %s: %s %.4g ms, measured %.4g ms",
                rec.hash,
                (rec.latency or {}).get("source", "latency"),
                rec.latency_value,
                stats.median_ms,
            )
        if self.tb is not None and self.measured:
            table = measured_markdown(self.front(), self.measured, self.latency_unit)
            self.tb.text("front_measured", table, self.step)

    def _standalone_check(self) -> None:
        """An evaluator that only estimates accuracy (``standalone_top_k`` > 0) trains the
        front's best ``k`` architectures (by reward) from scratch and times them again;
        ``standalone.jsonl`` keeps them, so a resumed run does not train them twice."""
        k = getattr(self.evaluator, "standalone_top_k", 0)
        if not k:
            return
        done = load_standalone(self.run_dir)
        top = sorted(self.front(), key=lambda r: -r.reward)[:k]
        todo = [
            Architecture(space=r.space, tokens=r.tokens, key=r.key)
            for r in top
            if r.hash not in done
        ]
        if todo:
            log.info("stand-alone check of %d front architectures", len(todo))

            def on_result(res: EvalResult) -> None:
                append_standalone(
                    self.run_dir,
                    {
                        "hash": res.arch.hash,
                        "standalone_accuracy": finite_or_none(res.accuracy),
                        "standalone_latency_ms": finite_or_none(res.latency_ms),
                        "standalone_latency": res.latency,
                        "standalone_status": res.status,
                        "standalone_reason": res.reason,
                        "standalone_seconds": round(res.train_seconds + res.latency_seconds, 4),
                    },
                )

            self.evaluator.standalone(todo, on_result)
        if self.tb is not None:
            checks = load_standalone(self.run_dir)
            rows = [(r, checks[r.hash]) for r in top if r.hash in checks]
            self.tb.text("standalone_check", standalone_markdown(rows), self.step)
            self.tb.scalars(
                self.step,
                {
                    "standalone/accuracy_mean": _mean([c["standalone_accuracy"] for _, c in rows]),
                    "standalone/search_accuracy_mean": _mean([r.accuracy for r, _ in rows]),
                },
            )
            self.tb.flush()

    def _log_tb(
        self, report: StepReport, archs: Sequence[Architecture], front: list[EvalRecord]
    ) -> None:
        tb, step = self.tb, self.step
        batch = [self.by_hash[a.hash] for a in archs]
        ok = [r for r in batch if r.status == OK]
        # records evaluated in this step (not reused from earlier ones), once each
        fresh = list({r.hash: r for r in batch if r.step == step - 1}.values())
        tb.scalars(
            step,
            {
                "reward/mean": report.reward_mean,
                "reward/max": report.reward_max,
                "reward/best": report.best_reward,
                "reward/accuracy_mean": _mean([r.accuracy for r in ok]),
                f"reward/{self.latency_key}_mean": _mean([r.latency_value for r in ok]),
                "pareto/front_size": report.front_size,
                "pareto/hypervolume": report.hypervolume,
                "search/failed": sum(r.status != OK for r in batch),
                "search/reused": report.reused,
                "search/child_seconds_mean": _mean([r.seconds for r in fresh]),
                "search/evaluated": len(self.records),
                "search/step_seconds": report.seconds,
            },
        )
        tb.scalars(step, report.diagnostics, prefix="strategy/")
        from mnas.search.tensorboard import pareto_figure

        pts = [(r.latency_value, r.accuracy) for r in self.records if r.status == OK]
        fig = pareto_figure(
            pts,
            [(r.latency_value, r.accuracy) for r in front],
            self.target,
            unit=self.latency_unit,
            title=f"step {step}: {len(pts)} architectures",
        )
        tb.figure("pareto", fig, step)
        fig.savefig(self.run_dir / "pareto.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
        best = sorted((r for r in self.records if r.status == OK), key=lambda r: -r.reward)
        tb.text("best_architectures", front_markdown(best[:5], self.latency_unit), step)
        tb.flush()

    def _log_session(self, rec: EvalRecord) -> None:
        hparams = {}
        for d, t in zip(self.space.decisions, rec.tokens, strict=False):
            hparams[_hparam_name(d)] = d.choices[t]
        self.tb.arch_session(
            rec.hash,
            hparams,
            {
                "accuracy": rec.accuracy,
                self.latency_key: rec.latency_value,
                "reward": rec.reward,
                "params": float(rec.params),
            },
            ok=rec.status == OK,
        )


STANDALONE_LABELS = {
    "accuracy": "the search's accuracy source (supernet score on the validation subset)",
    "standalone_accuracy": "trained stand-alone under the proxy trainer (validation split)",
    "latency_ms": "the search's latency source",
    "standalone_latency_ms": "measured on ONNX Runtime (the latency cache's figure if timed)",
}


def _standalone_fields(check: dict | None) -> dict:
    return {} if check is None else {k: v for k, v in check.items() if k != "hash"}


def _hparam_name(decision) -> str:
    return f"b{decision.block}_{decision.name}"


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


__all__ = ["Search", "SearchSummary", "StepReport", "check_same_experiment", "fingerprint"]
