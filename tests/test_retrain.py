"""Retraining found architectures: choosing them, run settings, files, ONNX fidelity (issue 7)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnas.data import load_dataset
from mnas.deploy import (
    ExportMismatchError,
    ExportSettings,
    check_onnx,
    finalize,
    load_checkpoint,
    resolve_choices,
)
from mnas.latency import LatencySettings, export_onnx
from mnas.nn import build_model
from mnas.space import MnasSpace, reference

ROOT = Path(__file__).resolve().parents[1]
FAST_LATENCY = [
    "latency.warmup=1",
    "latency.min_runs=3",
    "latency.max_runs=10",
    "latency.time_cap_s=0.05",
]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """A hand-written search run directory with the contract's three files."""
    space = MnasSpace()
    rng = random.Random(7)
    records = []
    for i in range(3):
        arch = space.sample(rng)
        records.append(
            {
                "hash": arch.hash,
                "space": arch.space,
                "tokens": list(arch.tokens),
                "key": arch.key,
                "blocks": list(arch.blocks),
                "accuracy": 0.6 + 0.1 * i,
                "latency_ms": 0.5 + i,
                "params": 0,
                "macs": 0,
                "reward": 0.5,
                "status": "ok",
            }
        )
    run = tmp_path / "run"
    run.mkdir()
    pareto = {"target_ms": 1.0, "alpha": -0.07, "beta": -0.07, "points": records[:2]}
    (run / "pareto.json").write_text(json.dumps(pareto))
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    data = {
        "name": "digits",
        "root": None,
        "image_size": 16,
        "train_size": 256,
        "val_size": 64,
        "test_size": None,
        "seed": 0,
        "download": False,
    }
    model = {"width_mult": 0.25, "stem_stride": 1, "dropout": 0.2, "bn_momentum": 0.1}
    run_json = {"space": "mnas", "data": data, "model": model, "num_classes": 10}
    (run / "run.json").write_text(json.dumps({**run_json, "in_channels": 1, "input_size": 16}))
    return run


def test_choices_from_a_run(tiny_run: Path):
    points = json.loads((tiny_run / "pareto.json").read_text())["points"]
    (one,) = resolve_choices(f"{tiny_run}/pareto.json:1")
    assert one.arch.hash == points[1]["hash"] and one.label == "front1"
    assert one.source == "pareto" and one.search_accuracy == pytest.approx(0.7)
    assert one.run_dir == str(tiny_run)
    front = resolve_choices(f"{tiny_run}/pareto.json:all")
    assert [c.arch.hash for c in front] == [p["hash"] for p in points]
    assert [c.arch.hash for c in resolve_choices("ignored", tiny_run, all_points=True)] == [
        p["hash"] for p in points
    ]
    # A hash prefix finds an architecture that is only in results.jsonl.
    last = json.loads((tiny_run / "results.jsonl").read_text().splitlines()[2])
    (found,) = resolve_choices(last["hash"][:8], run=tiny_run)
    assert found.arch.key == last["key"] and found.source == "results"


def test_choices_by_name_and_blocks():
    (ref,) = resolve_choices("mnasnet_a1")
    assert ref.arch == reference("mnasnet_a1") and ref.source == "reference"
    (blocks,) = resolve_choices("ds_r1_k3_s1_c16,ir_r2_k3_s2_e6_c24")
    assert blocks.arch.blocks == ("ds_r1_k3_s1_c16", "ir_r2_k3_s2_e6_c24")


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("{run}/pareto.json:5", "index 5 out of range"),
        ("{run}/pareto.json:first", "give an index 0..1 or 'all'"),
        ("{run}/nothere/pareto.json:0", "no such file"),
        ("mnasnet_z9", "allowed forms"),
        ("ir_r2_k3_s2_c24", "needs an expansion"),
        ("deadbeef00", "give run=<run directory>"),
        ("", "empty"),
    ],
)
def test_bad_arch_is_a_clear_error(tiny_run: Path, arch: str, message: str):
    with pytest.raises(ValueError, match=message) as info:
        resolve_choices(arch.format(run=tiny_run))
    assert "arch=" in str(info.value) or arch == "deadbeef00"


def test_unknown_hash_names_the_run(tiny_run: Path):
    with pytest.raises(ValueError, match="no architecture with that hash"):
        resolve_choices("abcdef12", run=tiny_run)
    with pytest.raises(ValueError, match="all=true needs run="):
        resolve_choices("mobilenetv2", all_points=True)


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="retrain", overrides=overrides)


def test_config_rejects_misspelt_key():
    _load_script("retrain")  # registers the schema
    with pytest.raises(Exception, match="epochz"):
        _compose(["trainer.epochz=3"])


