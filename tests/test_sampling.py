"""sample_pixels, class_pixel_counts and ClassReservoir against brute-force references."""

import numpy as np
import pytest
import torch
from scipy import stats

from saseg.errors import DataError, DegenerateDataError, UnknownClassError
from saseg.sampling import ClassReservoir, class_pixel_counts, sample_pixels

IGNORE = 255


def _mask(seed=0, H=13, W=17):
    """Classes 0..4 of very different sizes (class 3 has 2 pixels, 4 none), plus ignore."""
    rng = np.random.default_rng(seed)
    m = rng.choice([0, 1, 2, IGNORE], size=(H, W), p=[0.55, 0.25, 0.1, 0.1])
    m[0, 0], m[H - 1, W - 1] = 3, 3
    return torch.as_tensor(m)


def _per_class(ys, xs, cls):
    out = {}
    for y, x, c in zip(ys.tolist(), xs.tolist(), cls.tolist()):
        out.setdefault(c, []).append((y, x))
    return out


@pytest.mark.parametrize("k", [1, 5, 30])
def test_at_most_k_per_class_with_the_right_class(k):
    mask = _mask()
    ys, xs, cls = sample_pixels(mask, k, generator=0, ignore_index=IGNORE)
    assert ys.dtype == xs.dtype == cls.dtype == torch.int64
    assert torch.equal(mask[ys, xs], cls)  # sampled pixels really have that class
    assert not (cls == IGNORE).any()
    for c in range(5):
        n_c = int((mask == c).sum())
        assert int((cls == c).sum()) == min(k, n_c)  # all k when possible, all pixels when fewer
    assert len(set(zip(ys.tolist(), xs.tolist()))) == len(ys)  # without replacement
    key = (cls * mask.numel() + ys * mask.shape[1] + xs).tolist()
    assert key == sorted(key)  # grouped by ascending class, row-major within


def test_every_pixel_when_k_is_none_or_non_positive():
    mask = _mask(1)
    want = sorted((int(mask[y, x]), y, x) for y in range(mask.shape[0]) for x in range(mask.shape[1])
                  if mask[y, x] != IGNORE)
    for k in (None, 0, -3):
        ys, xs, cls = sample_pixels(mask, k, ignore_index=IGNORE)
        assert list(zip(cls.tolist(), ys.tolist(), xs.tolist())) == want


def test_ignore_none_samples_every_value_and_classes_restrict():
    mask = _mask(2)
    _, _, cls = sample_pixels(mask, None)
    assert set(cls.tolist()) == {0, 1, 2, 3, IGNORE}
    ys, xs, cls = sample_pixels(mask, 4, generator=1, ignore_index=IGNORE, classes=[2, 3, 4])
    assert set(cls.tolist()) == {2, 3} and int((cls == 2).sum()) == 4
    assert torch.equal(mask[ys, xs], cls)
    again = sample_pixels(mask, 4, generator=1, ignore_index=IGNORE, classes={2, 3})
    assert all(torch.equal(u, v) for u, v in zip((ys, xs, cls), again))


def test_seeds_reproduce_and_differ():
    mask = _mask(3, 40, 50)
    a = sample_pixels(mask, 10, generator=7, ignore_index=IGNORE)
    b = sample_pixels(mask, 10, generator=torch.Generator().manual_seed(7), ignore_index=IGNORE)
    c = sample_pixels(mask, 10, generator=8, ignore_index=IGNORE)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0] * 50 + a[1], c[0] * 50 + c[1])
    torch.manual_seed(3)
    d = sample_pixels(mask, 10, ignore_index=IGNORE)
    torch.manual_seed(3)
    e = sample_pixels(mask, 10, ignore_index=IGNORE)
    assert all(torch.equal(u, v) for u, v in zip(d, e))


def test_uniform_within_class():
    mask = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, IGNORE, IGNORE]])
    hits = torch.zeros(2, 6)
    reps = 300
    for seed in range(reps):
        ys, xs, _ = sample_pixels(mask, 2, generator=seed, ignore_index=IGNORE)
        hits[ys, xs] += 1
    for row, n in ((0, 6), (1, 4)):  # each pixel kept with probability k / n_c
        observed = hits[row, :n].numpy()
        assert stats.chisquare(observed, np.full(n, reps * 2 / n)).pvalue > 1e-3


def test_numpy_and_uint8_masks():
    m = _mask(4).numpy().astype(np.uint8)
    ys, xs, cls = sample_pixels(m, 3, generator=0, ignore_index=IGNORE)
    assert torch.equal(torch.as_tensor(m[ys.numpy(), xs.numpy()]).long(), cls)


