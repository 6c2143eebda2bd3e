"""Agreement of a prediction with another prediction of the same scene, per class.

Two label-free views of stability:

- **flip test-time augmentation** (EquAL, Golestaneh and Kitani, 2020): the network is run on
  the horizontally mirrored frame and its prediction mirrored back; ``flip_iou`` of class c
  is the IoU of ``pred == c`` with ``flip(pred(flip(x))) == c``. A flip-equivariant network
  on a mirror-symmetric frame gets 1.0. Costs a second forward pass per frame.
- **temporal agreement** (time-dynamic MetaSeg, Maag, Rottmann, Gottschalk, 2020):
  ``temporal_iou`` of class c is the IoU of this frame's ``pred == c`` with the previous
  frame's, the previous frame being the scored frame of the same sequence with the next
  lower ``frame_index``. NaN at a sequence start, for frames in no sequence and for frames
  whose previous prediction has another size (no warping or tracking is done).

Both are ``tp / (tp + fp + fn)`` of `saseg.metrics.confusion_matrix` between the two
predictions, NaN where neither predicts the class.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..data import Frame
from ..metrics import confusion_matrix, iou_from_confusion

__all__ = ["FLIP_COLUMN", "TEMPORAL_COLUMN", "class_agreement", "mirror_frames", "previous_frames",
           "temporal_agreement"]

FLIP_COLUMN = "flip_iou"
TEMPORAL_COLUMN = "temporal_iou"


def class_agreement(pred: torch.Tensor, other: torch.Tensor, num_classes: int) -> torch.Tensor:
    """IoU per class between two predictions of shape (H, W): (num_classes,) float64.

    ``|{pred = c} ∩ {other = c}| / |{pred = c} ∪ {other = c}|``, NaN where the union is
    empty; on the inputs' device.
    """
    return iou_from_confusion(confusion_matrix(other, pred, num_classes))


def mirror_frames(frames: Iterable[Frame]) -> list[Frame]:
    """Copies of `frames` with images (and labels) mirrored left-right, ids unchanged."""
    out = []
    for f in frames:
        label = None if f.label is None else np.ascontiguousarray(f.label[:, ::-1])
        out.append(dataclasses.replace(f, image=np.ascontiguousarray(f.image[:, ::-1]), label=label))
    return out


def previous_frames(frame_ids: Sequence[str], frame_index: Sequence[int],
                    sequences: Sequence[str]) -> dict[str, str | None]:
    """Frame id -> the previous frame id of its sequence by ``frame_index`` (None at a start).

    A frame whose sequence is ``""`` belongs to no sequence and has no previous frame.
    """
    order = sorted(range(len(frame_ids)), key=lambda i: (str(sequences[i]), int(frame_index[i])))
    out: dict[str, str | None] = {}
    last: dict[str, str] = {}
    for i in order:
        seq, fid = str(sequences[i]), str(frame_ids[i])
        out[fid] = last.get(seq) if seq else None
        last[seq] = fid
    return out


def temporal_agreement(frame_ids: Sequence[str], frame_index: Sequence[int], sequences: Sequence[str],
                       read_prediction: Callable[[str], np.ndarray],
                       num_classes: int) -> dict[str, np.ndarray]:
    """Frame id -> (num_classes,) float64 IoU with its previous frame's prediction.

    Predictions are read once each, in sequence order (`read_prediction(frame_id)` returns
    the (H, W) class ids); an all-NaN row where there is no previous frame of the same size.
    The result depends only on the set of frames, not on how they were batched.
    """
    previous = previous_frames(frame_ids, frame_index, sequences)
    order = sorted(range(len(frame_ids)), key=lambda i: (str(sequences[i]), int(frame_index[i])))
    out: dict[str, np.ndarray] = {}
    held: tuple[str, torch.Tensor] | None = None
    for i in order:
        fid = str(frame_ids[i])
        pred = torch.as_tensor(read_prediction(fid), dtype=torch.int64)
        prev = previous[fid]
        if prev is not None and held is not None and held[0] == prev and held[1].shape == pred.shape:
            out[fid] = class_agreement(pred, held[1], num_classes).numpy()
        else:
            out[fid] = np.full(num_classes, np.nan)
        held = (fid, pred)
    return out
