"""Per-component features against a flood-fill, pixel-by-pixel computation; the torch labelling
against scipy's, and the torch aggregation against the numpy one it replaced."""

import math

import numpy as np
import pytest
import torch

from saseg.errors import DataError
from saseg.quality.components import (COMPONENT_COLUMNS, component_roots, component_stats, default_backend,
                                      label_components, label_components_batch)
from saseg.quality.features import boundary_mask, quality_features

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _flood(mask):
    """8-connected components of a bool mask as lists of (y, x), by flood fill."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    comps = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                stack, pix = [(y, x)], []
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    pix.append((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                                seen[ny, nx] = True
                                stack.append((ny, nx))
                comps.append(pix)
    return comps


def _brute(p, k):
    """Class -> the five component columns, from per-pixel loops."""
    c, h, w = p.shape
    pred = p.argmax(0)
    out = {}
    for cls in range(c):
        comps = _flood(pred == cls)
        if not comps:
            continue
        stats = []
        for pix in comps:
            ent, mar, bnd = [], [], 0
            for y, x in pix:
                q = sorted(p[:, y, x], reverse=True)
                ent.append(-sum(v * math.log(v) for v in p[:, y, x]))
                mar.append(1 - (q[0] - q[1]))
                window = pred[max(0, y - k):y + k + 1, max(0, x - k):x + k + 1]
                bnd += bool((window != cls).any())
            stats.append((np.mean(ent), np.mean(mar), bnd / len(pix), len(pix)))
        sizes = [s[3] for s in stats]
        out[cls] = {"comp_worst_entropy": max(s[0] for s in stats),
                    "comp_worst_margin": max(s[1] for s in stats),
                    "comp_worst_boundary_share": max(s[2] for s in stats),
                    "comp_min_size": min(sizes),
                    "comp_aw_size": sum(n * n for n in sizes) / sum(sizes)}
    return out


def _logits(seed, c=4, h=14, w=15):
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(c, h, w, dtype=torch.float64)
    base[0, :, : w // 2] += 2.0
    base[1, :, w // 2:] += 2.0
    base[2, h // 2:, 2:6] += 4.0
    return base + 1.5 * torch.randn(c, h, w, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 2), (3, 2)])
def test_component_columns_match_brute_force(seed, k):
    logits = _logits(seed)
    got = quality_features(logits, boundary_px=k, likely_p=0.2, min_likely_pixels=3).set_index("class_id")
    want = _brute(torch.softmax(logits, 0).numpy(), k)
    pred = logits.argmax(0).numpy()
    assert max(len(_flood(pred == c)) for c in want) > 1  # the fixture has fragmented classes
    for cls, row in got.iterrows():
        for col in COMPONENT_COLUMNS:
            if cls in want:
                assert row[col] == pytest.approx(want[cls][col], rel=1e-9), (cls, col)
            else:  # likely-present but unpredicted: no component
                assert math.isnan(row[col]), (cls, col)


def test_label_components_partition_the_frame():
    pred = torch.tensor([[0, 0, 1, 1], [2, 1, 1, 0], [2, 2, 1, 0]])
    comp, owner = label_components(pred)
    # class 0 has two 8-connected pieces: the top-left pair and the right edge
    assert sorted(owner.tolist()) == [0, 0, 1, 2]
    for k in range(len(owner)):
        assert (pred[comp == k] == owner[k]).all()
    assert len(torch.unique(comp)) == len(owner)


def test_unpredicted_class_gets_nan_and_zero_counts():
    pred = torch.zeros((4, 4), dtype=torch.int64)
    pred[0, 0] = 2
    ent = torch.full((4, 4), 0.5)
    stats = {k: v.numpy() for k, v in component_stats(pred, ent, ent, boundary_mask(pred, 1), 3).items()}
    assert stats["n_components"].tolist() == [1, 0, 1]
    assert math.isnan(stats["comp_worst_entropy"][1]) and math.isnan(stats["comp_aw_size"][1])
    assert stats["comp_min_size"][2] == 1 and stats["comp_worst_boundary_share"][2] == 1.0
    assert stats["comp_aw_size"][0] == 15.0


# -- the torch labelling against scipy's --------------------------------------------------

def _spiral(h, w):
    """Class 1: a one-pixel-wide spiral with one-pixel gaps (class 0 is the spiral corridor)."""
    out = np.zeros((h, w), dtype=np.int64)
    y, x, dy, dx = 0, 0, 0, 1

    def free(y, x):
        return 0 <= y < h and 0 <= x < w and not out[y, x]

    out[0, 0] = 1
    for _ in range(h * w):
        for _turn in range(2):
            ny, nx = y + dy, x + dx
            beyond = (ny + dy, nx + dx)
            if free(ny, nx) and not (0 <= beyond[0] < h and 0 <= beyond[1] < w and out[beyond]):
                break
            dy, dx = dx, -dy  # turn right
        else:
            return out
        y, x = ny, nx
        out[y, x] = 1
    return out


def _snake(h, w):
    """Class 1: full rows two apart, joined at alternating ends (one path of ~h*w/2 pixels)."""
    out = np.zeros((h, w), dtype=np.int64)
    out[::2] = 1
    for i, y in enumerate(range(1, h, 2)):
        out[y, w - 1 if i % 2 == 0 else 0] = 1
    return out


def _maze(h, w, seed):
    """Class 1: the passages of a random depth-first maze on the even cells (a tree of paths)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w), dtype=np.int64)
    seen = np.zeros(((h + 1) // 2, (w + 1) // 2), dtype=bool)
    stack, seen[0, 0], out[0, 0] = [(0, 0)], True, 1
    while stack:
        y, x = stack[-1]
        nexts = [(y + dy, x + dx) for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0))
                 if 0 <= y + dy < seen.shape[0] and 0 <= x + dx < seen.shape[1] and not seen[y + dy, x + dx]]
        if not nexts:
            stack.pop()
            continue
        ny, nx = nexts[rng.integers(len(nexts))]
        seen[ny, nx] = out[2 * ny, 2 * nx] = out[y + ny, x + nx] = 1
        stack.append((ny, nx))
    return out