def test_class_pixel_counts_is_bincount():
    mask = _mask(5)
    m = mask.numpy()
    want = [(m == c).sum() for c in range(8)]
    assert class_pixel_counts(mask, ignore_index=IGNORE, minlength=8).tolist() == want
    assert len(class_pixel_counts(mask, ignore_index=IGNORE)) == 4
    assert len(class_pixel_counts(mask)) == IGNORE + 1


def test_sample_pixels_bad_inputs():
    mask = _mask()
    with pytest.raises(DataError, match=r"shape \(H, W\)"):
        sample_pixels(mask[None], 3)
    with pytest.raises(DataError, match="integer class ids"):
        sample_pixels(mask.float(), 3)
    with pytest.raises(DataError, match="integer class ids"):
        sample_pixels(mask > 0, 3)
    with pytest.raises(DataError, match="expected k"):
        sample_pixels(mask, 2.5)
    with pytest.raises(DataError, match="expected k"):
        sample_pixels(mask, True)
    with pytest.raises(DataError, match="generator"):
        sample_pixels(mask, 3, generator="seed")
    with pytest.raises(DataError, match=r"class ids >= 0 or ignore index 255, but got \[-1\]"):
        sample_pixels(torch.tensor([[0, -1]]), 3, ignore_index=IGNORE)
    with pytest.raises(DataError, match="class ids >= 0"):
        class_pixel_counts(torch.tensor([[0, -1]]))
    assert all(len(t) == 0 for t in sample_pixels(torch.full((3, 3), IGNORE), 3, ignore_index=IGNORE))


# ------------------------------------------------------------------------------ reservoir
def _stream(n, n_classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    ats = torch.stack([torch.arange(n, dtype=torch.float32), torch.randn(n, generator=g)], 1)
    return ats, torch.randint(n_classes, (n,), generator=g)


def _feed(res, ats, cls, batch):
    for i in range(0, len(ats), batch):
        res.update(ats[i:i + batch], cls[i:i + batch])
    return res


@pytest.mark.parametrize("batch", [1, 4, 60])
def test_reservoir_keeps_the_smallest_keys(batch):
    """Brute force: redraw the keys and keep, per class, the `capacity` smallest."""
    ats, cls = _stream(60, 3)
    res = _feed(ClassReservoir(7, seed=5), ats, cls, batch)
    g = torch.Generator().manual_seed(5)
    keys = torch.cat([torch.rand(len(ats[i:i + batch]), generator=g, dtype=torch.float64)
                      for i in range(0, len(ats), batch)])
    assert res.classes_ == [0, 1, 2]
    for c in range(3):
        idx = (cls == c).nonzero().squeeze(1)
        want = idx[torch.argsort(keys[idx])[:7]]
        assert sorted(res.ats(c)[:, 0].long().tolist()) == sorted(want.tolist())
        torch.testing.assert_close(res.ats(c)[:, 1], ats[res.ats(c)[:, 0].long(), 1], rtol=0, atol=0)
        assert res.seen_[c] == int((cls == c).sum())


def test_reservoir_is_uniform():
    n, cap, reps = 20, 5, 400
    ats = torch.arange(n, dtype=torch.float32)[:, None]
    cls = torch.zeros(n, dtype=torch.long)
    hits = np.zeros(n)
    for seed in range(reps):
        res = _feed(ClassReservoir(cap, seed=seed), ats, cls, 3)
        hits[res.ats(0)[:, 0].long().numpy()] += 1
    # each item kept with probability cap / n
    assert stats.chisquare(hits, np.full(n, reps * cap / n)).pvalue > 1e-3


def test_reservoir_capacity_seed_and_storage():
    ats, cls = _stream(300, 2)
    a = _feed(ClassReservoir(10, seed=1), ats.double(), cls, 16)
    b = _feed(ClassReservoir(10, seed=1), ats.double(), cls, 16)
    c = _feed(ClassReservoir(10, seed=2), ats.double(), cls, 16)
    ats_a, cls_a = a.to_arrays()
    assert ats_a.dtype == torch.float32 and ats_a.device.type == "cpu"
    assert ats_a.shape == (20, 2) and cls_a.tolist() == [0] * 10 + [1] * 10
    assert torch.equal(ats_a, b.to_arrays()[0]) and not torch.equal(ats_a, c.to_arrays()[0])
    small = _feed(ClassReservoir(1000, seed=0), ats, cls, 16)
    assert sorted(small.ats(1)[:, 0].tolist()) == ats[cls == 1, 0].tolist()  # all kept when few
    assert small.n_features_ == 2 and sum(small.seen_.values()) == 300


def test_reservoir_bad_inputs():
    ats, cls = _stream(10)
    with pytest.raises(DegenerateDataError):
        ClassReservoir().to_arrays()
    with pytest.raises(DataError, match="capacity"):
        ClassReservoir(0).update(ats, cls)
    with pytest.raises(DataError, match=r"shape \(N, d\)"):
        ClassReservoir().update(ats[:, 0], cls)
    with pytest.raises(DataError, match="float tensor"):
        ClassReservoir().update(ats.long(), cls)
    with pytest.raises(DataError, match="classes"):
        ClassReservoir().update(ats, cls[:5])
    with pytest.raises(DataError, match="classes"):
        ClassReservoir().update(ats, cls.float())
    res = ClassReservoir().update(ats, cls)
    with pytest.raises(DataError, match="dimension 2"):
        res.update(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(UnknownClassError, match="7"):
        res.ats(7)


def test_reservoirs_filled_apart_and_merged_equal_one_with_everything():
    """Per-frame keys (seeded by the frame, not the arrival order): two workers' reservoirs,
    merged, hold exactly the sample of one reservoir fed every frame."""
    rng = np.random.default_rng(3)
    frames = []
    for f in range(12):
        n = int(rng.integers(5, 40))
        ats = torch.as_tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
        cls = torch.as_tensor(rng.integers(0, 3, n))
        keys = torch.rand(n, generator=torch.Generator().manual_seed(1000 + f), dtype=torch.float64)
        frames.append((ats, cls, keys))
    one = ClassReservoir(15)
    for ats, cls, keys in frames:
        one.update(ats, cls, keys=keys)
    workers = [ClassReservoir(15), ClassReservoir(15)]
    for f in [7, 2, 11, 0, 5, 9]:
        workers[0].update(*frames[f][:2], keys=frames[f][2])
    for f in [1, 3, 4, 6, 8, 10]:
        workers[1].update(*frames[f][:2], keys=frames[f][2])
    merged = ClassReservoir(15).merge(workers[1]).merge(workers[0])
    assert merged.seen_ == one.seen_ and merged.classes_ == one.classes_
    for c in one.classes_:
        a, b = one.ats(c), merged.ats(c)
        assert len(a) == 15
        key = lambda x: sorted(map(tuple, x.tolist()))  # noqa: E731
        assert key(a) == key(b)


def test_merge_refuses_another_capacity_or_width():
    a = ClassReservoir(5).update(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match="capacity"):
        a.merge(ClassReservoir(6))
    with pytest.raises(DataError, match="dimension"):
        a.merge(ClassReservoir(5).update(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)))
    with pytest.raises(DataError, match="keys"):
        a.update(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), keys=torch.tensor([0.5, 1.5]))


