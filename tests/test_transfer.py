"""The MNASNet transfer experiments: sizes, pretrained weights, BN fix, script (issue 7)."""

from __future__ import annotations

import importlib.util
import json
import urllib.error
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torchvision.models import mnasnet1_0

from mnas.experiments.transfer import (
    TORCHVISION_BN_MOMENTUM,
    PretrainedWeightsError,
    imagenet_state_dict,
    transfer_model,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _script():
    spec = importlib.util.spec_from_file_location("script_transfer", ROOT / "scripts/transfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compose(overrides: list[str]):
    _script()  # registers the schema
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="transfer", overrides=overrides)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_course_report():
    cifar = transfer_model(in_channels=3, num_classes=10)
    fashion = transfer_model(in_channels=1, num_classes=10)
    assert _params(cifar) == 3_115_122
    assert _params(fashion) == 3_114_546
    assert fashion.layers[0].in_channels == 1 and fashion.layers[0].stride == (2, 2)
    assert fashion.layers[0].bias is None and fashion.classifier[1].out_features == 10
    assert fashion(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    bn = next(m for m in cifar.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum == pytest.approx(TORCHVISION_BN_MOMENTUM)
    bn = next(m for m in transfer_model(bn_momentum=0.1).modules() if hasattr(m, "momentum"))
    assert bn.momentum == 0.1


def test_pretrained_without_network_is_a_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError, match="weights_path=") as info:
        imagenet_state_dict()
    assert "Not falling back to random weights" in str(info.value)
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        imagenet_state_dict(tmp_path / "missing.pth")


def test_weights_path_loads_imagenet_weights_into_the_adapted_network(tmp_path):
    torch.manual_seed(3)
    source = mnasnet1_0()
    torch.save(source.state_dict(), tmp_path / "mnasnet.pth")
    model = transfer_model(
        in_channels=3, imagenet_weights=imagenet_state_dict(tmp_path / "mnasnet.pth")
    )
    assert torch.equal(model.layers[3].weight, source.layers[3].weight)
    assert torch.equal(model.layers[0].weight, source.layers[0].weight)
    assert model.classifier[1].out_features == 10
    fashion = transfer_model(1, imagenet_weights=source.state_dict())
    assert fashion.layers[0].in_channels == 1
    assert torch.equal(fashion.layers[3].weight, source.layers[3].weight)
    with pytest.raises(PretrainedWeightsError, match="do not fit"):
        transfer_model(imagenet_weights={"bogus": torch.zeros(1)})


def test_experiment_configs_hold_the_protocol():
    cfg = _compose(["transfer_experiment=fashion_mnist"])
    assert cfg.data.name == "fashion_mnist" and cfg.data.image_size == 28
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.test_size) == (10000, 0, 10000)
    t = cfg.trainer
    assert (t.optimizer, t.lr, t.batch_size, t.epochs) == ("sgd", 0.01, 32, 5)
    assert t.bn_recalibrate and not cfg.pretrained
    assert _compose(["transfer_experiment=cifar10"]).data.name == "cifar10"
    with pytest.raises(ValueError, match="needs pretrained=true"):
        _script().validate(_compose(["weights_path=x.pth"]))


def test_pretrained_fails_before_loading_data(monkeypatch, tmp_path):
    cfg = _compose(["pretrained=true", f"weights_path={tmp_path}/none.pth", "data.root=/nope"])
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        _script().run(cfg)


def test_script_end_to_end_on_digits_fixes_stale_bn(tmp_path):
    """From scratch with torchvision's BN momentum: eval mode with the stale running
    statistics is near chance; re-estimated statistics are far better."""
    overrides = [
        "data=digits",
        "data.image_size=16",
        "data.train_size=640",
        "data.val_size=null",
        "data.test_size=null",
        f"out_dir={tmp_path}",
        "trainer.epochs=1",
        "trainer.lr=0.05",
        "trainer.bn_recalibrate_batches=8",
        "onnx_check_images=8",
        "latency.warmup=1",
        "latency.min_runs=3",
        "latency.max_runs=10",
        "latency.time_cap_s=0.05",
    ]
    accuracy = _script().run(_compose(overrides))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] == accuracy and metrics["dataset"] == "digits"
    assert metrics["pretrained"] is False and metrics["params"] == 3_114_546
    assert metrics["device"] == "cpu" and metrics["precision"] == "fp32"  # device=auto, no GPU
    assert metrics["test_images"] == 359 and metrics["train_steps"] == 20
    assert metrics["test_accuracy_stale_bn"] < 0.2
    assert accuracy > metrics["test_accuracy_stale_bn"] + 0.15
    assert metrics["onnx_ok"] and metrics["onnx_max_abs_diff"] < 1e-3
    keys = ("latency_ms", "latency_batch_ms", "latency_torch_raw_ms", "latency_torch_batch_raw_ms")
    for key in keys:
        assert metrics[key] > 0
    assert metrics["batch"] == 32 and (tmp_path / "model.onnx").is_file()