def test_run_settings_are_defaults_and_overrides_win(tiny_run: Path):
    script = _load_script("retrain")
    overrides = [f"arch={tiny_run}/pareto.json:0", "model.dropout=0.1"]
    cfg = _compose(overrides)
    assert cfg.trainer.epochs == 30 and cfg.model.width_mult == 0.5  # conf defaults
    script.apply_run_settings(cfg, json.loads((tiny_run / "run.json").read_text()), overrides)
    assert cfg.data.name == "digits" and cfg.data.image_size == 16
    # the proxy's subset sizes stay behind: a retrain trains on the whole training split
    assert cfg.data.train_size is None and cfg.data.val_size == 0
    assert cfg.model.width_mult == 0.25 and cfg.model.dropout == 0.1


def test_retrain_front_end_to_end(tiny_run: Path, tmp_path: Path):
    """``all=true`` from a tiny run: every front point and a reference, files and table."""
    script = _load_script("retrain")
    out = tmp_path / "out"
    overrides = [
        "all=true",
        f"run={tiny_run}",
        "references=[mobilenetv2]",
        f"out_dir={out}",
        "trainer.max_steps=4",
        "trainer.batch_size=32",
        "trainer.bn_recalibrate_batches=2",
        "trainer.threads=1",
        "onnx_check_images=16",
        *FAST_LATENCY,
    ]
    cfg = _compose(overrides)
    best = script.run(cfg, overrides)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["label"] for r in summary] == ["front0", "front1", "mobilenetv2"]
    assert best == max(r["test_accuracy"] for r in summary[:2])
    for row in summary:
        folder = out / f"{row['label']}_{row['hash'][:8]}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics == row
        for key in ("params", "macs", "test_accuracy", "latency_ms"):
            assert key in metrics
        assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_images"] == 359
        assert metrics["latency_ms"] > 0 and metrics["onnx_ok"]
        assert metrics["latency_scale"] == "drift-corrected" and metrics["latency_raw_ms"] > 0
        assert metrics["width_mult"] == 0.25 and metrics["train_steps"] == 4
        assert metrics["device"] == "cpu" and metrics["precision"] == "fp32"  # auto, no GPU
        assert (folder / "model.onnx").stat().st_size > 0
        model = load_checkpoint(folder / "model.pt")
        assert sum(p.numel() for p in model.parameters()) == metrics["params"]
    assert "mobilenetv2" in (out / "summary.txt").read_text()
    assert (out / "comparison.png").stat().st_size > 0
    # TensorBoard: one run, the figure redrawn after each model (the step counts them)
    board = EventAccumulator(str(out / "tb"))
    board.Reload()
    assert [e.step for e in board.Images("retrain/accuracy_vs_latency")] == [1, 2, 3]
    assert [e.step for e in board.Tensors("retrain/table/text_summary")] == [1, 2, 3]


def _random_net(name: str) -> torch.nn.Module:
    """A small network whose BN statistics and classifier are far from their initial values,
    so that its logits (and any export error) are not vanishingly small."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=1, width_mult=0.25, stem_stride=1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    torch.nn.init.normal_(model.classifier[1].weight, std=0.2)
    return model.eval()


def test_onnx_matches_pytorch_on_real_images(tmp_path: Path):
    data = load_dataset("digits", image_size=16, train_size=128, val_size=0)
    model = _random_net("mnasnet_a1")
    settings = ExportSettings(batch_size=4, check_images=32)
    check = check_onnx(
        model, export_onnx(model, 16, 1, 4), data.test_x[:32], data.mean, data.std, settings
    )
    assert check.ok and check.images == 32
    assert check.max_abs_diff < 1e-4 and check.max_abs_logit > 0.1
    # A different network's export must fail the check: the check can fail.
    other = _random_net("mobilenetv2")
    bad = check_onnx(
        model, export_onnx(other, 16, 1, 4), data.test_x[:8], data.mean, data.std, settings
    )
    assert not bad.ok and bad.max_abs_diff > 1e-4


def test_finalize_raises_on_mismatch_after_writing(tmp_path: Path, monkeypatch):
    import mnas.deploy.artifacts as retrain_mod

    data = load_dataset("digits", image_size=16, train_size=128, val_size=0)
    model = _random_net("mobilenetv2")
    bad_bytes = export_onnx(_random_net("mnasnet_b1"), 16, 1, 1)
    monkeypatch.setattr(retrain_mod, "export_onnx", lambda *a, **k: bad_bytes)
    latency = LatencySettings(warmup=1, min_runs=3, max_runs=5, time_cap_s=0.05)
    with pytest.raises(ExportMismatchError, match="ONNX outputs differ"):
        finalize(model, data, tmp_path, "m", {}, {}, latency, ExportSettings(check_images=4))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["onnx_ok"] is False and np.isfinite(metrics["onnx_max_abs_diff"])
