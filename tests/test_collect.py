"""PixelCollector / FitSample: samples filled apart and merged equal one filled in order."""

from __future__ import annotations

import torch

from conftest import TRAIN_SPEC
from saseg.collect import PixelCollector
from saseg.data import open_dataset
from saseg.models import load_model


def _fill(collector, dataset, order, batch=1):
    """One frame per forward pass, so each frame's ATs are the same bits in any order (a
    batch of other frames may change a float32 AT's last bit)."""
    sample = collector.empty()
    for k in range(0, len(order), batch):
        collector.add_batch(sample, [dataset[i] for i in order[k:k + batch]], dataset)
    return sample


def test_reservoirs_filled_apart_and_merged_equal_one(tiny_model_dir):
    model, dataset = load_model(tiny_model_dir), open_dataset(TRAIN_SPEC)
    collector = PixelCollector(model, dataset.classes, pixels_per_class=20, seed=3, max_ats_per_class=25)
    whole = _fill(collector, dataset, list(range(len(dataset))))
    # two "workers" with interleaved, shuffled frames, merged in the other order
    left = _fill(collector, dataset, [7, 1, 9, 3, 11, 5])
    right = _fill(collector, dataset, [10, 0, 4, 8, 2, 6])
    merged = right.merge(left)
    assert merged.counts == whole.counts and merged.n_used == whole.n_used == len(dataset)
    assert max(whole.counts.values()) > 25  # the cap bites
    a, b = whole.reservoir.to_arrays(), merged.reservoir.to_arrays()
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert merged.reservoir.seen_ == whole.reservoir.seen_


def test_streamed_moments_filled_apart_and_merged_equal_one(tiny_model_dir):
    model, dataset = load_model(tiny_model_dir), open_dataset(TRAIN_SPEC)
    collector = PixelCollector(model, dataset.classes, pixels_per_class=None, seed=0, max_ats_per_class=None)
    whole = _fill(collector, dataset, list(range(len(dataset)))).mdsa.finalize()
    parts = [_fill(collector, dataset, order) for order in ([0, 5, 6], [11, 2], [1, 3, 4, 7, 8, 9, 10])]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    merged.mdsa.finalize()
    assert merged.counts == _fill(collector, dataset, list(range(12))).counts
    for name in ("means_", "covariances_", "whiteners_", "shrinkage_"):
        x, y = getattr(whole, name), getattr(merged.mdsa, name)
        assert float((x - y).abs().max() / x.abs().max()) < 1e-10, name
    assert torch.equal(whole.classes_, merged.mdsa.classes_)
