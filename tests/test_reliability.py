"""Issue 12: a search survives faults and never mixes incomparable results.

One test (at least) per hole; each failed on the code before its fix
(holes 5-8 and the median CI of hole 11 have theirs in tests/test_latency*.py).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tiny_search import ROOT, TINY, make_cfg

from mnas.conf.runner import build_search, load_resume_config
from mnas.deploy.choose import resolve_choices
from mnas.evaluate.executors import PoolExecutor
from mnas.search import load_results, make_strategy
from mnas.search.ppo import PPOConfig, rank_advantages
from mnas.search.records import EvalRecord, front_markdown
from mnas.search.reward import mnas_reward
from mnas.space import MnasSpace


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory) -> Path:
    """A finished one-step search (two children); tests copy it before changing it."""
    run = tmp_path_factory.mktemp("run") / "run"
    search = build_search(make_cfg("steps=1", "tensorboard=true"), run)
    search.run()
    search.evaluator.close()
    search.tb.close()
    return run


def copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- hole 1: PPO advantages ---------------------------------------------------------------


def test_baseline_advantages_stay_bounded_when_a_whole_batch_has_one_reward():
    strategy = make_strategy(
        "ppo",
        MnasSpace(),
        seed=0,
        lr=0.01,
        ppo=PPOConfig(advantages="baseline", normalize_advantages=True),
    )
    strategy.tell(strategy.ask(8), [0.5, 0.6, 0.7, 0.55, 0.65, 0.62, 0.58, 0.61])
    # A whole batch failed: every reward is 0 while the baseline is ~0.6.
    diag = strategy.tell(strategy.ask(8), [0.0] * 8)
    assert abs(diag["policy_loss"]) < 1e-6
    # A collapsed controller: one architecture eight times, equal rewards.
    diag = strategy.tell(strategy.ask(8), [0.9] * 8)
    assert abs(diag["policy_loss"]) < 1e-6
    # Spread far below the reward scale is not blown up to unit variance either.
    diag = strategy.tell(strategy.ask(8), [0.6 + 1e-7 * k for k in range(8)])
    assert abs(diag["policy_loss"]) < 1e-2


def test_rank_advantages_of_an_all_equal_batch_are_zeros():
    adv = rank_advantages(torch.full((8,), 0.37))
    assert torch.equal(adv, torch.zeros(8))
    strategy = make_strategy("ppo", MnasSpace(), seed=0, lr=0.01)
    diag = strategy.tell(strategy.ask(8), [0.0] * 8)
    assert all(v == v for v in diag.values()) and diag["policy_loss"] == 0.0


# --- hole 2: resume accepts overrides that change the experiment ---------------------------


def saved_run(tmp_path: Path, *overrides: str) -> Path:
    run = tmp_path / "saved"
    run.mkdir()
    OmegaConf.save(make_cfg("steps=1", *overrides), run / "config.yaml")
    return run


@pytest.mark.parametrize(
    "override, why",
    [
        ("latency.kind=measured", "how latency is measured"),
        ("data.image_size=24", "the data"),
        ("trainer.epochs=1", "how children are trained"),
        ("reward.target_ms=0.7", "the reward"),
        ("strategy.name=random", "the strategy"),
        ("seed=3", "the sampled sequence"),
        ("batch_size=4", "the sampled sequence"),
        ("latency=measured", "how latency is measured"),
        ("executor.latency_resource=lat", "where latency is measured"),
    ],
)
def test_resume_refuses_overrides_that_change_the_experiment(tmp_path, override, why):
    run = saved_run(tmp_path)
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=rf"resume: {key}\b.*{why}"):
        load_resume_config(run, [f"resume={run}", override])


@pytest.mark.parametrize(
    "overrides",
    [
        ["steps=5"],
        ["executor.retries=3", "tensorboard=false", "hparams=false"],
        ["executor=pool", "executor.workers=2"],
        ["executor.child_timeout_s=30"],
        ["hydra.run.dir=/tmp/x", "hydra.job.chdir=false"],
    ],
)
def test_resume_accepts_what_cannot_change_a_result(tmp_path, overrides):
    run = saved_run(tmp_path)
    cfg = load_resume_config(run, [f"resume={run}", *overrides])
    for o in overrides:
        key, value = o.split("=")
        if key.startswith("hydra."):
            continue
        if key == "executor":
            assert cfg.executor.name == value
        else:
            assert str(OmegaConf.select(cfg, key)).lower() == value.lower()


@pytest.mark.parametrize("override", ["+foo=1", "+trainer.bar=2", "++foo=1"])
def test_resume_refuses_keys_the_schema_does_not_have(tmp_path, override):
    run = saved_run(tmp_path)
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ValueError, match=rf"{key}\b"):
        load_resume_config(run, [f"resume={run}", override])


@pytest.mark.parametrize("override", ["+foo=1", "+trainer.bar=2"])
def test_a_search_refuses_keys_added_with_plus(tmp_path, override):
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ValueError, match=rf"{key}\b.*not a setting"):
        build_search(make_cfg(override), tmp_path)
    assert not (tmp_path / "results.jsonl").exists()


def test_resume_checks_the_strategy_against_the_checkpoint(tmp_path, one_step_run):
    run = copy_run(one_step_run, tmp_path)
    with pytest.raises(ValueError, match="strategy"):
        build_search(make_cfg("steps=2", "strategy=random"), run)


def test_a_changed_config_cannot_continue_a_run(tmp_path, one_step_run):
    run = copy_run(one_step_run, tmp_path)
    # The same directory with a different experiment (no resume=): refused, naming the key.
    with pytest.raises(ValueError, match=r"trainer\.epochs"):
        build_search(make_cfg("steps=2", "trainer.epochs=0.2"), run)


def test_resume_recomputes_rewards_from_accuracy_and_latency(tmp_path, one_step_run):
    run = copy_run(one_step_run, tmp_path)
    lines = json_lines(run / "results.jsonl")
    first = lines[0]
    first["reward"] = 0.987  # a stored reward that the reward function does not give
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    search = build_search(load_resume_config(run, [f"resume={run}", "steps=2"]), run)
    rec = search.by_hash[first["hash"]]
    latency = first.get("latency_mmacs", first.get("latency_ms"))
    assert rec.reward == pytest.approx(mnas_reward(first["accuracy"], latency, 0.5, -0.07, -0.07))


def test_resume_writes_the_effective_config_back(tmp_path, one_step_run):
    run = copy_run(one_step_run, tmp_path)
    search = build_search(load_resume_config(run, [f"resume={run}", "steps=2"]), run)
    search.run()
    # A second resume without overrides remembers steps=2.
    assert load_resume_config(run, [f"resume={run}"]).steps == 2


# --- hole 3: a hung child hangs the whole search -------------------------------------------


def sleep_or_square(x: int) -> int:
    if x < 0:
        time.sleep(600)
    return x * x


def test_pool_records_a_task_over_the_time_limit_and_goes_on():
    pool = PoolExecutor(workers=2, threads_per_worker=1, retries=1)
    out: dict[int, object] = {}
    try:
        pool.map(sleep_or_square, [2, -1, 3], out.__setitem__, timeout_s=2.0)
        assert out[0] == 4 and out[2] == 9
        assert type(out[1]).__name__ == "TaskTimeout" and out[1].limit_s == 2.0
        # the stuck worker was replaced: the pool still has two
        assert len(pool._pool) == 2 and all(w.process.is_alive() for w in pool._pool)
    finally:
        pool.close()


def test_serial_search_records_a_hung_child_as_timeout_and_goes_on(tmp_path, monkeypatch):
    import mnas.training.trainer

    original = mnas.training.trainer.train_and_evaluate
    calls = {"n": 0}

    def hang_first(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(600)
        return original(*args, **kwargs)

    monkeypatch.setattr(mnas.training.trainer, "train_and_evaluate", hang_first)
    search = build_search(make_cfg("steps=1", "executor.child_timeout_s=8"), tmp_path)
    summary = search.run()
    recs = json_lines(tmp_path / "results.jsonl")
    assert [r["status"] for r in recs] == ["timeout", "ok"] and summary.steps == 1
    assert recs[0]["reward"] == 0.0 and "time limit" in recs[0]["reason"]


def test_the_default_time_limit_follows_the_trainer_budget(tmp_path):
    from mnas.conf.runner import data_spec_from
    from mnas.data.spec import get_dataset

    cfg = make_cfg("steps=1", "trainer.epochs=2")
    search = build_search(cfg, tmp_path)
    splits = get_dataset(data_spec_from(cfg))
    # 60 s + (2 epochs of training images + one BN batch of 32 + validation) at 10 images/s
    images = 2 * len(splits.train_y) + 32 + len(splits.val_y)
    assert search.evaluator.time_limit_s == pytest.approx(60 + images / 10)
    search.evaluator.close()


# --- hole 4: reading results edits them ----------------------------------------------------


def write_records(path: Path, n: int, tail: str = "") -> list[EvalRecord]:
    rng = random.Random(0)
    space = MnasSpace()
    rows = []
    for _ in range(n):
        arch = space.sample(rng)
        rows.append(
            {
                **dict(step=0, hash=arch.hash, space=arch.space, tokens=list(arch.tokens)),
                **dict(key=arch.key, blocks=list(arch.blocks), accuracy=0.5, latency_ms=1.0),
                **dict(latency={}, params=1, macs=1, reward=0.5, target_ms=1.0),
                **dict(alpha=-0.07, beta=-0.07, seconds=1.0, train_seconds=1.0),
                **dict(latency_seconds=0.0, status="ok", reason=""),
            }
        )
    lines = [json.dumps(r) + "\n" for r in rows]
    lines.insert(1, "this is not json\n")  # a garbage line in the middle
    path.write_text("".join(lines) + tail)
    return [EvalRecord.from_dict(r) for r in rows]


def test_reading_results_is_pure_and_tolerant(tmp_path):
    recs = write_records(tmp_path / "results.jsonl", 3, tail='{"step": 1, "hash": "tor')
    before = (tmp_path / "results.jsonl").read_bytes()
    loaded = load_results(tmp_path)
    assert (tmp_path / "results.jsonl").read_bytes() == before
    assert [r.hash for r in loaded] == [r.hash for r in recs]


def test_resume_moves_bad_lines_aside_and_keeps_every_record(tmp_path, one_step_run):
    run = copy_run(one_step_run, tmp_path)
    first, second = (run / "results.jsonl").read_text().splitlines()
    # garbage between two records, and a torn tail (killed mid-write)
    (run / "results.jsonl").write_text(f'{first}\nnot json\n{second}\n{{"step": 1, "ha')
    search = build_search(load_resume_config(run, [f"resume={run}", "steps=2"]), run)
    assert len(search.records) == 2  # both records survive the garbage line
    search.run()
    lines = (run / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["hash"] for x in lines[:2]] == [
        json.loads(first)["hash"],
        json.loads(second)["hash"],
    ]
    assert len(lines) == 4 and all(json.loads(x)["step"] == 1 for x in lines[2:])
    assert (run / "results.rejected.jsonl").read_text() == 'not json\n{"step": 1, "ha\n'


def test_retrain_reads_a_run_killed_mid_write(tmp_path):
    recs = write_records(tmp_path / "results.jsonl", 2, tail='{"step": 1, "hash": "tor')
    (choice,) = resolve_choices(recs[1].hash[:8], run=tmp_path)
    assert choice.arch.hash == recs[1].hash


# --- hole 9: units -------------------------------------------------------------------------


def test_macs_runs_name_their_unit(one_step_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = json_lines(one_step_run / "results.jsonl")
    for r in rows:
        assert "latency_ms" not in r and "target_ms" not in r
        assert r["latency_unit"] == "MMACs" and r["latency_mmacs"] > 0 and r["target_mmacs"] == 0.5
    doc = json.loads((one_step_run / "pareto.json").read_text())
    assert "target_ms" not in doc and doc["target_mmacs"] == 0.5
    assert all("latency_mmacs" in p and "latency_ms" not in p for p in doc["points"])
    info = json.loads((one_step_run / "run.json").read_text())
    assert "target_ms" not in info and info["target_mmacs"] == 0.5
    assert info["latency_unit"] == "MMACs"
    tags = EventAccumulator(str(one_step_run / "tb")).Reload().Tags()["scalars"]
    assert "reward/latency_mmacs_mean" in tags and not any("latency_ms" in t for t in tags)
    session = next(p for p in (one_step_run / "hparams").iterdir() if p.is_dir())
    metrics = EventAccumulator(str(session)).Reload().Tags()["scalars"]
    assert "latency_mmacs" in metrics and "latency_ms" not in metrics
    recs = load_results(one_step_run)
    assert recs[0].latency_unit == "MMACs"
    assert "latency (MMACs)" in front_markdown(recs)


def test_records_of_a_millisecond_run_keep_their_names(tmp_path):
    (rec,) = write_records(tmp_path / "results.jsonl", 1)
    d = rec.to_dict()
    assert d["latency_ms"] == 1.0 and d["target_ms"] == 1.0 and d["latency_unit"] == "ms"
    assert EvalRecord.from_dict(d) == rec
    # a record written before records named their unit reads as milliseconds
    old = {k: v for k, v in d.items() if k != "latency_unit"}
    assert EvalRecord.from_dict(old) == rec


# --- hole 10: failures on the console ------------------------------------------------------


def test_failed_children_show_on_the_console(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "scripts/search.py",
            *TINY,
            "steps=1",
            "trainer.lr=1e6",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    statuses = [r["status"] for r in json_lines(tmp_path / "results.jsonl")]
    failed = sum(s != "ok" for s in statuses)
    assert failed >= 1
    assert "diverged: non-finite loss" in out.stderr
    assert f"failed={failed}" in out.stderr
