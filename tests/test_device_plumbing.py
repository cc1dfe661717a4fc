"""device= reaches every trainer (search children, retraining, transfer), executors place
children on GPUs, and a missing GPU is a config error before any work (issue 14).

GPUs are faked where a test needs some: ``torch.cuda.device_count`` says 2 in the coordinating
process, the trainers are replaced by recorders (nothing touches CUDA), and the pool's and
Ray's workers report the GPU they were given instead of training.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import mnas.data.spec
import mnas.training.trainer
from mnas.conf import register_configs
from mnas.conf.runner import build_search
from mnas.evaluate.executors import make_executor
from mnas.evaluate.trained import TrainOutcome
from mnas.experiments.transfer import TransferResult
from mnas.training import TrainResult

# The module, not the function that mnas.deploy exports under the same name.
RETRAIN = importlib.import_module("mnas.deploy.retrain")
ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
TINY_SEARCH = [
    "steps=1",
    "batch_size=2",
    "data.image_size=8",
    "model.width_mult=0.25",
    "trainer.epochs=0.2",
    "latency=macs",
    "tensorboard=false",
]


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


class RecordingTrainer:
    """Stands in for ``train_and_evaluate``: records the device it is given, trains nothing."""

    def __init__(self) -> None:
        self.devices: list[str] = []

    def __call__(self, model, data, config, eval_split="val", progress=None, device=None):
        self.devices.append(device)
        return TrainResult(0.5, 1.0, 1.0, 1, 0.0, False, None, eval_split, str(device), "bf16")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_config(name: str, overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def no_data(*args, **kwargs):
    raise AssertionError("data was loaded before the device was checked")


# ----------------------------------------------------------------------------- the search


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_search_children_train_on_the_configured_device(tmp_path, monkeypatch, device):
    fake_gpus(monkeypatch, 2)
    trainer = RecordingTrainer()
    monkeypatch.setattr(mnas.training.trainer, "train_and_evaluate", trainer)
    cfg = compose_config("search", [*TINY_SEARCH, f"device={device}"])
    search = build_search(cfg, tmp_path / "run")
    try:
        search.run()
    finally:
        search.evaluator.close()
    assert trainer.devices == ["cuda", "cuda"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"] == "cuda"
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["accuracy"] for r in records] == [0.5, 0.5]


def test_search_auto_trains_on_the_cpu_without_a_gpu(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 0)
    trainer = RecordingTrainer()
    monkeypatch.setattr(mnas.training.trainer, "train_and_evaluate", trainer)
    search = build_search(compose_config("search", TINY_SEARCH), tmp_path / "run")
    try:
        search.run()
    finally:
        search.evaluator.close()
    assert trainer.devices == ["cpu", "cpu"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"] == "cpu"


def test_tasks_carry_the_executors_device(tmp_path, monkeypatch):
    """The runner hands the executor's resolved device to every task it trains."""
    seen = []

    class GpuPool:
        name, device = "pool", "cuda"

        def map(self, fn, tasks, on_result, timeout_s=None):
            seen.extend(t.device for t in tasks)
            for k in range(len(tasks)):
                on_result(k, TrainOutcome(0.5, 1, 1, "ok", "", 0.0))

        def close(self):
            pass

    monkeypatch.setattr("mnas.conf.runner.make_executor", lambda *a, **k: GpuPool())
    search = build_search(compose_config("search", TINY_SEARCH), tmp_path / "run")
    search.run()
    assert seen == ["cuda", "cuda"]


@pytest.mark.parametrize("executor", ["serial", "pool"])
def test_search_on_cuda_without_a_gpu_stops_before_any_work(tmp_path, monkeypatch, executor):
    fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(mnas.data.spec, "get_dataset", no_data)
    cfg = compose_config("search", [*TINY_SEARCH, "device=cuda", f"executor={executor}"])
    with pytest.raises(ValueError, match=r"device=cuda: no CUDA device is available"):
        build_search(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("device=gpu", "device='gpu'; allowed: cpu, cuda, cuda:<index>, auto"),
        ("executor.gpus_per_worker=2", r"gpus_per_worker=2.0 must lie in \(0, 1\]"),
        ("trainer.amp=fp8", "fp8"),
    ],
)
def test_bad_device_settings_are_config_errors(tmp_path, override, match):
    with pytest.raises(Exception, match=match):
        build_search(compose_config("search", [*TINY_SEARCH, override]), tmp_path / "run")


# ----------------------------------------------------------------------------- executors


def visible_devices(_: int) -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def collect(executor, fn, tasks) -> list:
    out: dict[int, object] = {}
    executor.map(fn, tasks, out.__setitem__)
    return [out[k] for k in range(len(tasks))]


def test_pool_pins_its_workers_to_the_gpus_round_robin(monkeypatch):
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # the parent's own selection
    pool = make_executor("pool", device="cuda", gpus_per_worker=0.5, threads_per_worker=1)
    try:
        assert pool.device == "cuda" and pool.workers == 4  # 2 GPUs x 2 children each
        assert sorted(collect(pool, visible_devices, range(4))) == ["5", "5", "7", "7"]
    finally:
        pool.close()
    one = make_executor("pool", device="cuda:1", threads_per_worker=1)
    try:
        assert one.device == "cuda" and one.workers == 1
        assert collect(one, visible_devices, range(2)) == ["7", "7"]
    finally:
        one.close()
    fake_gpus(monkeypatch, 0)
    cpu = make_executor("pool", device="auto", gpus_per_worker=0.5)
    assert cpu.device == "cpu" and cpu.gpus == [] and cpu.workers >= 1
    with pytest.raises(ValueError, match="no CUDA device"):
        make_executor("pool", device="cuda")


