"""Intersection over union: a confusion matrix over pixels, per-frame class and group IoU.

`ConfusionMatrix` is the one definition of dataset-level IoU (one matrix summed over every
frame, then ``tp / (tp + fp + fn)`` per class): it streams `confusion_matrix` over batches
and reduces with `iou_from_confusion`, its functional twins.

The paper (Kim et al. 2020, section 4.3) measures a frame's quality per class as the IoU of
all the class's pixels in that frame taken together, and per class group as the IoU of the
union of the group's classes treated as one segment. Pixels labelled with the ignore index
count for neither the label nor the prediction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .data.classes import ClassInfo
from .errors import DataError, UnknownClassError

__all__ = ["ConfusionMatrix", "confusion_matrix", "iou_from_confusion", "frame_iou", "IOU_COLUMNS", "spearman"]

IOU_COLUMNS = ["target", "kind", "class_id", "iou", "n_label", "n_pred"]


def confusion_matrix(pred, label, num_classes: int, ignore_index: int | None = None) -> torch.Tensor:
    """Count pixels per (label, prediction) pair.

    Parameters
    ----------
    pred : tensor or ndarray of shape (...), integer
        Predicted class ids in ``0..num_classes-1``.
    label : tensor or ndarray of the same shape, integer
        True class ids; pixels equal to ``ignore_index`` are left out.
    num_classes : int
    ignore_index : int or None

    Returns
    -------
    cm : int64 tensor of shape (num_classes, num_classes), on the inputs' device
        ``cm[i, j]`` = number of pixels labelled ``i`` and predicted ``j`` (rows = label).

    Raises
    ------
    DataError
        If the shapes differ.
    UnknownClassError
        If a label (other than the ignore index) or a prediction is outside ``0..C-1``.
    """
    pred = torch.as_tensor(pred)
    label = torch.as_tensor(label, device=pred.device)
    if pred.shape != label.shape:
        raise DataError(
            f"confusion_matrix: expected prediction and label of the same shape, but got "
            f"{tuple(pred.shape)} and {tuple(label.shape)}."
        )
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long()
    if ignore_index is not None:
        keep = label != ignore_index
        pred, label = pred[keep], label[keep]
    for what, values in (("label", label), ("prediction", pred)):
        bad = (values < 0) | (values >= num_classes)
        if bool(bad.any()):
            raise UnknownClassError(
                f"confusion_matrix: expected {what} class ids in 0..{num_classes - 1}"
                + (f" or ignore index {ignore_index}" if what == "label" and ignore_index is not None else "")
                + f", but got {torch.unique(values[bad]).tolist()[:10]}."
            )
    counts = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_from_confusion(cm) -> torch.Tensor:
    """IoU per class, ``tp / (tp + fp + fn)``, from a (C, C) confusion matrix (rows = label).

    Returns
    -------
    iou : float64 tensor of shape (C,)
        NaN where the class is neither labelled nor predicted (union 0).
    """
    cm = torch.as_tensor(cm).to(torch.float64)
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


class ConfusionMatrix:
    """Pixel confusion matrix accumulated over batches, reduced to per-class IoU.

    ``update(pred, target)`` adds ``confusion_matrix(pred, target, num_classes,
    ignore_index)``; ``compute()`` returns ``iou_from_confusion`` of the sum, so the IoU of
    a dataset is that of all its pixels taken together (not a mean of per-frame IoUs).

    Parameters
    ----------
    num_classes : int
        C, the number of classes; ids are ``0..C-1``.
    ignore_index : int or None
        Label value whose pixels count for neither the label nor the prediction.

    Attributes
    ----------
    matrix : int64 tensor of shape (C, C)
        ``matrix[i, j]`` = pixels labelled ``i`` and predicted ``j`` so far; all zeros (on
        the CPU) before the first update. The state lives on the device of the first
        update's inputs; later updates are moved there.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise DataError(f"ConfusionMatrix: expected `num_classes` to be a positive int, but got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._matrix: torch.Tensor | None = None

    def update(self, pred, target) -> "ConfusionMatrix":
        """Add the pixels of one batch; returns self.

        Parameters
        ----------
        pred : tensor or ndarray of shape (...), integer
            Predicted class ids, e.g. ``logits.argmax(1)`` of shape (B, H, W).
        target : tensor or ndarray of the same shape, integer
            Label class ids; ``ignore_index`` pixels are left out.

        Raises
        ------
        DataError, UnknownClassError
            As `confusion_matrix`.
        """
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self._matrix is None:
            self._matrix = cm
        else:
            self._matrix += cm.to(self._matrix.device)
        return self

    @property
    def matrix(self) -> torch.Tensor:
        if self._matrix is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
        return self._matrix

    def compute(self) -> torch.Tensor:
        """IoU per class, float64 tensor of shape (C,); NaN for classes neither labelled nor predicted."""
        return iou_from_confusion(self.matrix)

    def miou(self) -> float:
        """Mean IoU over the classes present (NaN-mean of `compute`); NaN when none is."""
        iou = self.compute().cpu().numpy()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def reset(self) -> None:
        """Forget every update (the next one allocates the state again)."""
        self._matrix = None

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"pixels={int(self.matrix.sum())})")


def frame_iou(pred, label, classes: ClassInfo) -> pd.DataFrame:
    """Class and group IoU of one frame, in long format.

    Parameters
    ----------
    pred : tensor or ndarray of shape (H, W), integer
    label : tensor or ndarray of shape (H, W), integer; ``classes.ignore_index`` is ignored
    classes : ClassInfo

    Returns
    -------
    DataFrame with columns ``target`` (class or group name), ``kind`` ("class" | "group"),
    ``class_id`` (-1 for groups), ``iou``, ``n_label``, ``n_pred`` (pixel counts, ignore
    pixels excluded). One row per class present in the label or the prediction, then one per
    group with any of its classes present; absent targets have no row (their IoU is undefined).
    """
    cm = confusion_matrix(pred, label, classes.num_classes, classes.ignore_index).cpu().numpy()
    n_label, n_pred, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    rows = []
    for c in np.flatnonzero((n_label + n_pred) > 0):
        rows.append((classes.names[c], "class", int(c), tp[c] / (n_label[c] + n_pred[c] - tp[c]),
                     int(n_label[c]), int(n_pred[c])))
    for group, ids in classes.groups.items():
        ids = list(ids)
        g_tp = int(cm[np.ix_(ids, ids)].sum())  # any group class predicted as any group class
        g_label, g_pred = int(n_label[ids].sum()), int(n_pred[ids].sum())
        if g_label + g_pred > 0:
            rows.append((group, "group", -1, g_tp / (g_label + g_pred - g_tp), g_label, g_pred))
    df = pd.DataFrame(rows, columns=IOU_COLUMNS)
    return df.astype({"class_id": "int64", "iou": "float64", "n_label": "int64", "n_pred": "int64"})


def spearman(x, y) -> tuple[float, float, str]:
    """Spearman rho and two-sided p of two (n,) arrays, or (NaN, NaN, reason) when undefined.

    Undefined means fewer than 3 pairs or a constant input (ranks without spread); checking
    first keeps scipy from warning once per target.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        return float("nan"), float("nan"), f"fewer than 3 frames ({len(x)})"
    for what, v in (("SA", x), ("IoU", y)):
        if np.ptp(v) == 0:
            return float("nan"), float("nan"), f"constant {what}"
    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue), ""
