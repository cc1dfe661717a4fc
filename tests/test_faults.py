"""The fast cases of bench/faults.py (issue 12): kills inside writes, damaged files, bad input.

The long runs (20 real SIGKILLs at random moments and inside writes, hangs and killed
workers under every executor, latency cache faults, bad inputs through the scripts) are in
``bench/faults.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from tiny_search import make_cfg

from mnas.conf.runner import build_search, load_resume_config
from mnas.data import spec as data_spec


def run_to_end(cfg, run_dir: Path) -> None:
    search = build_search(cfg, run_dir)
    try:
        search.run()
    finally:
        search.evaluator.close()


def outcome(run_dir: Path):
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    recs = [(r["hash"], r["status"], r["accuracy"], r["reward"]) for r in map(json.loads, lines)]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["strategy"]
    return recs, state


def assert_same(run_dir: Path, ref: Path) -> None:
    (recs, state), (ref_recs, ref_state) = outcome(run_dir), outcome(ref)
    assert recs == ref_recs
    for key in ("controller", "generator"):
        a, b = state[key], ref_state[key]
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)
    assert state["baseline"] == ref_state["baseline"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run: 2 steps x 2 architectures."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    run_to_end(make_cfg("steps=2"), ref)
    return ref


def resume_to_end(run_dir: Path, *overrides: str) -> None:
    run_to_end(load_resume_config(run_dir, [f"resume={run_dir}", *overrides]), run_dir)


def test_truncated_checkpoint_is_replayed_from_the_results(tmp_path, reference):
    run = tmp_path / "run"
    run_to_end(make_cfg("steps=1"), run)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    resume_to_end(run, "steps=2")
    assert (run / "checkpoint.pt.corrupt").exists()
    assert_same(run, reference)


class Killed(BaseException):
    """Stands in for SIGKILL: nothing of the search runs after it (bench/faults.py sends
    the real signal to a real process)."""


def write_half_and_die(path: Path, data: bytes, mode: str) -> None:
    with open(path, mode) as f:
        f.write(data[: len(data) // 2])
    raise Killed


@pytest.mark.parametrize("where", ["results", "checkpoint"])
def test_kill_inside_a_write_then_resume(tmp_path, reference, monkeypatch, where):
    import mnas.search.loop

    run = tmp_path / "run"
    calls = {"n": 0}
    if where == "results":  # halfway through the third results line
        original = mnas.search.loop.Search._append

        def append(self, rec):
            calls["n"] += 1
            if calls["n"] == 3:
                line = (rec.to_json() + "\n").encode()
                write_half_and_die(self.run_dir / "results.jsonl", line, "ab")
            original(self, rec)

        monkeypatch.setattr(mnas.search.Search, "_append", append)
    else:  # halfway through the first checkpoint's temporary file
        original_save = torch.save

        def save(obj, path, *args, **kwargs):
            buf = io.BytesIO()
            original_save(obj, buf)
            write_half_and_die(Path(path), buf.getvalue(), "wb")

        monkeypatch.setattr(mnas.search.loop.torch, "save", save)
    with pytest.raises(Killed):
        run_to_end(make_cfg("steps=2"), run)
    monkeypatch.undo()
    if where == "results":
        assert not (run / "results.jsonl").read_bytes().endswith(b"\n")  # a torn line
    else:
        assert (run / "checkpoint.pt.tmp").exists() and not (run / "checkpoint.pt").exists()
    resume_to_end(run)
    assert_same(run, reference)


BAD = [
    # unknown keys and wrong types: refused when the config is composed
    ("stepz=3", "stepz"),
    ("trainer.lrr=0.1", "lrr"),
    ("latency.kindd=macs", "kindd"),
    ("steps=abc", "steps"),
    ("batch_size=2.5", "batch_size"),
    ("trainer.epochs=fast", "epochs"),
    ("tensorboard=maybe", "tensorboard"),
    ("executor.workers=two", "workers"),
    # out of range or unknown names: refused by validation, before data is loaded
    ("steps=0", "steps=0 must be >= 1"),
    ("batch_size=-1", "batch_size=-1 must be >= 1"),
    ("seed=-5", "seed=-5 must be >= 0"),
    ("reward.alpha=0.5", "alpha=0.5 must be <= 0"),
    ("reward.beta=1", "beta=1.0 must be <= 0"),
    ("reward.target_ms=-3", "T=-3.0 must be"),
    ("reward.target_ms=fast", "'fast'; allowed: a number > 0 or 'auto'"),
    ("reward.preset=medium", "reward.preset=medium"),
    ("strategy.lr=0", "strategy.lr=0.0 must be > 0"),
    ("strategy.clip_eps=1.5", "clip_eps=1.5 must lie in"),
    ("strategy.epochs=0", "epochs=0 must be >= 1"),
    ("strategy.name=bayes", "strategy.name=bayes"),
    ("trainer.batch_size=0", "batch_size=0"),
    ("trainer.optimizer=lbfgs", "lbfgs"),
    ("model.width_mult=0", "width_mult=0.0 must be > 0"),
    ("data.image_size=0", "image_size=0 must be >= 1"),
    ("executor.retries=-1", "retries=-1 must be >= 0"),
    ("executor.workers=0", "workers=0 must be >= 1"),
    ("executor.name=mpi", "executor.name=mpi"),
    ("executor.child_timeout_s=-5", "child_timeout_s=-5; allowed"),
    ("executor.child_timeout_s=soon", "child_timeout_s='soon'; allowed"),
    ("latency.kind=flops", "latency.kind=flops"),
    ("latency.kind=lut", "needs latency.lut_path"),
    ("space.name=darts", "space.name=darts"),
    ("space.name=nasbench201", "evaluated by evaluator=tabular"),
]


@pytest.mark.parametrize("override, fragment", BAD)
def test_bad_input_is_refused_before_any_work(tmp_path, monkeypatch, override, fragment):
    def no_data(*a, **k):
        raise AssertionError("data was loaded before the config was validated")

    monkeypatch.setattr(data_spec, "get_dataset", no_data)
    with pytest.raises((ValueError, ConfigCompositionException), match=fragment):
        build_search(make_cfg(override), tmp_path)
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["data=fashion_mnist", "data.root=/nonexistent"], "/nonexistent"),
        (["data=imagefolder", "data.root=/nonexistent"], "/nonexistent"),
    ],
)
def test_missing_data_folder_is_a_clear_error(tmp_path, overrides, fragment):
    with pytest.raises((ValueError, FileNotFoundError), match=fragment):
        build_search(make_cfg(*overrides), tmp_path)
    assert not (tmp_path / "results.jsonl").exists()