def test_serial_executor_resolves_its_device(monkeypatch):
    fake_gpus(monkeypatch, 1)
    assert make_executor("serial", device="auto").device == "cuda"
    assert make_executor("serial", device="cuda:0").device == "cuda:0"
    fake_gpus(monkeypatch, 0)
    assert make_executor("serial", device="auto").device == "cpu"


def gpu_of_worker(_: int) -> tuple[int, str | None]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def test_ray_shares_a_gpu_between_long_lived_workers(monkeypatch):
    """A Ray cluster with one (declared) GPU: two children of half a GPU each share it, in two
    actors that keep their GPU across tasks; the device follows the cluster, not this
    process."""
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # Ray checks it against num_gpus
    here = {"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, runtime_env=here)
    try:
        ex = make_executor("ray", device="cuda", gpus_per_worker=0.5, threads_per_worker=1)
        try:
            assert ex.device == "cuda" and ex.workers == 2
            out = collect(ex, gpu_of_worker, range(6))
            assert {gpu for _, gpu in out} == {"0"}
            assert len({pid for pid, _ in out}) == 2  # the same two processes throughout
        finally:
            ex.close()
        capped = make_executor("ray", device="auto", workers=5, threads_per_worker=1)
        assert capped.device == "cuda" and capped.workers == 1  # one whole GPU: one child
        capped.close()
        with pytest.raises(ValueError, match="Ray gives each child its GPU; use device=cuda"):
            make_executor("ray", device="cuda:0")
    finally:
        ray.shutdown()


def test_ray_cluster_without_gpus_refuses_cuda():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False)
    try:
        with pytest.raises(ValueError, match=r"device=cuda: .*the Ray cluster offers 0 GPUs"):
            make_executor("ray", device="cuda")
        cpu = make_executor("ray", device="auto")
        assert cpu.device == "cpu" and cpu.gpu_share == 0.0
        cpu.close()
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- retraining


def fake_finalize(model, data, out_dir, name, checkpoint, metrics, *args, **kwargs):
    return {
        **metrics,
        "params": 1,
        "macs": 1,
        "latency_ms": 1.0,
        "latency_scale": "drift-corrected",
        "latency_raw_ms": 1.1,
    }


def test_retrain_trains_on_the_configured_device(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 1)
    trainer = RecordingTrainer()
    monkeypatch.setattr(RETRAIN, "train_and_evaluate", trainer)
    monkeypatch.setattr(RETRAIN, "finalize", fake_finalize)
    script = load_script("retrain")
    for device in ("cuda", "auto"):
        cfg = compose_config("retrain", [f"device={device}", f"out_dir={tmp_path}"])
        assert script.run(cfg) == 0.5
    assert trainer.devices == ["cuda", "cuda"]


def test_retrain_on_cuda_without_a_gpu_stops_before_loading_data(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 0)
    script = load_script("retrain")
    monkeypatch.setattr(script, "load_data", no_data)
    cfg = compose_config("retrain", ["device=cuda", f"out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="device=cuda: no CUDA device is available"):
        script.run(cfg)


# ----------------------------------------------------------------------------- transfer

TINY_TRANSFER = [
    "data=digits",
    "data.image_size=16",
    "data.train_size=64",
    "data.val_size=null",
    "data.test_size=null",
]


def test_transfer_trains_on_the_configured_device(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 1)
    script = load_script("transfer")
    devices = []

    def recording_transfer(model, data, config, progress=None, device=None):
        devices.append(device)
        return TransferResult(0.5, 1.0, 0.1, 1.0, 1, 0.0, False, str(device), "bf16")

    def finalize(model, data, out_dir, name, checkpoint, metrics, *args, **kwargs):
        timed = dict.fromkeys(
            (
                "latency_ms",
                "latency_batch_ms",
                "latency_torch_raw_ms",
                "latency_torch_batch_raw_ms",
            ),
            1.0,
        )
        return {**metrics, **timed, "params": 1, "batch": 32, "onnx_max_abs_diff": 0.0,
                "latency_scale": "drift-corrected",
                "onnx_checked_images": 1}  # fmt: skip

    monkeypatch.setattr(script, "train_transfer", recording_transfer)
    monkeypatch.setattr(script, "finalize", finalize)
    cfg = compose_config("transfer", [*TINY_TRANSFER, "device=cuda", f"out_dir={tmp_path}"])
    assert script.run(cfg) == 0.5
    assert devices == ["cuda"]


def test_transfer_on_cuda_without_a_gpu_stops_before_any_work(tmp_path, monkeypatch):
    fake_gpus(monkeypatch, 0)
    script = load_script("transfer")
    monkeypatch.setattr(script, "load_data", no_data)
    monkeypatch.setattr(script, "imagenet_state_dict", no_data)
    cfg = compose_config(
        "transfer", [*TINY_TRANSFER, "device=cuda", "pretrained=true", f"out_dir={tmp_path}"]
    )
    with pytest.raises(ValueError, match="device=cuda: no CUDA device is available"):
        script.run(cfg)
