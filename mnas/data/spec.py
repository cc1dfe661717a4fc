"""A dataset named by a small hashable record, loaded once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from mnas.data.datasets import DatasetSplits, load_dataset


@dataclass(frozen=True)
class DataSpec:
    """How to load a dataset; hashable, so each process loads it once."""

    name: str
    root: str | None = None
    image_size: int = 32
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = 0
    seed: int = 0
    download: bool = False


@lru_cache(maxsize=4)
def get_dataset(spec: DataSpec) -> DatasetSplits:
    """Load (once per process) the dataset a :class:`DataSpec` names."""
    return load_dataset(
        spec.name,
        root=spec.root,
        image_size=spec.image_size,
        train_size=spec.train_size,
        val_size=spec.val_size,
        test_size=spec.test_size,
        seed=spec.seed,
        download=spec.download,
    )
