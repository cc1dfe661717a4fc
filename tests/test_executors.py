"""Executors (issue 6): pool and Ray match serial, crashed workers, Ray missing."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mnas.conf import register_configs
from mnas.conf.runner import build_search
from mnas.evaluate.executors import (
    PoolExecutor,
    TaskError,
    TaskTimeout,
    WorkerFailure,
    make_executor,
)
from mnas.evaluate.trained import crashed_outcome

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY = [
    "steps=2",
    "batch_size=2",
    "data.image_size=8",
    "model.width_mult=0.25",
    "trainer.epochs=0.2",
    "latency=macs",
    "tensorboard=false",
]


def compose_search(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="search", overrides=[*TINY, *overrides])


def run_search(tmp_path: Path, name: str, *overrides: str) -> dict[str, dict]:
    search = build_search(compose_search(*overrides), tmp_path / name)
    try:
        search.run()
    finally:
        search.evaluator.close()
    lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
    return {r["hash"]: r for r in map(json.loads, lines)}


def same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys() and len(a) >= 2
    for h in a:
        for key in ("step", "accuracy", "latency_mmacs", "params", "macs", "status", "reward"):
            assert a[h][key] == b[h][key], (h, key)


@pytest.fixture(scope="module")
def serial_results(tmp_path_factory) -> dict[str, dict]:
    return run_search(tmp_path_factory.mktemp("serial"), "serial", "executor=serial")


def test_pool_matches_serial(tmp_path, serial_results):
    pool = run_search(tmp_path, "pool", "executor=pool", "executor.workers=2")
    same_results(serial_results, pool)
    assert all(r["status"] == "ok" for r in pool.values())


def test_ray_matches_serial(tmp_path, serial_results):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        results = run_search(tmp_path, "ray", "executor=ray", "executor.workers=2")
    finally:
        ray.shutdown()
    same_results(serial_results, results)


def test_ray_latency_device_times_children_and_target_on_that_node(tmp_path, serial_results):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, resources={"latency_device": 1}, include_dashboard=False)
    try:
        cfg = compose_search(
            "executor=ray",
            "executor.workers=2",
            "executor.latency_resource=latency_device",
            "latency=measured",
            "latency.cache=null",
            "latency.reference=false",
            "latency.time_cap_s=0.05",
        )
        search = build_search(cfg, tmp_path / "device")
        try:
            search.run()
        finally:
            search.evaluator.close()
    finally:
        ray.shutdown()
    # The coordinator's own evaluator exported nothing: the target and every child were
    # timed by a copy of it in the Ray task that held the latency_device resource.
    assert search.evaluator.latency.exports == 0
    recs = [json.loads(x) for x in (tmp_path / "device" / "results.jsonl").read_text().splitlines()]
    assert len(recs) >= 2 and all(r["status"] == "ok" for r in recs)
    assert all(r["latency"]["source"] == "measured" and r["latency_ms"] > 0 for r in recs)
    assert search.target > 0
    # Training is unaffected by where timing ran.
    assert {r["hash"]: r["accuracy"] for r in recs} == {
        h: r["accuracy"] for h, r in serial_results.items()
    }


def test_latency_device_keeps_one_evaluator_per_settings_across_steps():
    import pickle

    from mnas.evaluate import trained as child
    from mnas.latency import MacsLatency
    from mnas.space import MnasSpace

    arch = MnasSpace().architecture(MnasSpace().baseline_tokens())
    first, again, other = (
        MacsLatency(input_size=16),
        MacsLatency(input_size=16),
        MacsLatency(input_size=32),
    )
    child._KEPT_EVALUATORS.clear()
    out1 = child.time_batch_on_device((first, [arch]))
    # Each step ships a fresh copy; the one kept from the first step does the timing.
    out2 = child.time_batch_on_device((pickle.loads(pickle.dumps(again)), [arch]))
    assert out1[0][1] == out2[0][1] > 0
    assert len(child._KEPT_EVALUATORS) == 1
    assert next(iter(child._KEPT_EVALUATORS.values())) is first
    child.time_batch_on_device((other, [arch]))
    assert len(child._KEPT_EVALUATORS) == 2
    child._KEPT_EVALUATORS.clear()


def test_ray_latency_resource_nobody_offers_is_a_config_error():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        with pytest.raises(ValueError, match="'phone'.*no node"):
            make_executor("ray", latency_resource="phone")
    finally:
        ray.shutdown()
    with pytest.raises(ValueError, match="needs executor=ray"):
        make_executor("pool", latency_resource="latency_device")


def square(x: int) -> int:
    return x * x


def die_once(args: tuple[str, int]) -> int:
    """Kill this worker on the first attempt at a task (a marker file remembers it)."""
    marker, x = args
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), 9)
    return x * x


def die_always(x: int) -> int:
    os._exit(3)


def sleep_or_square(x: int) -> int:
    if x < 0:
        time.sleep(600)
    return x * x


def raise_error(x: int) -> int:
    raise RuntimeError(f"bad task {x}")


def collect(executor, fn, tasks) -> dict[int, object]:
    out: dict[int, object] = {}
    executor.map(fn, tasks, out.__setitem__)
    return out


def test_pool_retries_a_killed_worker_and_keeps_the_others(tmp_path):
    pool = PoolExecutor(workers=2, threads_per_worker=1, retries=1)
    try:
        tasks = [(str(tmp_path / f"m{k}"), k) for k in range(4)]
        tasks[1] = (str(tmp_path / "dies"), 1)
        for k in (0, 2, 3):
            Path(tasks[k][0]).touch()  # only task 1 kills its worker
        assert collect(pool, die_once, tasks) == {0: 0, 1: 1, 2: 4, 3: 9}
        assert (tmp_path / "dies").exists()
        # the pool is whole again afterwards
        assert collect(pool, square, [5, 6, 7]) == {0: 25, 1: 36, 2: 49}
    finally:
        pool.close()


def test_pool_records_a_task_that_always_kills_its_worker():
    pool = PoolExecutor(workers=2, threads_per_worker=1, retries=1)
    try:
        out = collect(pool, die_always, [1])
        assert list(out) == [0]
        failure = out[0]
        assert isinstance(failure, WorkerFailure) and failure.seconds > 0
        assert (failure.reason, failure.attempts) == ("exit code 3", 2)
        # The evaluator turns the value into a failed child.
        rec = crashed_outcome(failure)
        assert rec.status == "failed" and math.isnan(rec.accuracy)
        assert rec.reason == "worker crashed: exit code 3 (2 attempts)"
        once = make_executor("pool", workers=1, retries=0)
        try:
            out = collect(once, die_always, [1])
        finally:
            once.close()
        assert crashed_outcome(out[0]).reason == "worker crashed: exit code 3 (1 attempt)"
    finally:
        pool.close()


def test_pool_propagates_an_exception_of_the_function():
    pool = PoolExecutor(workers=2, threads_per_worker=1)
    try:
        with pytest.raises(TaskError, match=r"bad task [12]"):
            collect(pool, raise_error, [1, 2])
        assert collect(pool, square, [3]) == {0: 9}
    finally:
        pool.close()


def test_ray_retries_a_killed_worker_then_records_it_and_stops_a_task_over_its_limit(tmp_path):
    ray = pytest.importorskip("ray")
    # Ray workers import the task functions of this module by name.
    here = {"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=here)
    try:
        ex = make_executor("ray", workers=2, retries=1)
        marker = str(tmp_path / "dies")
        assert collect(ex, die_once, [(marker, 3)]) == {0: 9}
        failure = collect(ex, die_always, [1])[0]
        assert isinstance(failure, WorkerFailure) and failure.attempts == 2
        rec = crashed_outcome(failure)
        assert rec.status == "failed" and rec.reason.startswith("worker crashed: ")
        assert rec.reason.endswith("(2 attempts)")
        # Issue 12, hole 3: a task past its time limit comes back as a TaskTimeout (it was
        # tests/test_reliability.py::test_ray_records_a_task_over_the_time_limit, moved here
        # to share this Ray instance) and the executor goes on.
        out: dict[int, object] = {}
        ex.map(sleep_or_square, [2, -1], out.__setitem__, timeout_s=5.0)
        assert out[0] == 4 and isinstance(out[1], TaskTimeout) and out[1].limit_s == 5.0
        assert collect(ex, square, [7]) == {0: 49}
        ex.close()
    finally:
        ray.shutdown()


def test_ray_missing_is_a_clear_config_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if absent
    with pytest.raises(ValueError, match=r'pip install "mnas\[ray\]"'):
        make_executor("ray")
    with pytest.raises(ValueError, match=r'pip install "mnas\[ray\]"'):
        build_search(compose_search("executor=ray"), tmp_path / "run")


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"threads_per_worker": 0}, {"retries": -1}])
def test_pool_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        make_executor("pool", **kwargs)
