"""Dataset readers behind one spec string (see `open_dataset`)."""

from __future__ import annotations

from .base import Dataset, Frame, InMemoryDataset, iter_batches, prefetched
from .classes import CAMVID, ClassInfo
from .specs import has_splits, open_dataset

__all__ = ["CAMVID", "ClassInfo", "Dataset", "Frame", "InMemoryDataset", "as_dataset",
           "has_splits", "iter_batches", "open_dataset", "prefetched"]


def as_dataset(data: Dataset | str, split: str | None = None, **options) -> Dataset:
    """`data` itself, or the dataset its spec names.

    `split` is a command's default (``fit`` reads "train", ``score`` "test"), so it applies
    only to layouts that have splits; ``options`` go to `open_dataset`.
    """
    if not isinstance(data, str):
        return data
    return open_dataset(data, split=split if has_splits(data) else None, **options)
