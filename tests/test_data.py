"""Datasets: split sizes, determinism, statistics, layouts and errors (mnas.data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnas.data import DATASETS, channel_stats, load_dataset, stratified_permutation

SHARED = os.environ.get("MNAS_DATA")
needs_shared = pytest.mark.skipif(
    not SHARED or not Path(SHARED, "FashionMNIST").is_dir(),
    reason="MNAS_DATA (../shared/datasets) not available",
)


def test_digits_default_split_sizes_and_types():
    d = load_dataset("digits", image_size=16)
    # 1,797 images: a fixed 20% test set (359), then 20% of the remaining 1,438 as validation.
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (1150, 288, 359)
    assert len(d.train_y) + len(d.val_y) + len(d.test_y) == 1797
    assert d.train_x.shape == (1150, 1, 16, 16) and d.train_x.dtype == torch.uint8
    assert d.train_y.dtype == torch.int64
    assert (d.num_classes, d.in_channels, d.image_size) == (10, 1, 16)
    assert d.train_x.max() > 200  # 0-16 pixel values scaled to 0-255


def test_explicit_sizes_are_class_balanced():
    d = load_dataset("digits", image_size=8, train_size=500, val_size=100, test_size=50)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (500, 100, 50)
    for y, n in ((d.train_y, 500), (d.val_y, 100), (d.test_y, 50)):
        counts = torch.bincount(y, minlength=10)
        # digits classes hold 174-183 images, so balance is within a couple of images.
        assert counts.min() >= n // 10 - 2 and counts.max() <= n // 10 + 2


def test_splits_are_deterministic_and_seeded():
    a = load_dataset("digits", image_size=8, seed=3)
    b = load_dataset("digits", image_size=8, seed=3)
    c = load_dataset("digits", image_size=8, seed=4)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert a.mean == b.mean and a.std == b.std
    assert not torch.equal(a.val_x, c.val_x)
    # The test set never depends on the seed, and train+val is the same pool for any seed.
    assert torch.equal(a.test_x, c.test_x)
    pool_a = sorted(map(bytes, torch.cat([a.train_x, a.val_x]).flatten(1).numpy()))
    pool_c = sorted(map(bytes, torch.cat([c.train_x, c.val_x]).flatten(1).numpy()))
    assert pool_a == pool_c


def test_val_split_does_not_depend_on_train_size():
    small = load_dataset("digits", image_size=8, train_size=100, val_size=200)
    full = load_dataset("digits", image_size=8, val_size=200)
    assert torch.equal(small.val_x, full.val_x)
    assert torch.equal(small.train_x, full.train_x[:100])


def test_stratified_permutation_is_a_balanced_permutation():
    labels = torch.tensor([0] * 90 + [1] * 10)
    order = stratified_permutation(labels, seed=0)
    assert sorted(order.tolist()) == list(range(100))
    assert int((labels[order[:20]] == 1).sum()) == 2
    assert torch.equal(order, stratified_permutation(labels, seed=0))
    assert not torch.equal(order, stratified_permutation(labels, seed=1))


def test_channel_stats_match_float_computation():
    d = load_dataset("digits", image_size=12, train_size=300, val_size=50)
    mean, std = channel_stats(d.train_x)
    v = d.train_x.double() / 255
    assert mean == pytest.approx([v.mean().item()], abs=1e-9)
    assert std == pytest.approx([v.std(unbiased=False).item()], abs=1e-9)
    assert d.mean == mean and d.std == std


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "mnist"}, "'mnist'.*digits, fashion_mnist, cifar10, imagefolder"),
        ({"name": "digits", "train_size": 0}, "train_size=0"),
        ({"name": "digits", "val_size": -1}, "val_size=-1"),
        ({"name": "digits", "test_size": -1}, "test_size=-1"),
        ({"name": "digits", "image_size": 0}, "image_size=0"),
        ({"name": "digits", "train_size": 2.5}, "train_size=2.5"),
        ({"name": "digits", "train_size": 1400}, "train_size=1400.*at most 1150"),
        ({"name": "digits", "val_size": 1438}, "val_size=1438"),
        ({"name": "digits", "test_size": 400}, "test_size=400.*359"),
    ],
)
def test_bad_names_and_sizes_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)
    assert set(DATASETS) == {"digits", "fashion_mnist", "cifar10", "imagefolder"}


def test_missing_root_names_the_env_var(monkeypatch):
    monkeypatch.delenv("MNAS_DATA", raising=False)
    with pytest.raises(ValueError, match="MNAS_DATA"):
        load_dataset("fashion_mnist")


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST.raw.*download=True"):
        load_dataset("fashion_mnist", root=str(tmp_path))
    with pytest.raises(
        FileNotFoundError, match=r"cifar-10-batches-py.*cifar10-jpeg.*download=True"
    ):
        load_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train"):
        load_dataset("imagefolder", root=str(tmp_path))


def _write_images(folder: Path, colours: dict[str, tuple[int, int, int]], n: int) -> None:
    for cls, colour in colours.items():
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            size = (40, 30) if i % 2 else (24, 24)  # non-square and square, PNG and JPEG
            ext = "png" if i % 3 else "jpg"
            Image.new("RGB", size, colour).save(folder / cls / f"{i:03d}.{ext}")


def test_imagefolder_decodes_resizes_and_labels(tmp_path):
    colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
    _write_images(tmp_path / "train", colours, 20)
    _write_images(tmp_path / "test", colours, 6)
    d = load_dataset("imagefolder", root=str(tmp_path), image_size=16, val_size=10)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (30, 10, 12)
    assert d.train_x.shape == (30, 3, 16, 16) and d.num_classes == 2 and d.in_channels == 3
    # Classes sort by name: blue=0, red=1; a solid image stays solid (JPEG within a few levels).
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        red = x[y == 1].float().mean(dim=(0, 2, 3))
        blue = x[y == 0].float().mean(dim=(0, 2, 3))
        assert red[0] > 240 and red[2] < 15 and blue[2] > 240 and blue[0] < 15


def test_imagefolder_without_test_folder_holds_out_a_fixed_test_set(tmp_path):
    _write_images(tmp_path / "train", {"a": (10, 10, 10), "b": (200, 200, 200)}, 20)
    one = load_dataset("imagefolder", root=str(tmp_path), image_size=8, seed=0)
    two = load_dataset("imagefolder", root=str(tmp_path), image_size=8, seed=1)
    assert len(one.test_y) == 4 and len(one.train_y) + len(one.val_y) == 36
    assert torch.equal(one.test_x, two.test_x)


@needs_shared
def test_fashion_mnist_subsets():
    d = load_dataset("fashion_mnist", image_size=16, train_size=300, val_size=100, test_size=100)
    assert d.train_x.shape == (300, 1, 16, 16) and d.in_channels == 1 and d.num_classes == 10
    assert (len(d.val_y), len(d.test_y)) == (100, 100)
    assert torch.bincount(d.train_y, minlength=10).tolist() == [30] * 10


@needs_shared
def test_cifar10_from_jpeg_folder():
    d = load_dataset("cifar10", train_size=200, val_size=100, test_size=100)
    assert d.train_x.shape == (200, 3, 32, 32) and d.in_channels == 3 and d.num_classes == 10
    # README: the train mean is about 125 / 123 / 114 of 255; a 200-image subset is close.
    assert [m * 255 for m in d.mean] == pytest.approx([125.3, 122.9, 113.9], abs=12)
