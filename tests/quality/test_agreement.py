"""Flip and temporal agreement against numpy IoU on generated masks and a tiny network."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from saseg.data import Frame
from saseg.data.classes import ClassInfo
from saseg.models import LoadedModel
from saseg.quality.agreement import class_agreement, mirror_frames, previous_frames, temporal_agreement
from saseg.scoring import FrameScorer


def _iou(a, b, c):
    inter = np.logical_and(a == c, b == c).sum()
    union = np.logical_or(a == c, b == c).sum()
    return inter / union if union else float("nan")


def test_class_agreement_is_the_per_class_iou():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (9, 11)), rng.integers(0, 4, (9, 11))
    b[b == 3] = 0  # class 3 only in a: IoU 0; class 4 in neither: NaN
    got = class_agreement(torch.as_tensor(a), torch.as_tensor(b), 5).numpy()
    want = [_iou(a, b, c) for c in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[3] == 0.0 and math.isnan(got[4])


def test_previous_frames_follow_frame_index_within_a_sequence():
    ids = ["b/2", "a/7", "b/1", "a/3", "solo", "a/5"]
    index = [11, 7, 10, 3, 0, 5]
    seq = ["b", "a", "b", "a", "", "a"]
    assert previous_frames(ids, index, seq) == {"a/3": None, "a/5": "a/3", "a/7": "a/5",
                                                "b/1": None, "b/2": "b/1", "solo": None}


def test_temporal_agreement_is_nan_at_a_sequence_start_and_iou_after():
    rng = np.random.default_rng(1)
    masks = {f: rng.integers(0, 3, (6, 7)) for f in ("s/0", "s/1", "s/2", "t/0")}
    masks["odd"] = rng.integers(0, 3, (5, 5))
    ids = ["s/2", "t/0", "s/0", "s/1", "odd"]
    got = temporal_agreement(ids, [2, 3, 0, 1, 4], ["s", "t", "s", "s", "s"], masks.__getitem__, 3)
    assert np.isnan(got["s/0"]).all() and np.isnan(got["t/0"]).all()
    assert np.isnan(got["odd"]).all()  # its previous frame (s/2) has another size
    for cur, prev in (("s/1", "s/0"), ("s/2", "s/1")):
        np.testing.assert_allclose(got[cur], [_iou(masks[cur], masks[prev], c) for c in range(3)])


class _Net(nn.Module):
    """Two 3x3 convolutions; `symmetric` mirrors the kernels so the net is flip-equivariant."""

    def __init__(self, symmetric: bool, classes: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.features = nn.Conv2d(3, 6, 3, padding=1)
        self.classifier = nn.Conv2d(6, classes, 3, padding=1)
        with torch.no_grad():
            for conv in (self.features, self.classifier):
                w = torch.randn(conv.weight.shape, generator=g)
                conv.weight.copy_((w + w.flip(-1)) / 2 if symmetric else w)

    def forward(self, x):
        return self.classifier(torch.relu(self.features(x)))


def _scorer(symmetric):
    classes = ClassInfo(names=("a", "b", "c"), colours=[(0, 0, 0), (1, 1, 1), (2, 2, 2)])
    model = LoadedModel.from_module(_Net(symmetric), classes, "features")
    return FrameScorer(model, {}, softmax=False, features=False, tta="flip"), model


def _frame(image, i=0):
    return Frame(frame_id=f"d/{i}", index=i, image=image, label=None, source="gen")


def test_flip_agreement_is_one_for_a_symmetric_frame_and_an_equivariant_net():
    rng = np.random.default_rng(2)
    half = rng.integers(0, 256, (24, 16, 3), dtype=np.uint8)
    image = np.concatenate([half, half[:, ::-1]], axis=1)  # mirror-symmetric
    scorer, _ = _scorer(symmetric=True)
    table = scorer.score_batch([_frame(image)]).rows
    assert len(table) >= 2 and (table["flip_iou"] == 1.0).all()


def test_flip_agreement_equals_numpy_iou_for_a_plain_net():
    rng = np.random.default_rng(3)
    frames = [_frame(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8), i) for i in range(3)]
    scorer, model = _scorer(symmetric=False)
    rows = scorer.score_batch(frames).rows
    tables = [rows[rows["frame_index"] == frame.index] for frame in frames]
    seen_below_one = False
    for frame, table in zip(frames, tables):
        logits, _ = model.trace([frame])
        mirrored, _ = model.trace(mirror_frames([frame]))
        a = logits[0].argmax(0).numpy()
        b = mirrored[0].argmax(0).numpy()[:, ::-1]
        for row in table.itertuples():
            assert row.flip_iou == pytest.approx(_iou(a, b, row.class_id), rel=1e-12)
            seen_below_one |= row.flip_iou < 1
    assert seen_below_one and scorer.timing["flip_s"] > 0


def test_an_unknown_tta_is_refused_before_any_work(tmp_path):
    from saseg.errors import DataError
    from saseg.pipeline import score

    with pytest.raises(DataError, match="tta None or one of \\['flip'\\], but got 'mirror'"):
        score("no-model", "no-sa", "synthetic:n=1", tmp_path / "scores.parquet", tta="mirror")
    assert not any(tmp_path.iterdir())