def _random(seed, h, w, n_classes, density):
    """Class 0 with probability 1 - density, else one of 1..n_classes-1."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((h, w)) < density, rng.integers(1, n_classes, (h, w)), 0)


def _cases():
    yield "diagonal", np.eye(9, 13, dtype=np.int64) + np.fliplr(np.eye(9, 13, k=2, dtype=np.int64))
    yield "checkerboard", np.indices((10, 7)).sum(0) % 2
    yield "checker3", np.indices((9, 11)).sum(0) % 3
    yield "spiral", _spiral(23, 31)
    yield "snake", _snake(21, 16)
    yield "snake_columns", _snake(16, 21).T.copy()
    yield "maze", _maze(31, 40, 1)
    yield "one_pixel_classes", np.pad(np.array([[3, 0, 5], [0, 7, 0]]), 2)
    yield "single_class", np.full((5, 8), 4)
    yield "all_different", np.arange(6 * 9).reshape(6, 9)
    yield "row", np.array([[0, 1, 1, 0, 2, 2, 0]])
    yield "column", np.array([[0], [1], [1], [0], [1]])
    yield "one_pixel", np.array([[6]])
    yield "negative_and_sparse_ids", np.array([[-1, 40, 40], [2, -1, 40], [2, 2, -1]])
    for seed, (n_classes, density) in enumerate([(2, 0.1), (2, 0.5), (3, 0.5), (5, 0.3), (12, 0.9)]):
        yield f"random{n_classes}_{density}", _random(seed, 17 + seed, 29 - seed, n_classes, density)
    blocks = np.kron(np.random.default_rng(9).integers(0, 4, (6, 9)), np.ones((3, 4), dtype=np.int64))
    yield "blocks", blocks


CASES = dict(_cases())


@pytest.mark.parametrize("name", CASES)
def test_torch_labels_equal_scipy(name):
    pred = torch.as_tensor(CASES[name])
    want_comp, want_owner = label_components(pred, backend="scipy")
    comp, owner = label_components(pred, backend="torch")
    assert torch.equal(comp, want_comp) and torch.equal(owner, want_owner)
    assert comp.dtype == owner.dtype == torch.int64


@pytest.mark.parametrize("make", [_spiral, _snake, lambda h, w: _maze(h, w, 0)])
def test_long_paths_take_few_steps(make):
    pred = torch.as_tensor(make(64, 64))
    owner = label_components(pred, backend="scipy")[1]
    assert (owner == 1).sum() == 1 and (pred == 1).sum() > 1000  # class 1 is one long path
    assert component_roots(pred[None])[1] <= 10  # propagation alone would take ~1000 steps


@pytest.mark.parametrize("seed", range(4))
def test_batch_equals_frame_by_frame(seed):
    rng = np.random.default_rng(seed)
    preds = torch.as_tensor(rng.integers(0, 2 + seed, (3, 11, 14)))
    preds[1] = 1  # a frame with one component
    comp, owner, counts = label_components_batch(preds, backend="torch")
    assert torch.equal(counts, torch.tensor([len(label_components(p)[1]) for p in preds]))
    start = 0
    for b, p in enumerate(preds):
        want_comp, want_owner = label_components(p, backend="scipy")
        assert torch.equal(comp[b], want_comp)
        assert torch.equal(owner[start:start + int(counts[b])], want_owner)
        start += int(counts[b])
    scipy = label_components_batch(preds, backend="scipy")
    assert all(torch.equal(a, b) for a, b in zip(scipy, (comp, owner, counts)))


def test_empty_frame_and_bad_input():
    comp, owner = label_components(torch.zeros((0, 5), dtype=torch.int64), backend="torch")
    assert comp.shape == (0, 5) and owner.numel() == 0
    with pytest.raises(DataError, match="backend"):
        label_components(torch.zeros((2, 2), dtype=torch.int64), backend="cupy")
    with pytest.raises(DataError, match="shape"):
        label_components(torch.zeros((1, 2, 2), dtype=torch.int64))
    with pytest.raises(DataError, match="int class ids"):
        label_components(torch.zeros((2, 2)))


def test_default_backend_is_scipy_on_the_cpu_only():
    assert default_backend(torch.device("cpu")) == "scipy"
    assert default_backend(torch.device("cuda")) == "torch"


# -- the torch aggregation against the numpy one it replaced ------------------------------

def _stats_numpy(pred, entropy, margin, boundary, num_classes):
    """The numpy `component_stats` before the port (labels from scipy), kept as the reference."""
    comp, owner = (t.numpy() for t in label_components(torch.as_tensor(pred), backend="scipy"))
    k = len(owner)
    flat = comp.ravel()
    size = np.bincount(flat, minlength=k).astype(np.float64)
    per = {"E": np.bincount(flat, weights=entropy.ravel().astype(np.float64), minlength=k) / size,
           "M": np.bincount(flat, weights=margin.ravel().astype(np.float64), minlength=k) / size,
           "B": np.bincount(flat, weights=boundary.ravel().astype(np.float64), minlength=k) / size}

    def reduce(ufunc, values, init):
        out = init.astype(np.float64).copy()
        ufunc.at(out, owner, values)
        return out

    nan = np.full(num_classes, np.nan)
    out = {"n_components": np.bincount(owner, minlength=num_classes).astype(np.float64),
           "largest_component": reduce(np.maximum, size, np.zeros(num_classes)),
           "mean_component": np.bincount(owner, weights=size, minlength=num_classes)}
    area = out["mean_component"].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mean_component"] = np.where(out["n_components"] > 0, area / out["n_components"], np.nan)
        aw = np.bincount(owner, weights=size ** 2, minlength=num_classes) / area
    out["comp_worst_entropy"] = reduce(np.fmax, per["E"], nan)
    out["comp_worst_margin"] = reduce(np.fmax, per["M"], nan)
    out["comp_worst_boundary_share"] = reduce(np.fmax, per["B"], nan)
    out["comp_min_size"] = reduce(np.fmin, size, nan)
    out["comp_aw_size"] = np.where(area > 0, aw, np.nan)
    return out


def _maps(seed, c=6, h=19, w=23, device="cpu"):
    """pred with an unpredicted class (c - 1), float32 entropy and margin, the boundary mask."""
    logits = _logits(seed, c, h, w)
    logits[c - 1] -= 100.0
    logp = torch.log_softmax(logits.float(), 0)
    top2 = logp.exp().topk(2, 0).values
    pred = logits.argmax(0)
    maps = (pred, -(logp.exp() * logp).sum(0), 1 - (top2[0] - top2[1]), boundary_mask(pred, 1))
    return tuple(m.to(device) for m in maps)


def _assert_stats_equal(got, want, rel=0.0):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == torch.float64, name
        np.testing.assert_allclose(got[name].cpu().numpy(), want[name], rtol=rel, atol=0, err_msg=name)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_component_stats_equal_numpy(seed, backend):
    maps = _maps(seed)
    want = _stats_numpy(*(m.numpy() for m in maps), 6)
    assert np.isnan(want["comp_worst_entropy"][5]) and want["n_components"][5] == 0
    _assert_stats_equal(component_stats(*maps, 6, backend=backend), want)


@CUDA
@pytest.mark.parametrize("name", CASES)
def test_cuda_labels_equal_scipy(name):
    pred = torch.as_tensor(CASES[name])
    comp, owner = label_components(pred.cuda())
    assert comp.is_cuda and owner.is_cuda
    want_comp, want_owner = label_components(pred, backend="scipy")
    assert torch.equal(comp.cpu(), want_comp) and torch.equal(owner.cpu(), want_owner)


@CUDA
@pytest.mark.parametrize("seed", range(3))
def test_cuda_component_stats_and_features_equal_the_cpu(seed):
    maps = _maps(seed, device="cuda")
    got = component_stats(*maps, 6)
    assert all(v.is_cuda for v in got.values())
    # float64 sums in atomic order: equal up to rounding
    _assert_stats_equal(got, _stats_numpy(*(m.cpu().numpy() for m in maps), 6), rel=1e-12)
    logits = _logits(seed)
    cpu, cuda = quality_features(logits), quality_features(logits.cuda())
    assert cpu.columns.equals(cuda.columns) and cpu["class_id"].equals(cuda["class_id"])
    for col in ("n_components", "largest_component", "mean_component", "comp_min_size", "comp_aw_size"):
        assert cpu[col].equals(cuda[col]), col
    np.testing.assert_allclose(cuda[list(COMPONENT_COLUMNS)], cpu[list(COMPONENT_COLUMNS)], rtol=1e-9)
