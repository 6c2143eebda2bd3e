import math

import numpy as np
import pandas as pd
import pytest
import torch

from saseg.aggregate import ZScoreReference, class_scores, frame_scores, zscore_reference
from saseg.data.classes import from_names
from saseg.errors import DataError, FormatError

CLASSES = from_names(["a", "b", "c", "d"], groups={"ab": [0, 1], "cd": [2, 3]})


def test_class_scores_mean_and_q90_against_numpy():
    rng = np.random.default_rng(0)
    cls = rng.integers(0, 3, size=50)
    cls[cls == 1] = 2  # class 1 never sampled
    mdsa = rng.random(50)
    lsa = rng.random(50).astype(np.float32)
    lsa[cls == 0] = np.nan  # class unknown to this estimator
    n_pix = np.array([100, 7, 300, 0])
    df = class_scores({"mdsa": torch.from_numpy(mdsa), "lsa": torch.from_numpy(lsa)},
                      torch.from_numpy(cls), torch.from_numpy(n_pix))
    assert list(df.columns) == ["class_id", "n_pixels", "n_sampled", "mdsa", "mdsa_q90", "lsa", "lsa_q90"]
    assert list(df.class_id) == [0, 2]
    for row in df.itertuples():
        m = cls == row.class_id
        assert row.n_sampled == m.sum() and row.n_pixels == n_pix[row.class_id]
        assert row.mdsa == pytest.approx(mdsa[m].mean())
        assert row.mdsa_q90 == pytest.approx(np.quantile(mdsa[m], 0.9))
    assert math.isnan(df.lsa[0]) and math.isnan(df.lsa_q90[0])
    assert df.lsa[1] == pytest.approx(lsa[cls == 2].astype(np.float64).mean())


def test_class_scores_n_pixels_mapping_and_default():
    df = class_scores({"s": torch.tensor([1.0, 2.0, 3.0])}, torch.tensor([1, 1, 4]), {1: 10, 4: 5})
    assert list(df.n_pixels) == [10, 5]
    df = class_scores({"s": torch.tensor([1.0, 2.0, 3.0])}, torch.tensor([1, 1, 4]))
    assert list(df.n_pixels) == [2, 1]


def test_class_scores_bad_inputs():
    with pytest.raises(DataError, match="one per sampled pixel"):
        class_scores({"s": torch.zeros(2)}, torch.tensor([0, 1, 1]))
    with pytest.raises(DataError, match="n_pixels"):
        class_scores({"s": torch.zeros(2)}, torch.tensor([0, 5]), torch.zeros(3))


def _scores_table():
    # frame f0: classes a, c ; f1: a, b ; f2: a, d (d seen once) ; f3: b
    rows = [("f0", 0, 0, 1.0), ("f0", 0, 2, 4.0), ("f1", 1, 0, 3.0), ("f1", 1, 1, 2.0),
            ("f2", 2, 0, 8.0), ("f2", 2, 3, 9.0), ("f3", 3, 1, 6.0)]
    df = pd.DataFrame(rows, columns=["frame_id", "frame_index", "class_id", "mdsa"])
    df["source"] = "mem"
    df["lsa"] = 2 * df["mdsa"]
    return df


def _brute_frame_scores(df, col):
    stats = {}
    for c in df.class_id.unique():
        v = df[df.class_id == c][col].to_numpy()
        stats[c] = (v.mean(), math.sqrt(((v - v.mean()) ** 2).mean()))
    out = {}
    for fid, g in df.groupby("frame_id"):
        z = {}
        for r in g.itertuples():
            m, s = stats[r.class_id]
            z[r.class_id] = 0.0 if s == 0 else (getattr(r, col) - m) / s
        out[fid] = z
    return out


