"""Datasets as in-memory tensors, with deterministic train / validation / test splits.

Every dataset is decoded once into a :class:`DatasetSplits` of uint8 image tensors
``(N, C, H, W)`` at the requested ``image_size``; normalisation (``mean``/``std``, measured on
the training subset) and augmentation happen later, on batches, in :mod:`mnas.training`.

Datasets (``name``):

``digits``
    scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, 1 channel), shipped with
    scikit-learn, so it needs no files and no network. It has no official test set: a fixed,
    class-stratified 20% (359 images) is held out as the test set, independent of ``seed``.
``fashion_mnist``
    Fashion-MNIST (60,000 train / 10,000 test, 28x28, 1 channel) in torchvision's layout
    ``root/FashionMNIST/raw``.
``cifar10``
    CIFAR-10 (50,000 / 10,000, 32x32 RGB), either torchvision's python batches
    ``root/cifar-10-batches-py`` or an ImageFolder of JPEGs
    ``root/cifar10-jpeg/{train,test}/<class>/``.
``imagefolder``
    Your own images: ``root/train/<class>/*`` and optionally ``root/test/<class>/*`` (without a
    ``test`` folder, a fixed stratified 10% of ``train`` becomes the test set). Images are decoded
    as RGB, resized so the shorter side is ``image_size`` and centre-cropped to a square.

Splits: the validation set is held out from the official training set and the training subset
is drawn from the rest, both from one class-stratified permutation seeded by ``seed``; the
validation set does not depend on ``train_size``. The test subset (first ``test_size`` of a
stratified permutation with a fixed seed) does not depend on ``seed``, so that models trained
with different seeds are compared on the same images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnas.data.images import decode_files, resize

logger = logging.getLogger(__name__)

DATASETS = ("digits", "fashion_mnist", "cifar10", "imagefolder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DATA_ENV = "MNAS_DATA"
# Fixed seed of the held-out test subsets: test images never depend on the run's seed.
_TEST_SEED = 20190711
_DIGITS_TEST_FRACTION = 0.2
_IMAGEFOLDER_TEST_FRACTION = 0.1
_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset decoded into memory: train / validation / test tensors and their statistics.

    Attributes:
        name: dataset name (one of :data:`DATASETS`).
        train_x: training images, ``(N, C, H, W)`` uint8 (0-255), already at ``image_size``.
        train_y: training labels, int64.
        val_x: validation images held out from the official training set.
        val_y: validation labels.
        test_x: images of the official test set (a subset if ``test_size`` was given); only for
            retraining and final evaluation, never for search.
        test_y: test labels.
        num_classes: number of classes.
        in_channels: image channels (1 for digits and Fashion-MNIST).
        image_size: height and width of every image.
        mean: per-channel mean of ``train_x`` in 0-1 units.
        std: per-channel standard deviation of ``train_x`` in 0-1 units.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``name`` (``train``, ``val`` or ``test``)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split {name!r} is not one of 'train', 'val', 'test'")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


def load_dataset(
    name: str,
    root: str | None = None,
    image_size: int = 32,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> DatasetSplits:
    """Load a dataset into memory with deterministic splits.

    Default sizes: ``val_size`` is 20% of the training pool for ``digits`` (287 of 1,437),
    5,000 for ``fashion_mnist`` and ``cifar10``, and 10% for ``imagefolder``; ``train_size``
    is the rest of the training pool; ``test_size`` is the whole test set.

    Args:
        name: one of ``digits``, ``fashion_mnist``, ``cifar10``, ``imagefolder``.
        root: data folder; defaults to the ``MNAS_DATA`` environment variable (not needed
            for ``digits``). For ``imagefolder`` it is the folder holding ``train/``.
        image_size: height and width of the returned images (resized with antialiasing).
        train_size: number of training images (class-stratified subset).
        val_size: number of validation images held out from the training set (0 allowed).
        test_size: number of test images (class-stratified subset).
        seed: seed of the train/validation split.
        download: let torchvision download Fashion-MNIST or CIFAR-10 into ``root``.

    Returns:
        The splits as uint8 tensors with labels, class count, channels and statistics.

    Raises:
        ValueError: unknown ``name`` or sizes that are not positive or do not fit.
        FileNotFoundError: the files are not where they are expected (the message says where
            and how to get them).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be a positive integer")
    for arg, value, minimum in (
        ("train_size", train_size, 1),
        ("val_size", val_size, 0),
        ("test_size", test_size, 0),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < minimum
        ):
            raise ValueError(f"{arg}={value!r} must be None or an integer >= {minimum}")

    if name == "digits":
        pool_x, pool_y, test_x, test_y = _load_digits()
        num_classes = 10
        default_val = round(_DIGITS_TEST_FRACTION * len(pool_y))
    else:
        base = _resolve_root(root, name)
        if name == "fashion_mnist":
            pool_x, pool_y, test_x, test_y = _load_fashion_mnist(base, download)
            num_classes, default_val = 10, 5000
        elif name == "cifar10":
            pool_x, pool_y, test_x, test_y, num_classes = _load_cifar10(base, download, image_size)
            default_val = 5000
        else:
            pool_x, pool_y, test_x, test_y, num_classes = _load_imagefolder(base, image_size)
            default_val = round(0.1 * len(pool_y))

    val_size = default_val if val_size is None else val_size
    if val_size >= len(pool_y):
        raise ValueError(
            f"val_size={val_size} leaves no training images: the {name} training pool has "
            f"{len(pool_y)} images"
        )
    room = len(pool_y) - val_size
    train_size = room if train_size is None else train_size
    if train_size > room:
        raise ValueError(
            f"train_size={train_size} is too large: {name} has {len(pool_y)} training images, "
            f"{val_size} held out for validation, so at most {room}"
        )
    test_size = len(test_y) if test_size is None else test_size
    if test_size > len(test_y):
        raise ValueError(
            f"test_size={test_size} is too large: {name} has {len(test_y)} test images"
        )

    order = stratified_permutation(pool_y, seed)
    val_idx, train_idx = order[:val_size], order[val_size : val_size + train_size]
    test_idx = stratified_permutation(test_y, _TEST_SEED)[:test_size]

    # Decode lazily-held sources (JPEG paths) only for the images we keep.
    train_x, val_x = _take(pool_x, train_idx, image_size), _take(pool_x, val_idx, image_size)
    test_x = _take(test_x, test_idx, image_size)
    train_x = resize(train_x, image_size)
    val_x = resize(val_x, image_size)
    test_x = resize(test_x, image_size)
    mean, std = channel_stats(train_x)
    splits = DatasetSplits(
        name=name,
        train_x=train_x,
        train_y=pool_y[train_idx].clone(),
        val_x=val_x,
        val_y=pool_y[val_idx].clone(),
        test_x=test_x,
        test_y=test_y[test_idx].clone(),
        num_classes=num_classes,
        in_channels=train_x.shape[1],
        image_size=image_size,
        mean=mean,
        std=std,
    )
    logger.info(
        "%s: %d train / %d val / %d test images, %dx%dx%d, %d classes",
        name,
        len(splits.train_y),
        len(splits.val_y),
        len(splits.test_y),
        splits.in_channels,
        image_size,
        image_size,
        num_classes,
    )
    return splits


