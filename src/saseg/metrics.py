"""Intersection over union: a confusion matrix over pixels, per-frame class and group IoU.

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

__all__ = ["confusion_matrix", "iou_from_confusion", "frame_iou", "IOU_COLUMNS"]

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
