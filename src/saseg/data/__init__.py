"""Dataset readers behind one spec string (see `open_dataset`)."""

from .base import Dataset, Frame, InMemoryDataset
from .classes import CAMVID, ClassInfo

__all__ = ["CAMVID", "ClassInfo", "Dataset", "Frame", "InMemoryDataset", "open_dataset"]


def open_dataset(spec: str, **options) -> Dataset:
    """Open a dataset from a spec string such as ``camvid:PATH:test`` or ``synthetic:n=50``."""
    from .specs import open_dataset as _open

    return _open(spec, **options)
