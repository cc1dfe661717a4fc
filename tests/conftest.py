"""Shared test set-up: one torch thread (tiny models run fastest that way on 2 shared cores)."""

import os

import pytest
import torch

torch.set_num_threads(1)
# The suite's figures are CPU figures on every machine: device=auto must not pick a GPU
# (read by CUDA when it starts). CUDA_VISIBLE_DEVICES=0 pytest ... exposes one.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

DATA = os.environ.get("MNAS_DATA")


@pytest.fixture
def mnas_data():
    """Path of ../shared/datasets (from MNAS_DATA); skips the test when absent."""
    if not DATA or not os.path.isdir(DATA):
        pytest.skip("MNAS_DATA is not set or missing (../shared/datasets)")
    return DATA


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory, monkeypatch):
    """Paths under ``~`` (the default latency cache, which holds the drift-correction
    nominal) go to a folder of this test session, never the user's: a nominal timed under
    test load would set the scale of every later figure of theirs."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.getbasetemp() / "home"))