def test_frame_scores_against_brute_force():
    df = _scores_table()
    fr = frame_scores(df, CLASSES, ["mdsa", "lsa"])
    assert list(fr.frame_id) == ["f0", "f1", "f2", "f3"]
    assert list(fr.n_segments) == [2, 2, 2, 1]
    for col in ["mdsa", "lsa"]:
        z = _brute_frame_scores(df, col)
        for row in fr.itertuples():
            zs = z[row.frame_id]
            assert getattr(row, f"frame_{col}") == pytest.approx(np.mean(list(zs.values())))
            for g, ids in CLASSES.groups.items():
                vals = [v for c, v in zs.items() if c in ids]
                got = getattr(row, f"group_{g}_{col}")
                if vals:
                    assert got == pytest.approx(np.mean(vals))
                else:
                    assert math.isnan(got)  # group not predicted in this frame
    # class c (id 2) and d (id 3) are seen in one frame only -> z = 0
    assert fr.loc[fr.frame_id == "f2", "group_cd_mdsa"].item() == 0.0


def test_zscore_reference_roundtrip_and_reuse(tmp_path):
    df = _scores_table()
    ref = ZScoreReference.fit(df, ["mdsa"])
    table = zscore_reference(df, ["mdsa"])
    a = table.set_index("class_id")
    assert a.loc[0, "mean"] == pytest.approx(4.0) and a.loc[0, "std"] == pytest.approx(np.std([1, 3, 8]))
    assert a.loc[3, "std"] == 0.0 and a.loc[0, "n_frames"] == 3
    ref.save(tmp_path / "z.json")
    back = ZScoreReference.load(tmp_path / "z.json")
    pd.testing.assert_frame_equal(back.table, ref.table)
    # scoring a new set against the saved reference uses the old statistics
    new = df[df.frame_id == "f0"].copy()
    fr = frame_scores(new, CLASSES, ["mdsa"], reference=back)
    z0 = (1.0 - 4.0) / np.std([1, 3, 8])
    assert fr.group_ab_mdsa.item() == pytest.approx(z0)
    assert fr.frame_mdsa.item() == pytest.approx((z0 + 0.0) / 2)


def test_frame_scores_unknown_class_left_out(caplog):
    df = _scores_table()
    ref = ZScoreReference.fit(df[df.class_id != 3], ["mdsa"])
    fr = frame_scores(df, CLASSES, ["mdsa"], reference=ref)
    assert "class ids [3]" in caplog.text
    assert math.isnan(fr.loc[fr.frame_id == "f2", "group_cd_mdsa"].item())
    z = (8.0 - 4.0) / np.std([1, 3, 8])
    assert fr.loc[fr.frame_id == "f2", "frame_mdsa"].item() == pytest.approx(z)


def test_bad_reference_and_columns(tmp_path):
    df = _scores_table()
    with pytest.raises(DataError, match="expected statistics for scores"):
        frame_scores(df, CLASSES, ["lsa"], reference=ZScoreReference.fit(df, ["mdsa"]))
    with pytest.raises(DataError, match="expected columns"):
        frame_scores(df.drop(columns="source"), CLASSES, ["mdsa"])
    with pytest.raises(DataError, match="expected columns"):
        zscore_reference(df, ["dsa"])
    (tmp_path / "bad.json").write_text('{"format_version": 99}')
    with pytest.raises(FormatError, match="format_version"):
        ZScoreReference.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="z-score reference"):
        ZScoreReference(pd.DataFrame({"class_id": [0]}))


def test_group_scores_equal_torch_nanmean_and_nanquantile_per_group():
    """All groups from one sort per score: means to float rounding, quantiles bit-exact."""
    from saseg.aggregate import group_scores

    rng = np.random.default_rng(0)
    for trial in range(100):
        n = int(rng.integers(1, 300))
        keys = torch.from_numpy(rng.integers(0, 7, n))
        values = torch.from_numpy(rng.standard_normal(n)).float()
        values[torch.from_numpy(rng.random(n) < 0.2)] = float("nan")
        if trial % 5 == 0:
            values[keys == 3] = float("nan")  # an all-NaN group gives NaN
        groups, counts, stats = group_scores({"s": values}, keys)
        np.testing.assert_array_equal(groups, np.unique(keys.numpy()))
        for i, key in enumerate(groups):
            group = values[keys == key].double()
            assert counts[i] == len(group)
            np.testing.assert_allclose(stats["s"][i], torch.nanmean(group).item(), rtol=1e-12)
            assert np.array_equal(stats["s_q90"][i], torch.nanquantile(group, 0.9).item(), equal_nan=True)
