"""Per-component features against a flood-fill, pixel-by-pixel computation."""

import math

import numpy as np
import pytest
import torch

from saseg.quality.components import COMPONENT_COLUMNS, component_stats, label_components
from saseg.quality.features import boundary_mask, quality_features


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
    pred = np.array([[0, 0, 1, 1], [2, 1, 1, 0], [2, 2, 1, 0]])
    comp, owner = label_components(pred)
    # class 0 has two 8-connected pieces: the top-left pair and the right edge
    assert sorted(owner.tolist()) == [0, 0, 1, 2]
    for k in range(len(owner)):
        assert (pred[comp == k] == owner[k]).all()
    assert len(np.unique(comp)) == len(owner)


def test_unpredicted_class_gets_nan_and_zero_counts():
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[0, 0] = 2
    ent = np.full((4, 4), 0.5)
    stats = component_stats(pred, ent, ent, boundary_mask(torch.as_tensor(pred), 1).numpy(), 3)
    assert stats["n_components"].tolist() == [1, 0, 1]
    assert math.isnan(stats["comp_worst_entropy"][1]) and math.isnan(stats["comp_aw_size"][1])
    assert stats["comp_min_size"][2] == 1 and stats["comp_worst_boundary_share"][2] == 1.0
    assert stats["comp_aw_size"][0] == 15.0
