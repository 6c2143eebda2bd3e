"""Subsets, concatenations and resized copies of datasets, and SET entries."""

import numpy as np
import pytest

from saseg.data import Frame, InMemoryDataset, open_dataset
from saseg.data.classes import from_names
from saseg.data.compose import ConcatDataset, ResizedDataset, SubsetDataset, open_set
from saseg.errors import DataError

SPEC = "synthetic:n=32,seed=0,size=96x72:train"


def test_subset_halves_are_disjoint_and_follow_the_seeded_permutation():
    full = open_dataset(SPEC)
    a = open_set({"spec": SPEC, "subset": {"fraction": 0.25, "seed": 3, "part": 0}})
    b = open_set({"spec": SPEC, "subset": {"fraction": 0.25, "seed": 3, "part": 1}})
    order = np.random.default_rng(3).permutation(32)
    assert [a.frame_id(i) for i in range(len(a))] == [full.frame_id(i) for i in sorted(order[:8])]
    assert len(b) == 24 and not {a.frame_id(i) for i in range(8)} & {f.frame_id for f in b}
    np.testing.assert_array_equal(a[0].label, full[int(sorted(order[:8])[0])].label)
    for bad in ({"fraction": 1.5}, {"part": 2}, {"fraction": 0.5, "sede": 1}):
        with pytest.raises(DataError):
            open_set({"spec": SPEC, "subset": bad})
    for bad in ([], {"subset": {}}, 3, {"spec": SPEC, "extra": 1}):
        with pytest.raises(DataError):
            open_set(bad)
    with pytest.raises(DataError):
        SubsetDataset(full, [0, 32])


def test_open_set_lists_concatenate_and_resize():
    both = open_set([SPEC, "synthetic:n=4,seed=1,size=96x72:test"], image_size=(36, 48))
    assert isinstance(both, ConcatDataset) and len(both) == 36
    assert all(isinstance(p, ResizedDataset) for p in both.parts)
    assert both[35].image.shape == (36, 48, 3) and both[35].index == 35


def test_concat_prefixes_colliding_ids_and_needs_one_class_set():
    classes = from_names(["a", "b"])
    img, lab = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int64)
    one = InMemoryDataset([Frame("x", 0, img, lab), Frame("y", 1, img, lab)], classes)
    two = InMemoryDataset([Frame("x", 0, img, lab)], classes)
    both = ConcatDataset([one, two])
    assert [f.frame_id for f in both] == ["p0/x", "p0/y", "p1/x"]
    assert [f.index for f in both] == [0, 1, 2]
    assert [f.frame_id for f in ConcatDataset([one, InMemoryDataset([Frame("z", 0, img, lab)], classes)])] == ["x", "y", "z"]
    with pytest.raises(DataError, match="same classes"):
        ConcatDataset([one, InMemoryDataset([Frame("z", 0, img, lab)], from_names(["a", "c"]))])


def test_resized_labels_are_nearest_samples():
    full = open_dataset(SPEC)
    half = ResizedDataset(full, (36, 48))
    f, g = full[3], half[3]
    assert g.image.shape == (36, 48, 3) and g.label.shape == (36, 48)
    np.testing.assert_array_equal(g.label, f.label[1::2, 1::2])  # centre of each 2x2 block
    block = f.image.reshape(36, 2, 48, 2, 3).mean((1, 3))
    assert np.abs(g.image.astype(float) - block).mean() < 8
    same = ResizedDataset(full, (72, 96))[3]  # already that size: unchanged
    np.testing.assert_array_equal(same.image, f.image)
    np.testing.assert_array_equal(same.label, f.label)
