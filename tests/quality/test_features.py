"""Quality features against a brute-force per-pixel computation on tiny frames."""

import math

import numpy as np
import pytest
import torch

from saseg.errors import DataError
from saseg.quality.features import FEATURE_COLUMNS, boundary_mask, quality_features


def _logits(seed=0, c=4, h=11, w=13, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(c, h, w, dtype=torch.float64)
    # blocky regions so that classes have interiors, plus noise
    base[0, :, : w // 2] += sharp
    base[1, :, w // 2:] += sharp
    base[2, h // 2:, 2:6] += 2 * sharp
    return base + torch.randn(c, h, w, generator=g, dtype=torch.float64)


def _components(mask):
    """8-connected component sizes by flood fill."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    sizes = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                stack, n = [(y, x)], 0
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    n += 1
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                                seen[ny, nx] = True
                                stack.append((ny, nx))
                sizes.append(n)
    return sizes


def _brute(logits, k, likely_p, min_likely):
    c, h, w = logits.shape
    p = torch.softmax(logits, 0).numpy()
    pred = p.argmax(0)
    boundary = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            for yy in range(max(0, y - k), min(h, y + k + 1)):
                for xx in range(max(0, x - k), min(w, x + k + 1)):
                    if pred[yy, xx] != pred[y, x]:
                        boundary[y, x] = True
    rows = {}
    for cls in range(c):
        n = int((pred == cls).sum())
        if n == 0 and int((p[cls] >= likely_p).sum()) < min_likely:
            continue
        r = {"n_pixels": n}
        for part, sel in (("interior", ~boundary), ("boundary", boundary)):
            vals = {"entropy": [], "max_softmax": [], "margin": []}
            for y in range(h):
                for x in range(w):
                    if pred[y, x] == cls and sel[y, x]:
                        q = sorted(p[:, y, x], reverse=True)
                        vals["entropy"].append(-sum(v * math.log(v) for v in p[:, y, x]))
                        vals["max_softmax"].append(1 - q[0])
                        vals["margin"].append(1 - (q[0] - q[1]))
            for name, v in vals.items():
                r[f"{name}_{part}"] = float(np.mean(v)) if v else float("nan")
        sizes = _components(pred == cls)
        r["n_components"] = len(sizes)
        r["largest_component"] = max(sizes) if sizes else 0
        r["mean_component"] = float(np.mean(sizes)) if sizes else float("nan")
        r["boundary_share"] = float((boundary & (pred == cls)).sum() / n) if n else float("nan")
        fn = sum(p[cls, y, x] for y in range(h) for x in range(w) if pred[y, x] != cls)
        own = sum(p[cls, y, x] for y in range(h) for x in range(w) if pred[y, x] == cls)
        r["fn_mass"] = fn
        r["fn_ratio"] = fn / n if n else float("nan")
        r["plugin_iou"] = own / (n + fn)
        rows[cls] = r
    return rows


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 2), (2, 3)])
def test_features_match_brute_force(seed, k):
    logits = _logits(seed)
    got = quality_features(logits, boundary_px=k, likely_p=0.2, min_likely_pixels=3)
    want = _brute(logits, k, 0.2, 3)
    assert got["class_id"].tolist() == sorted(want)
    for row in got.itertuples(index=False):
        ref = want[row.class_id]
        for col in ["n_pixels", *FEATURE_COLUMNS]:
            assert getattr(row, col) == pytest.approx(ref[col], rel=1e-9, abs=1e-12, nan_ok=True), (row.class_id, col)


def test_missed_class_gets_a_row_with_zero_plugin_iou():
    logits = torch.zeros(3, 8, 8, dtype=torch.float64)
    logits[0] += 2.0          # class 0 wins everywhere
    logits[1, :4, :4] += 1.5  # class 1 is a strong runner-up in one corner, never predicted
    got = quality_features(logits, likely_p=0.2, min_likely_pixels=16).set_index("class_id")
    assert list(got.index) == [0, 1]  # class 2 is neither predicted nor likely
    assert got.loc[1, "n_pixels"] == 0
    assert got.loc[1, "plugin_iou"] == 0.0
    assert math.isnan(got.loc[1, "fn_ratio"]) and got.loc[1, "fn_mass"] > 5
    assert math.isnan(got.loc[1, "entropy_interior"]) and got.loc[1, "n_components"] == 0


def test_boundary_mask_ignores_the_frame_edge():
    pred = torch.zeros(5, 6, dtype=torch.long)
    assert not boundary_mask(pred, 2).any()
    pred[:, 3:] = 1
    mask = boundary_mask(pred, 1)
    assert mask[:, 2:4].all() and not mask[:, [0, 1, 4, 5]].any()


def test_bad_shapes_are_refused():
    with pytest.raises(DataError, match="C, H, W"):
        quality_features(torch.zeros(1, 4, 4))
    with pytest.raises(DataError, match="k >= 1"):
        boundary_mask(torch.zeros(3, 3, dtype=torch.long), 0)


def test_dispersion_columns_are_the_shared_formulas():
    """The feature columns name exactly the maps of `dispersion_maps` (one home for the formulas)."""
    from saseg.estimators.softmax import DISPERSION_FORMULAS
    from saseg.quality.features import DISPERSIONS

    assert sorted(DISPERSIONS) == sorted(DISPERSION_FORMULAS)


def test_passes_of_any_size_give_the_same_columns():
    """One frame per pass (the CPU default) and the whole batch at once (a GPU's) agree."""
    from saseg.quality.features import batch_quality_features

    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 6, 24, 32, generator=gen) * 3
    logits[2, 4] = logits[2].max(0).values - 0.1  # class 4 of frame 2: likely, never predicted
    one = batch_quality_features(logits, frames_per_pass=1)
    whole = batch_quality_features(logits, frames_per_pass=5)
    two = batch_quality_features(logits, frames_per_pass=2)
    assert one.keys() == whole.keys() == two.keys()
    for name in one:
        np.testing.assert_allclose(one[name], whole[name], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(one[name], two[name], rtol=1e-12, equal_nan=True)
    assert list(np.unique(one["frame"])) == [0, 1, 2, 3, 4]
    for b in range(5):  # each frame's rows are that frame's quality_features
        single = quality_features(logits[b])
        rows = one["frame"] == b
        np.testing.assert_array_equal(one["class_id"][rows], single["class_id"])
        np.testing.assert_allclose(one["plugin_iou"][rows], single["plugin_iou"], rtol=1e-12)
