"""Class metadata: names, colours, ignore index and named groups, saved with every artefact."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..errors import DataError, UnknownClassError


@dataclass(frozen=True)
class ClassInfo:
    """What the class ids of a dataset mean.

    Parameters
    ----------
    names : sequence of str
        Class names; class id ``i`` is ``names[i]``.
    colours : sequence of (r, g, b)
        One RGB colour per class, used for rendering and for colour-coded label exports.
    ignore_index : int or None
        Label value that marks pixels to ignore (void / unlabelled); never a class id.
    groups : mapping of str to sequence of int
        Named class groups, e.g. the paper's ``{"lanes": [1, 2, 3]}``.
    """

    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    ignore_index: int | None = 255
    groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "colours", tuple(tuple(int(v) for v in c) for c in self.colours))
        object.__setattr__(
            self, "groups", {str(k): tuple(int(i) for i in v) for k, v in dict(self.groups).items()}
        )
        if len(self.colours) != len(self.names):
            raise DataError(
                f"Expected one colour per class ({len(self.names)}), but got {len(self.colours)}."
            )
        for group, ids in self.groups.items():
            bad = [i for i in ids if not 0 <= i < len(self.names)]
            if bad:
                raise UnknownClassError(
                    f"Class group {group!r} names class ids {bad}, but the classes are 0..{len(self.names) - 1}."
                )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def name(self, class_id: int) -> str:
        if not 0 <= class_id < self.num_classes:
            raise UnknownClassError(
                f"Expected a class id in 0..{self.num_classes - 1}, but got {class_id}."
            )
        return self.names[class_id]

    def id(self, name_or_id: str | int) -> int:
        """Class id from a name (case-insensitive) or an id given as int or digit string."""
        if isinstance(name_or_id, (int, np.integer)) or str(name_or_id).isdigit():
            cid = int(name_or_id)
            self.name(cid)
            return cid
        lowered = [n.lower() for n in self.names]
        if str(name_or_id).lower() not in lowered:
            raise UnknownClassError(
                f"Expected a class name in {list(self.names)}, but got {name_or_id!r}."
            )
        return lowered.index(str(name_or_id).lower())

    def palette(self) -> np.ndarray:
        """(num_classes + 1, 3) uint8 colours; the last row (black) is for ignored pixels."""
        return np.array(list(self.colours) + [(0, 0, 0)], dtype=np.uint8)

    def colourise(self, mask: np.ndarray) -> np.ndarray:
        """Render an (H, W) class-id mask as an (H, W, 3) uint8 RGB image."""
        mask = np.asarray(mask)
        idx = np.where((mask >= 0) & (mask < self.num_classes), mask, self.num_classes)
        return self.palette()[idx]

    def validate_mask(self, mask: np.ndarray, where: str = "label") -> None:
        """Raise if the mask holds values that are neither class ids nor the ignore index."""
        values = np.unique(mask)
        ok = (values >= 0) & (values < self.num_classes)
        if self.ignore_index is not None:
            ok |= values == self.ignore_index
        if not ok.all():
            raise UnknownClassError(
                f"{where}: expected class ids 0..{self.num_classes - 1}"
                + (f" or ignore index {self.ignore_index}" if self.ignore_index is not None else "")
                + f", but got {values[~ok].tolist()}."
            )

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "colours": [list(c) for c in self.colours],
            "ignore_index": self.ignore_index,
            "groups": {k: list(v) for k, v in self.groups.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "ClassInfo":
        """`to_dict`'s inverse; a DataError (one line) for metadata of another shape, as a
        tampered ``classes.json`` may be."""
        if not isinstance(d, Mapping):
            raise DataError(f"Expected class metadata as a JSON object, but got {type(d).__name__}.")
        try:
            return cls(
                names=d["names"],
                colours=d.get("colours") or default_colours(len(d["names"])),
                ignore_index=d.get("ignore_index", 255),
                groups=d.get("groups", {}),
            )
        except KeyError as exc:
            raise DataError(f"Class metadata is missing the field {exc}.") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"Class metadata is malformed ({type(exc).__name__}: {exc}).") from None


def default_colours(n: int) -> list[tuple[int, int, int]]:
    """Distinct, deterministic colours for datasets that declare none."""
    return [
        tuple(int(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.9))
        for i in range(n)
    ]


CAMVID = ClassInfo(
    names=(
        "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
        "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
    ),
    colours=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
        (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ),
    ignore_index=11,
    groups={"road_surface": (3, 4), "vehicles_people": (8, 9, 10)},
)


def from_names(names: Sequence[str], ignore_index: int | None = 255, groups=None) -> ClassInfo:
    return ClassInfo(names=tuple(names), colours=tuple(default_colours(len(names))),
                     ignore_index=ignore_index, groups=groups or {})
