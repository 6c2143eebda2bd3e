"""Datasets made of other datasets: subsets, concatenations and resized copies.

The retraining experiment (`saseg.experiment`) builds its base, pool and test sets from
these, described by a SET entry (`open_set`)::

    SET := "SPEC" | {"spec": "SPEC", "subset": {"fraction": 0.5, "seed": 0, "part": 0}}
           | [SET, ...]                           # concatenated

A subset takes a seeded permutation of the dataset's frame positions
(``numpy.random.default_rng(seed).permutation(n)``): part 0 is its first
``round(fraction * n)`` positions (in dataset order), part 1 the rest, so part 0 and part 1
split one set in two disjoint halves. Parts of a concatenation whose frame ids collide get
``p<k>/`` prefixes.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from ..errors import DataError
from .base import Dataset, Frame
from .specs import open_dataset

log = logging.getLogger(__name__)

__all__ = ["SubsetDataset", "ConcatDataset", "ResizedDataset", "open_set"]


class SubsetDataset(Dataset):
    """Frames ``indices`` of `dataset`, in that order (frame ids and labels unchanged)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        super().__init__(classes=dataset.classes, spec=f"subset({dataset.spec}, n={len(indices)})")
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < len(dataset)]
        if bad:
            raise DataError(f"SubsetDataset: expected indices in 0..{len(dataset) - 1}, but got {bad[:5]}.")

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, i: int) -> Frame:
        return self.dataset[self.indices[i]]

    def frame_id(self, i: int) -> str:
        return self.dataset.frame_id(self.indices[i])

    @property
    def has_labels(self) -> bool:
        return self.dataset.has_labels


class ConcatDataset(Dataset):
    """Parts one after another; ``Frame.index`` is the position here. Colliding ids get ``p<k>/``."""

    def __init__(self, parts: list[Dataset]):
        names = {p.classes.names for p in parts}
        if len(names) != 1:
            raise DataError(f"ConcatDataset: expected the same classes in every part, but got {sorted(names)}.")
        super().__init__(classes=parts[0].classes, spec=" + ".join(p.spec for p in parts))
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        ids = [p.frame_id(i) for p in parts for i in range(len(p))]
        self.prefix = len(set(ids)) < len(ids)
        if self.prefix:
            log.info("ConcatDataset: frame ids collide between parts; prefixing them with p<k>/.")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return k, i - int(self.offsets[k])

    def _load(self, i: int) -> Frame:
        k, j = self._locate(i)
        frame = self.parts[k][j]
        return dataclasses.replace(frame, frame_id=self.frame_id(i), index=i)

    def frame_id(self, i: int) -> str:
        k, j = self._locate(i)
        fid = self.parts[k].frame_id(j)
        return f"p{k}/{fid}" if self.prefix else fid

    @property
    def has_labels(self) -> bool:
        return all(p.has_labels for p in self.parts)


class ResizedDataset(Dataset):
    """Frames resized to `size` (H, W): images bilinear (antialiased), labels nearest.

    A label pixel (r, c) takes the source pixel under its centre,
    ``label[int((r + 0.5) * H0 / H), int((c + 0.5) * W0 / W)]``; frames already of that
    size pass through unchanged.
    """

    def __init__(self, dataset: Dataset, size: Sequence[int]):
        super().__init__(classes=dataset.classes, spec=f"{dataset.spec}@{size[0]}x{size[1]}")
        self.dataset, self.size = dataset, (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, i: int) -> Frame:
        from PIL import Image

        frame = self.dataset[i]
        h, w = self.size
        if frame.image.shape[:2] == (h, w):
            return frame
        image = np.asarray(Image.fromarray(frame.image).resize((w, h), Image.BILINEAR))
        label = None
        if frame.label is not None:
            rows = (np.arange(h) + 0.5) * frame.label.shape[0] / h
            cols = (np.arange(w) + 0.5) * frame.label.shape[1] / w
            label = frame.label[rows.astype(int)[:, None], cols.astype(int)[None, :]]
        return dataclasses.replace(frame, image=image, label=label)

    def frame_id(self, i: int) -> str:
        return self.dataset.frame_id(i)

    @property
    def has_labels(self) -> bool:
        return self.dataset.has_labels


def open_set(entry, image_size: Sequence[int] | None = None) -> Dataset:
    """The dataset a SET entry (module doc) describes, resized to `image_size` (H, W) if given.

    Raises
    ------
    DataError
        If `entry` is not a spec string, a ``{"spec", "subset"}`` dict or a non-empty list
        of them, or its subset is not ``{fraction in (0, 1), seed, part 0|1}``.
    """
    if isinstance(entry, list):
        if not entry:
            raise DataError("open_set: expected at least one dataset in the list, but got none.")
        return ConcatDataset([open_set(e, image_size) for e in entry])
    if isinstance(entry, str):
        entry = {"spec": entry}
    if not isinstance(entry, dict) or "spec" not in entry or set(entry) - {"spec", "subset"}:
        raise DataError(f"open_set: expected a spec string or {{'spec': ..., 'subset': ...}}, but got {entry!r}.")
    data = open_dataset(entry["spec"])
    if "subset" in entry:
        sub = entry["subset"]
        fraction, part = float(sub.get("fraction", 0.5)), sub.get("part", 0)
        if not 0 < fraction < 1 or part not in (0, 1) or set(sub) - {"fraction", "seed", "part"}:
            raise DataError(f"open_set: expected subset {{fraction in (0, 1), seed, part 0|1}}, but got {sub!r}.")
        order = np.random.default_rng(int(sub.get("seed", 0))).permutation(len(data))
        cut = int(round(fraction * len(data)))
        data = SubsetDataset(data, np.sort(order[:cut] if part == 0 else order[cut:]))
    return ResizedDataset(data, image_size) if image_size else data
