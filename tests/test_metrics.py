import numpy as np
import pandas as pd
import pytest
import torch

from saseg.data.classes import from_names
from saseg.errors import DataError, UnknownClassError
from saseg.metrics import ConfusionMatrix, confusion_matrix, frame_iou, iou_from_confusion


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


def _brute_dataset_iou(preds, labels, c, ignore):
    """Per-class IoU over all pixels of all frames, counted pixel by pixel (NaN: union 0)."""
    inter, union = np.zeros(c), np.zeros(c)
    for pred, label in zip(preds, labels):
        for p, l in zip(np.ravel(pred), np.ravel(label)):
            if ignore is not None and l == ignore:
                continue
            for k in range(c):
                inter[k] += (p == k) and (l == k)
                union[k] += (p == k) or (l == k)
    return np.array([i / u if u else np.nan for i, u in zip(inter, union)])


def test_confusion_matrix_class_streams_to_the_dataset_iou():
    rng = np.random.default_rng(2)
    c, ignore = 6, 255  # class 4 never labelled nor predicted, class 5 only predicted
    labels = [rng.choice([0, 1, 2, 3, 255], size=(2, 7, 5)) for _ in range(3)]
    preds = [rng.choice([0, 1, 2, 3, 5], size=(2, 7, 5), p=[0.3, 0.3, 0.2, 0.15, 0.05]) for _ in range(3)]
    metric = ConfusionMatrix(c, ignore_index=ignore)
    for pred, label in zip(preds, labels):
        assert metric.update(torch.from_numpy(pred), label) is metric  # tensors and arrays both work
    expected = _brute_dataset_iou(preds, labels, c, ignore)
    iou = metric.compute()
    assert iou.dtype == torch.float64 and iou.shape == (c,)
    np.testing.assert_allclose(iou.numpy(), expected)  # NaN where expected is NaN
    assert np.isnan(expected[4]) and expected[5] == 0
    assert metric.miou() == pytest.approx(np.nanmean(expected))
    np.testing.assert_array_equal(metric.matrix.numpy(),
                                  sum(_brute_cm(p, l, c, ignore) for p, l in zip(preds, labels)))
    assert metric.matrix.dtype == torch.int64


def test_confusion_matrix_class_empty_reset_and_no_ignore():
    metric = ConfusionMatrix(3)
    assert torch.equal(metric.matrix, torch.zeros(3, 3, dtype=torch.int64))
    assert torch.isnan(metric.compute()).all() and np.isnan(metric.miou())
    metric.update(np.array([0, 1, 1]), np.array([0, 1, 2]))
    np.testing.assert_allclose(metric.compute().numpy(), [1.0, 0.5, 0.0])
    metric.reset()
    assert int(metric.matrix.sum()) == 0
    metric.update(np.array([2]), np.array([2]))
    np.testing.assert_allclose(metric.compute().numpy(), [np.nan, np.nan, 1.0])
    assert metric.miou() == 1.0


def test_confusion_matrix_class_bad_inputs():
    for bad in (0, -2, 2.5, "3", True):
        with pytest.raises(DataError, match="num_classes"):
            ConfusionMatrix(bad)
    metric = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(UnknownClassError, match="prediction"):
        metric.update(np.full((2, 2), 3), np.zeros((2, 2), int))
    with pytest.raises(DataError, match="same shape"):
        metric.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    assert int(metric.matrix.sum()) == 0  # a refused batch adds nothing


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
