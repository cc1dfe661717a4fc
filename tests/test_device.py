"""device=cpu|cuda|auto, mixed precision and the GPU code paths, checked on the CPU (issue 14)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import mnas.training.trainer as trainer
from mnas.data import load_dataset
from mnas.nn import build_model
from mnas.space import MnasSpace
from mnas.training import TrainConfig, evaluate, train_and_evaluate
from mnas.training.device import autocast_dtype, place_data, resolve_device, visible_gpus

no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("digits", image_size=8, train_size=128, val_size=64, test_size=64)


def small_model(data, seed=0):
    torch.manual_seed(seed)
    arch = MnasSpace().sample(random.Random(seed))
    return build_model(
        arch, num_classes=data.num_classes, in_channels=data.in_channels, width_mult=0.25
    )


def fake_gpus(monkeypatch, count: int, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)


@no_cuda_here
def test_auto_is_cpu_and_cuda_is_an_error_on_this_machine():
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"device=cuda: no CUDA device is available.*device=cpu"):
        resolve_device("cuda")


def test_resolution_follows_the_cuda_devices_there_are(monkeypatch):
    fake_gpus(monkeypatch, 0)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda:0")
    fake_gpus(monkeypatch, 2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match=r"device=cuda:2: only 2 CUDA device\(s\)"):
        resolve_device("cuda:2")
    # Another machine's count (a Ray cluster's GPUs) decides instead of this process's.
    assert resolve_device("auto", cuda_devices=0) == "cpu"
    with pytest.raises(ValueError, match="no CUDA device is available \\(the Ray cluster"):
        resolve_device("cuda", cuda_devices=0, where="the Ray cluster has no GPU")


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "mps", "", None, 1])
def test_unknown_devices_name_the_allowed_ones(bad):
    with pytest.raises(ValueError, match=r"allowed: cpu, cuda, cuda:<index>, auto"):
        resolve_device(bad)


def test_visible_gpus_keep_the_parents_numbering(monkeypatch):
    fake_gpus(monkeypatch, 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5, 7")
    assert visible_gpus() == ["5", "7"]


def test_amp_auto_is_fp32_on_cpu_and_bf16_or_fp16_on_a_gpu(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None
    assert autocast_dtype("off", gpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp16", cpu) is torch.float16
    fake_gpus(monkeypatch, 1, bf16=True)
    assert autocast_dtype("auto", gpu) is torch.bfloat16
    fake_gpus(monkeypatch, 1, bf16=False)
    assert autocast_dtype("auto", gpu) is torch.float16
    with pytest.raises(ValueError, match="amp='fp8'; allowed: auto, bf16, fp16, off"):
        TrainConfig(amp="fp8")


def test_cpu_data_is_not_copied(tiny):
    assert place_data(tiny, torch.device("cpu")) is tiny


class DtypeProbe:
    """Records the dtype of every convolution output (forward hooks)."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: set[torch.dtype] = set()
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(lambda _m, _i, out: self.seen.add(out.dtype))


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_under_autocast(tiny, amp):
    """The autocast path the GPU takes, run on the CPU: convolutions compute in the low
    precision, the weights stay float32, the loss is finite and the result says which."""
    model = small_model(tiny)
    probe = DtypeProbe(model)
    config = TrainConfig(max_steps=4, batch_size=32, threads=1, amp=amp)
    result = train_and_evaluate(model, tiny, config)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert probe.seen == {dtype}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.precision == amp and result.device == "cpu"
    assert not result.diverged and math.isfinite(result.loss) and math.isfinite(result.eval_loss)
    plain = small_model(tiny)
    probe = DtypeProbe(plain)
    assert train_and_evaluate(plain, tiny, TrainConfig(max_steps=4, threads=1)).precision == "fp32"
    assert probe.seen == {torch.float32}


def test_bf16_evaluation_agrees_with_float32(tiny):
    model = small_model(tiny)
    train_and_evaluate(model, tiny, TrainConfig(max_steps=20, batch_size=32, threads=1))
    acc32, loss32 = evaluate(model, tiny.val_x, tiny.val_y, tiny.mean, tiny.std, amp="off")
    acc16, loss16 = evaluate(model, tiny.val_x, tiny.val_y, tiny.mean, tiny.std, amp="bf16")
    assert abs(acc16 - acc32) <= 2 / len(tiny.val_y)
    assert loss16 == pytest.approx(loss32, rel=0.05)


def test_reading_the_loss_every_k_steps_changes_nothing_but_when(tiny, monkeypatch):
    """A GPU reads the loss every LOSS_CHECK_EVERY steps; the same code on the CPU with
    that interval gives the same numbers, progress calls and divergence step."""

    def run(every: int, lr: float):
        monkeypatch.setattr(trainer, "_loss_check_every", lambda device: every)
        calls = []
        config = TrainConfig(epochs=5, max_steps=11, batch_size=32, threads=1, lr=lr)
        result = train_and_evaluate(
            small_model(tiny), tiny, config, progress=lambda s, t, v: calls.append((s, t, v))
        )
        return result, calls

    (one, calls1), (five, calls5) = run(1, 0.05), run(5, 0.05)
    assert (one.accuracy, one.loss, one.eval_loss, one.steps) == (
        five.accuracy,
        five.loss,
        five.eval_loss,
        five.steps,
    )
    assert calls1 == calls5 and [s for s, _, _ in calls1] == list(range(1, 12))
    (bad1, _), (bad5, _) = run(1, 1e6), run(5, 1e6)
    assert bad1.diverged and bad5.diverged
    assert bad1.diverged_step == bad5.diverged_step == bad5.steps
    assert bad1.accuracy == bad5.accuracy == 0.0


def test_device_argument_moves_the_model(tiny):
    model = small_model(tiny).to(torch.float32)
    result = train_and_evaluate(model, tiny, TrainConfig(max_steps=2, threads=1), device="cpu")
    assert result.device == "cpu"
    assert next(model.parameters()).device == torch.device("cpu")
