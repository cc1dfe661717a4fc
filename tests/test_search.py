"""The search loop end to end on tiny settings: outputs, rewards, resume, bad config."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnas.conf import register_configs
from mnas.conf.runner import build_search, load_resume_config
from mnas.data import spec as data_spec
from mnas.search import load_results
from mnas.search.reward import mnas_reward

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.image_size=8",
    "model.width_mult=0.25",
    "trainer.epochs=0.1",
    "trainer.batch_size=32",
    "trainer.bn_recalibrate_batches=1",
    "latency.cache=null",
    "latency.warmup=1",
    "latency.min_runs=5",
    "latency.max_runs=20",
    "latency.time_cap_s=0.05",
]
REQUIRED = {
    "step",
    "hash",
    "tokens",
    "blocks",
    "accuracy",
    "latency_ms",
    "params",
    "macs",
    "reward",
    "target_ms",
    "alpha",
    "beta",
    "seconds",
    "status",
}


def make_cfg(*overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="search", overrides=[*TINY, *overrides])


def results(run_dir):
    return [r.to_dict() for r in load_results(Path(run_dir))]


def test_tiny_search_writes_every_output(tmp_path):
    cfg = make_cfg("steps=2", "batch_size=2", "hparams=true")
    search = build_search(cfg, tmp_path)
    search.run_step()
    # Live view: the step's events are on disk while the writer is still open (flushed per
    # step), and so is each architecture's HParams session.
    live = EventAccumulator(str(tmp_path / "tb"))
    live.Reload()
    assert [e.step for e in live.Scalars("reward/best")] == [1]
    assert [e.step for e in live.Images("pareto")] == [1]
    assert {p.name for p in (tmp_path / "hparams").iterdir() if p.is_dir()} == {
        r.hash for r in search.records
    }
    summary = search.run()
    search.tb.close()
    recs = results(tmp_path)
    assert len(recs) == 4 and summary.evaluated == 4 and summary.steps == 2
    for r in recs:
        assert REQUIRED <= set(r)
        assert r["target_ms"] == search.target and r["target_ms"] != "auto"
        assert r["status"] == "ok", r["reason"]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["latency_ms"] > 0 and r["params"] > 0
        # the logged reward recomputes from accuracy and latency
        assert r["reward"] == pytest.approx(
            mnas_reward(r["accuracy"], r["latency_ms"], r["target_ms"], r["alpha"], r["beta"])
        )
    assert [r["step"] for r in recs] == [0, 0, 1, 1]
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    pts = pareto["points"]
    assert pts and [p["latency_ms"] for p in pts] == sorted(p["latency_ms"] for p in pts)
    assert all(a["accuracy"] < b["accuracy"] for a, b in zip(pts, pts[1:], strict=False))
    for r in recs:  # nothing evaluated dominates a front point
        for p in pts:
            assert not (r["latency_ms"] < p["latency_ms"] and r["accuracy"] > p["accuracy"])
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2 and "controller" in ckpt["strategy"]
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    sessions = {p.name for p in (tmp_path / "hparams").iterdir() if p.is_dir()}
    assert sessions == {r["hash"] for r in recs}
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["num_classes"] == 10 and info["in_channels"] == 1 and info["input_size"] == 8
    assert (tmp_path / "config.yaml").exists()


def _trace(run_dir):
    return [(r["hash"], r["accuracy"], r["reward"]) for r in results(run_dir)]


def test_resume_matches_an_uninterrupted_run_and_reuses_finished_children(tmp_path):
    base = ("latency=macs", "tensorboard=false", "batch_size=2", "reward.target_ms=0.5")
    full = build_search(make_cfg("steps=3", *base), tmp_path / "full")
    full.run()

    # Interrupted run: step 0 completes, then the search is killed after the first child of
    # step 1 was written but before the step (and its checkpoint) finished.
    part = build_search(make_cfg("steps=3", *base), tmp_path / "part")
    part.run_step()
    original = part.evaluator.evaluate

    def die_after_one(archs, on_result):
        original(archs[:1], on_result)
        raise KeyboardInterrupt

    part.evaluator.evaluate = die_after_one
    with pytest.raises(KeyboardInterrupt):
        part.run_step()
    assert len(results(tmp_path / "part")) == 3
    with open(tmp_path / "part" / "results.jsonl", "a") as f:
        f.write('{"step": 1, "hash": "torn')  # a kill in the middle of a write

    cfg = load_resume_config(tmp_path / "part", ["resume=x"])
    resumed = build_search(cfg, tmp_path / "part")
    assert resumed.step == 1
    calls = []
    original2 = resumed.evaluator.evaluate

    def counting(archs, on_result):
        calls.extend(a.hash for a in archs)
        return original2(archs, on_result)

    resumed.evaluator.evaluate = counting
    resumed.run()
    assert _trace(tmp_path / "part") == _trace(tmp_path / "full")
    first_of_step1 = results(tmp_path / "full")[2]["hash"]
    assert first_of_step1 not in calls and len(calls) == 3


def test_resume_can_extend_the_number_of_steps(tmp_path):
    base = ("latency=macs", "tensorboard=false", "batch_size=2", "steps=1")
    build_search(make_cfg(*base), tmp_path).run()
    cfg = load_resume_config(tmp_path, ["resume=x", "steps=2"])
    summary = build_search(cfg, tmp_path).run()
    assert summary.steps == 2 and len(results(tmp_path)) == 4
    with pytest.raises(ValueError, match="does not name a setting"):
        load_resume_config(tmp_path, ["stepz=3"])


def test_failed_child_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    import mnas.training.trainer

    calls = {"n": 0}
    original = mnas.training.trainer.train_and_evaluate

    def flaky(model, data, config, eval_split="val", progress=None, device=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory (simulated)")
        if calls["n"] == 2:
            config = config.__class__(**{**config.__dict__, "lr": 1e6})
        return original(model, data, config, eval_split, device=device)

    monkeypatch.setattr(mnas.training.trainer, "train_and_evaluate", flaky)
    cfg = make_cfg(
        "steps=2",
        "batch_size=2",
        "latency=macs",
        "tensorboard=false",
        "reward.target_ms=0.5",
        "trainer.epochs=1",
    )
    summary = build_search(cfg, tmp_path).run()
    recs = results(tmp_path)
    assert [r["status"] for r in recs[:2]] == ["failed", "diverged"]
    assert "out of memory (simulated)" in recs[0]["reason"]
    assert "non-finite loss" in recs[1]["reason"]
    assert recs[0]["reward"] == 0.0 and recs[0]["accuracy"] is None
    assert [r["status"] for r in recs[2:]] == ["ok", "ok"] and summary.steps == 2
    json.loads((tmp_path / "pareto.json").read_text())  # still valid


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("reward.alpha=0.5", "alpha=0.5 must be <= 0"),
        ("reward.target_ms=-3", "T=-3.0 must be"),
        ("reward.target_ms=fast", "'fast'; allowed: a number > 0 or 'auto'"),
        ("batch_size=0", "batch_size=0 must be >= 1"),
        ("trainer.batch_size=0", "batch_size=0"),
        ("latency.max_runs=3", "max_runs=3 must be >= min_runs="),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, monkeypatch, override, fragment):
    def no_data(*a, **k):
        raise AssertionError("data was loaded before the config was validated")

    monkeypatch.setattr(data_spec, "get_dataset", no_data)
    with pytest.raises(ValueError, match=fragment):
        build_search(make_cfg(override), tmp_path)
    assert not (tmp_path / "results.jsonl").exists()


def test_misspelt_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="lrr"):
        make_cfg("trainer.lrr=0.1")


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("strategy.name=bayes", "ppo, reinforce, random, evolution"),
        ("latency.kind=flops", "measured, lut, predictor, macs"),
        ("executor.name=slurm", "serial, pool, ray"),
        ("space.name=darts", "mnas, mnas_mbconv, nasbench201"),
        ("trainer.optimizer=lbfgs", "sgd, rmsprop, adam"),
        ("reward.preset=medium", "soft, hard, custom"),
    ],
)
def test_misspelt_name_of_a_closed_set_fails_at_compose_time(override, allowed):
    with pytest.raises(ConfigCompositionException) as info:
        make_cfg(override)
    assert allowed in str(info.value.__cause__)


def test_transfer_experiment_is_not_a_search_experiment():
    with pytest.raises(ConfigCompositionException, match="transfer_cifar10"):
        make_cfg("experiment=transfer_cifar10")


def test_resumed_run_checks_overrides_against_the_schema(tmp_path):
    build_search(make_cfg("latency=macs", "tensorboard=false", "batch_size=2", "steps=1"), tmp_path)
    assert load_resume_config(tmp_path, ["steps=3"]).steps == 3
    with pytest.raises(Exception, match="bayes"):
        load_resume_config(tmp_path, ["strategy.name=bayes"])


def test_script_reports_config_errors_with_exit_code_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "scripts/search.py", "reward.beta=1", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "config error: beta=1.0 must be <= 0" in out.stderr


def test_mbconv_subspace_runs_with_trained_children_and_its_own_baseline(tmp_path):
    cfg = make_cfg(
        "space=mnas_mbconv", "steps=1", "batch_size=2", "latency=macs", "reward.target_ms=0.5"
    )
    search = build_search(cfg, tmp_path)
    summary = search.run()
    recs = results(tmp_path)
    assert summary.steps == 1 and len(recs) == 2
    for r in recs:
        assert r["status"] == "ok" and r["space"] == "mnas_mbconv"
        assert all(b.startswith("ir_") for b in r["blocks"])
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert pareto["points"]


def test_nasbench201_runs_on_the_same_loop(tmp_path):
    table = ROOT / "tests" / "data" / "nb201_tiny.csv"
    cfg = make_cfg(
        "experiment=nasbench201",
        f"evaluator.table={table}",
        "steps=2",
        "batch_size=4",
        "tensorboard=false",
        "reward.target_ms=3",
    )
    summary = build_search(cfg, tmp_path).run()
    recs = results(tmp_path)
    assert summary.steps == 2 and recs
    # the tiny table holds only a few cells: the others are recorded as failed lookups
    for r in recs:
        if r["status"] == "ok":
            assert 0 < r["accuracy"] <= 1 and 0 < r["report_accuracy"] <= 1
        else:
            assert r["status"] == "failed" and r["key"] in r["reason"]
            assert r["reward"] == 0.0


def test_nasbench201_search_on_the_real_table(tmp_path, mnas_data):
    csv = Path(mnas_data) / "nasbench201" / "nb201_acc_latency.csv"
    if not csv.exists():
        pytest.skip("no NAS-Bench-201 table")
    cfg = make_cfg("experiment=nasbench201", "steps=5", "batch_size=20", "tensorboard=false")
    search = build_search(cfg, tmp_path)
    summary = search.run()
    recs = results(tmp_path)
    assert all(r["status"] == "ok" for r in recs) and len(recs) <= 100
    assert search.target == pytest.approx(
        json.loads((tmp_path / "run.json").read_text())["target_ms"]
    )
    assert len(summary.front) >= 3 and math.isfinite(summary.best.reward)


def run_search_script(*overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    """``scripts/search.py`` with the tiny settings, one step of 2 architectures, MACs."""
    return subprocess.run(
        [
            sys.executable,
            "scripts/search.py",
            *(["-m"] if multirun else []),
            *TINY,
            "steps=1",
            "batch_size=2",
            "latency=macs",
            *overrides,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_search_script_end_to_end(tmp_path):
    out = run_search_script("reward.target_ms=0.5", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Pareto front:" in out.stdout and f"tensorboard --logdir {tmp_path}" in out.stdout
    assert len(results(tmp_path)) == 2


def test_target_sweep_with_hydra_multirun(tmp_path):
    out = run_search_script(
        "tensorboard=false",
        "reward.target_ms=0.3,0.7",
        f"hydra.sweep.dir={tmp_path}",
        multirun=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    targets = []
    for job in ("0", "1"):
        recs = results(tmp_path / job)
        assert len(recs) == 2
        targets.append(recs[0]["target_mmacs"])  # latency=macs: the unit names the field
        doc = json.loads((tmp_path / job / "pareto.json").read_text())
        assert doc["target_mmacs"] == targets[-1]
    # Same seed: the same architectures are scored under each target.
    assert targets == [0.3, 0.7]
    assert [r["hash"] for r in results(tmp_path / "0")] == [
        r["hash"] for r in results(tmp_path / "1")
    ]


def test_hparams_sessions_declare_columns_and_mark_failures(tmp_path):
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata as hp_meta

    from mnas.search.tensorboard import TBLogger

    tb = TBLogger(tmp_path / "tb", tmp_path / "hparams")
    tb.hparams_experiment({"b0_kernel": (3, 5), "b0_skip": ("none", "pool")}, {"accuracy": "acc"})
    tb.hparams_experiment({"other": (1,)}, {"x": "x"})  # a resumed run keeps the first
    tb.arch_session("good", {"b0_kernel": 5, "b0_skip": "pool"}, {"accuracy": 0.9}, ok=True)
    tb.arch_session("bad", {"b0_kernel": 3, "b0_skip": "none"}, {"accuracy": None}, ok=False)
    tb.close()

    root = EventAccumulator(str(tmp_path / "hparams"))
    root.Reload()
    exp = hp_meta.parse_experiment_plugin_data(
        root.PluginTagToContent(hp_meta.PLUGIN_NAME)[hp_meta.EXPERIMENT_TAG]
    )
    assert [(h.name, list(h.domain_discrete)) for h in exp.hparam_infos] == [
        ("b0_kernel", [3.0, 5.0]),
        ("b0_skip", ["none", "pool"]),
    ]
    assert [(m.name.tag, m.display_name) for m in exp.metric_infos] == [("accuracy", "acc")]
    for name, status, tags in (
        ("good", api_pb2.STATUS_SUCCESS, ["accuracy"]),
        ("bad", api_pb2.STATUS_FAILURE, []),
    ):
        run = EventAccumulator(str(tmp_path / "hparams" / name))
        run.Reload()
        content = run.PluginTagToContent(hp_meta.PLUGIN_NAME)
        start = hp_meta.parse_session_start_info_plugin_data(
            content[hp_meta.SESSION_START_INFO_TAG]
        )
        end = hp_meta.parse_session_end_info_plugin_data(content[hp_meta.SESSION_END_INFO_TAG])
        assert start.hparams["b0_skip"].string_value in ("none", "pool")
        assert end.status == status and run.Tags()["scalars"] == tags
