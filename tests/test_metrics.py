import numpy as np
import pandas as pd
import pytest
import torch

from saseg.data.classes import from_names
from saseg.errors import DataError, UnknownClassError
from saseg.metrics import confusion_matrix, frame_iou, iou_from_confusion


def _brute_cm(pred, label, c, ignore):
    cm = np.zeros((c, c), dtype=np.int64)
    for p, l in zip(np.ravel(pred), np.ravel(label)):
        if ignore is not None and l == ignore:
            continue
        cm[l, p] += 1
    return cm


def test_confusion_matrix_matches_loop_and_ignores():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, size=(13, 17))
    label[rng.random(label.shape) < 0.2] = 255
    pred = rng.integers(0, 4, size=label.shape)
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), 4 + 1, ignore_index=255)
    assert cm.dtype == torch.int64 and cm.shape == (5, 5)
    np.testing.assert_array_equal(cm.numpy(), _brute_cm(pred, label, 5, 255))


def test_iou_from_confusion_nan_where_union_empty():
    cm = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    iou = iou_from_confusion(cm)
    assert iou.dtype == torch.float64
    np.testing.assert_allclose(iou[:2].numpy(), [3 / 6, 4 / 7])
    assert torch.isnan(iou[2])


def test_confusion_matrix_bad_inputs():
    with pytest.raises(UnknownClassError, match="label"):
        confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 7), 3, ignore_index=255)
    with pytest.raises(UnknownClassError, match="prediction"):
        confusion_matrix(np.full((2, 2), 3), np.zeros((2, 2), int), 3)
    with pytest.raises(UnknownClassError):
        confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), -1), 3)
    with pytest.raises(DataError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)


def _brute_iou(pred, label, ids, ignore):
    inter = union = n_l = n_p = 0
    for p, l in zip(np.ravel(pred), np.ravel(label)):
        if l == ignore:
            continue
        a, b = l in ids, p in ids
        inter += a and b
        union += a or b
        n_l += a
        n_p += b
    return inter / union, n_l, n_p


def test_frame_iou_against_pixel_loop():
    classes = from_names(["a", "b", "c", "d", "e"], ignore_index=255,
                         groups={"ab": [0, 1], "de": [3, 4]})
    rng = np.random.default_rng(1)
    label = rng.integers(0, 3, size=(11, 9))  # d, e never labelled
    label[0, :4] = 255
    pred = rng.integers(0, 4, size=label.shape)  # d predicted, e never
    df = frame_iou(pred, label, classes)
    assert list(df.columns) == ["target", "kind", "class_id", "iou", "n_label", "n_pred"]
    cls = df[df.kind == "class"].set_index("class_id")
    assert sorted(cls.index) == sorted(set(np.unique(label[label != 255])) | set(np.unique(pred[label != 255])))
    for c, row in cls.iterrows():
        iou, n_l, n_p = _brute_iou(pred, label, {c}, 255)
        assert row.iou == pytest.approx(iou)
        assert (row.n_label, row.n_pred) == (n_l, n_p)
        assert row.target == classes.names[c]
    grp = df[df.kind == "group"].set_index("target")
    assert set(grp["class_id"]) == {-1}
    for g, ids in classes.groups.items():
        iou, n_l, n_p = _brute_iou(pred, label, set(ids), 255)
        assert grp.loc[g, "iou"] == pytest.approx(iou)
        assert (grp.loc[g, "n_label"], grp.loc[g, "n_pred"]) == (n_l, n_p)


def test_frame_iou_absent_group_has_no_row():
    classes = from_names(["a", "b", "c"], ignore_index=None, groups={"bc": [1, 2]})
    df = frame_iou(np.zeros((2, 2), int), np.zeros((2, 2), int), classes)
    assert list(df.target) == ["a"]
    assert df.iou.iloc[0] == 1.0