def _reference_sample_pixels(mask, k, generator, ignore_index=None, classes=None):
    """The implementation before the speed-up (torch's stable sort over every pixel, indices
    always built), kept as the reference: the fast path must draw the very same pixels."""
    mask = torch.as_tensor(mask).long()
    H, W = mask.shape
    flat = mask.reshape(-1)
    ok = torch.ones_like(flat, dtype=torch.bool)
    if ignore_index is not None:
        ok &= flat != ignore_index
    if classes is not None:
        ok &= torch.isin(flat, torch.as_tensor(list(classes)))
    idx = ok.nonzero().squeeze(1)
    cls = flat[idx]
    if k is not None and k > 0 and idx.numel():
        perm = torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(generator))
        cls, order = torch.sort(cls[perm], stable=True)
        idx = idx[perm][order]
        _, counts = torch.unique_consecutive(cls, return_counts=True)
        starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        keep = torch.arange(idx.numel()) - starts < k
        idx, cls = idx[keep], cls[keep]
    order = torch.argsort(cls * (H * W) + idx)
    idx, cls = idx[order], cls[order]
    return idx // W, idx % W, cls


@pytest.mark.parametrize("trial", range(60))
def test_sample_pixels_draws_the_reference_implementations_pixels(trial):
    rng = np.random.default_rng(trial)
    H, W = (int(v) for v in rng.integers(1, 40, 2))
    mask = torch.from_numpy(rng.integers(0, int(rng.integers(1, 9)), (H, W)))
    k = [None, 0, 1, 3, 50][trial % 5]
    options = [{}, {"ignore_index": 0}, {"classes": [1, 2]}][trial % 3]
    fast = sample_pixels(mask, k, generator=trial, **options)
    slow = _reference_sample_pixels(mask, k, trial, **options)
    for a, b in zip(fast, slow):
        assert torch.equal(a, b)