def stratified_permutation(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(len(labels))`` whose every prefix is class-balanced.

    Each class is shuffled on its own; an item's key is its rank inside its class divided by
    the class size, so the first ``k`` items hold about ``k * share`` of every class.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    shuffled = torch.randperm(n, generator=gen)
    lab = labels[shuffled]
    rank = torch.empty(n, dtype=torch.float64)
    for c in torch.unique(lab):
        members = (lab == c).nonzero().flatten()
        rank[members] = (torch.arange(len(members), dtype=torch.float64) + 0.5) / len(members)
    return shuffled[torch.sort(rank, stable=True).indices]


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, H, W)`` in 0-1 units."""
    if len(x) == 0:
        raise ValueError("cannot compute channel statistics of an empty image tensor")
    # Exact, and much faster than float sums: one 256-bin histogram per channel.
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        m = (counts * values).sum() / counts.sum()
        var = (counts * (values - m) ** 2).sum() / counts.sum()
        mean.append(m.item())
        std.append(max(var.item(), 1e-12) ** 0.5)
    return tuple(mean), tuple(std)


def _resolve_root(root: str | None, name: str) -> Path:
    if root is None:
        root = os.environ.get(DATA_ENV)
    if not root:
        raise ValueError(
            f"dataset {name!r} needs a data folder: pass root=... or set the {DATA_ENV} "
            "environment variable"
        )
    return Path(root).expanduser()


def _load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0-16; scale to the 0-255 range of every other dataset.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = stratified_permutation(y, _TEST_SEED)
    n_test = round(_DIGITS_TEST_FRACTION * len(y))
    test_idx, pool_idx = order[:n_test], order[n_test:]
    return x[pool_idx], y[pool_idx], x[test_idx], y[test_idx]


def _load_fashion_mnist(
    base: Path, download: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from torchvision.datasets import FashionMNIST

    raw = base / "FashionMNIST" / "raw"
    try:
        train = FashionMNIST(str(base), train=True, download=download)
        test = FashionMNIST(str(base), train=False, download=download)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: expected the IDX files train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
            f"(optionally .gz) in {raw}. Pass download=True to let torchvision fetch them "
            f"from {_FASHION_URL}, or copy them there. ({err})"
        ) from err
    return (
        train.data.unsqueeze(1).contiguous(),
        train.targets.to(torch.int64),
        test.data.unsqueeze(1).contiguous(),
        test.targets.to(torch.int64),
    )


def _load_cifar10(
    base: Path, download: bool, image_size: int
) -> tuple[torch.Tensor | list[str], torch.Tensor, torch.Tensor | list[str], torch.Tensor, int]:
    binary = base / "cifar-10-batches-py"
    jpeg = base / "cifar10-jpeg"
    if not binary.is_dir() and (jpeg / "train").is_dir():
        train_files, train_y, classes = _list_images(jpeg / "train")
        test_files, test_y, _ = _list_images(jpeg / "test", classes)
        return train_files, train_y, test_files, test_y, len(classes)
    if not binary.is_dir() and not download:
        raise FileNotFoundError(
            f"CIFAR-10 not found under {base}: expected torchvision's python batches in "
            f"{binary} or an ImageFolder of images in {jpeg}/train/<class>/ and "
            f"{jpeg}/test/<class>/. Pass download=True to let torchvision fetch {_CIFAR10_URL} "
            f"into {base}."
        )
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(base), train=True, download=download)
        test = CIFAR10(str(base), train=False, download=download)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"CIFAR-10 batches in {binary} are incomplete or corrupt; delete the folder and "
            f"pass download=True to fetch {_CIFAR10_URL}. ({err})"
        ) from err

    def to_tensor(data: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()

    return (
        to_tensor(train.data),
        torch.tensor(train.targets, dtype=torch.int64),
        to_tensor(test.data),
        torch.tensor(test.targets, dtype=torch.int64),
        len(train.classes),
    )


def _load_imagefolder(
    base: Path, image_size: int
) -> tuple[list[str], torch.Tensor, list[str], torch.Tensor, int]:
    train_dir, test_dir = base / "train", base / "test"
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"imagefolder dataset not found: expected {train_dir}/<class>/<image files> "
            f"(and optionally {test_dir}/<class>/...)"
        )
    files, labels, classes = _list_images(train_dir)
    if test_dir.is_dir():
        test_files, test_y, _ = _list_images(test_dir, classes)
        return files, labels, test_files, test_y, len(classes)
    logger.warning(
        "%s has no test/ folder: holding out a fixed %d%% of train/ as the test set",
        base,
        round(100 * _IMAGEFOLDER_TEST_FRACTION),
    )
    order = stratified_permutation(labels, _TEST_SEED)
    n_test = max(1, round(_IMAGEFOLDER_TEST_FRACTION * len(labels)))
    test_idx, pool_idx = order[:n_test].tolist(), order[n_test:].tolist()
    return (
        [files[i] for i in pool_idx],
        labels[pool_idx],
        [files[i] for i in test_idx],
        labels[test_idx],
        len(classes),
    )


def _list_images(
    folder: Path, classes: Sequence[str] | None = None
) -> tuple[list[str], torch.Tensor, list[str]]:
    """Image files of an ImageFolder (``folder/<class>/<file>``), classes sorted by name."""
    found = sorted(d.name for d in os.scandir(folder) if d.is_dir())
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ValueError(
                f"{folder} has classes {extra} that are not in the training folder {classes}"
            )
    files: list[str] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        class_dir = os.path.join(folder, cls)
        if not os.path.isdir(class_dir):
            continue
        # Plain strings: pathlib costs more than decoding for 60k tiny files.
        names = sorted(
            e.name
            for e in os.scandir(class_dir)
            if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()
        )
        files.extend(os.path.join(class_dir, n) for n in names)
        labels.extend([index] * len(names))
    if not files:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}/<class>/"
        )
    return files, torch.tensor(labels, dtype=torch.int64), list(classes)


def _take(source: torch.Tensor | list[str], idx: torch.Tensor, image_size: int) -> torch.Tensor:
    if isinstance(source, torch.Tensor):
        return source[idx]
    return decode_files([source[i] for i in idx.tolist()], image_size)


def default_hflip(name: str) -> bool:
    """Whether horizontal flips are a sensible augmentation for dataset ``name``
    (not for digits, whose mirror images are other symbols)."""
    return name != "digits"
