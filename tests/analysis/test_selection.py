import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist, pdist

from saseg.analysis.selection import farthest_point_order, select_frames, selection_spread
from saseg.errors import DataError, UnknownClassError

TARGET = 10


def make_scores(n=60, seed=0, d=4, clustered=False):
    """Two rows per frame (road, vehicle); vehicle pixel counts straddle 1000."""
    rng = np.random.default_rng(seed)
    sa = rng.permutation(n).astype(float)  # distinct SAs: quantiles are unambiguous
    pixels = rng.integers(0, 3000, n)
    pixels[:3] = 1000  # exactly at the threshold: not eligible (strictly greater)
    if clustered:  # the 30 % most surprising frames all sit in one tight cluster
        top = sa >= np.quantile(sa, 0.5)
        emb = np.where(top[:, None], rng.normal(0, 0.01, (n, d)), rng.normal(0, 5, (n, d)))
    else:
        emb = rng.normal(size=(n, d))
    rows = []
    for i in range(n):
        fid = f"f{i:03d}"
        rows.append(dict(frame_id=fid, frame_index=i, source="s", class_id=3, class_name="road",
                         n_pixels=5000, mdsa=1.0, at_mean=list(rng.normal(size=d))))
        rows.append(dict(frame_id=fid, frame_index=i, source="s", class_id=TARGET, class_name="vehicle",
                         n_pixels=int(pixels[i]), mdsa=sa[i], at_mean=list(emb[i])))
    return pd.DataFrame(rows).sample(frac=1, random_state=1)  # row order must not matter


def eligible(df, min_pixels=1000):
    v = df[(df.class_id == TARGET) & (df.n_pixels > min_pixels)]
    return v.set_index("frame_id")


def test_eligibility_is_strictly_more_than_min_pixels():
    df = make_scores()
    out = select_frames(df, target_class=TARGET, level="random", size=0.999, seed=0)
    el = eligible(df)
    assert len(out) == round(0.999 * len(el))
    assert set(out.frame_id) <= set(el.index)
    assert not {"f000", "f001", "f002"} & set(out.frame_id)  # exactly 1000 px
    # The whole eligible pool with an int size covering it.
    everything = select_frames(df, target_class="Vehicle", level="random", size=len(el))
    assert set(everything.frame_id) == set(el.index)


@pytest.mark.parametrize("level", ["high", "low"])
def test_high_and_low_draw_only_from_their_30_percent(level):
    df = make_scores()
    el = eligible(df)
    sa = el["mdsa"].to_numpy()
    n_top = math.ceil(0.3 * len(sa))
    bound = np.sort(sa)[::-1][n_top - 1] if level == "high" else np.sort(sa)[n_top - 1]
    seen = set()
    for seed in range(6):
        out = select_frames(df, target_class=TARGET, level=level, size=5, seed=seed)
        picked = el.loc[out.frame_id, "mdsa"].to_numpy()
        assert (picked >= bound).all() if level == "high" else (picked <= bound).all()
        np.testing.assert_array_equal(out["mdsa"], picked)
        seen |= set(out.frame_id)
    assert len(seen) > 5  # different seeds reach different frames of the pool
    assert len(seen) <= n_top


def test_seeding():
    df = make_scores()
    a = select_frames(df, target_class=TARGET, level="high", size=6, seed=1)
    b = select_frames(df.iloc[::-1], target_class=TARGET, level="high", size=6, seed=1)
    c = select_frames(df, target_class=TARGET, level="high", size=6, seed=2)
    assert list(a.frame_id) == list(b.frame_id)
    assert set(a.frame_id) != set(c.frame_id)
    assert list(a.order) == list(range(1, 7))


def test_random_reaches_all_eligible_frames():
    df = make_scores()
    el = eligible(df)
    hits = pd.concat([select_frames(df, target_class=TARGET, level="random", size=10, seed=s)
                      for s in range(40)])
    assert set(hits.frame_id) == set(el.index)


def test_sizes_as_fraction_of_base_or_of_eligible_and_int():
    df = make_scores()
    n_el = len(eligible(df))
    assert len(select_frames(df, target_class=TARGET, level="random", size=0.2)) == round(0.2 * n_el)
    assert len(select_frames(df, target_class=TARGET, level="random", size=0.1, base_size=50)) == 5
    assert len(select_frames(df, target_class=TARGET, level="high", size=3)) == 3
    for bad in (0, -1, 1.0, 1.5, 0.0, True, "3"):
        with pytest.raises(DataError):
            select_frames(df, target_class=TARGET, level="random", size=bad)


def test_size_larger_than_pool_raises_naming_both_numbers():
    df = make_scores()
    n_top = math.ceil(0.3 * len(eligible(df)))
    with pytest.raises(DataError, match=rf"size <= {n_top}.*size {n_top + 1}"):
        select_frames(df, target_class=TARGET, level="high", size=n_top + 1)


def test_pixels_column_for_labelled_counts():
    df = make_scores()
    df["n_label"] = np.where(df.frame_id.isin(["f010", "f011"]), 2000, 0)
    out = select_frames(df, target_class=TARGET, level="random", size=2, pixels_column="n_label")
    assert set(out.frame_id) == {"f010", "f011"}


def test_nan_scores_are_not_eligible():
    df = make_scores()
    df.loc[(df.class_id == TARGET) & (df.frame_id != "f050"), "n_pixels"] = 0
    df.loc[(df.class_id == TARGET) & (df.frame_id == "f049"), ["n_pixels", "mdsa"]] = [5000, np.nan]
    out = select_frames(df, target_class=TARGET, level="random", size=1)
    assert list(out.frame_id) == ["f050"]


def test_diverse_spreads_more_than_top_k_by_sa():
    df = make_scores(n=80, clustered=True)
    k = 6
    div = select_frames(df, target_class=TARGET, level="diverse", size=k, top_fraction=1.0)
    top = eligible(df).sort_values("mdsa", ascending=False).head(k)
    emb = {f: np.array(v) for f, v in eligible(df)["at_mean"].items()}
    spread_div = selection_spread([emb[f] for f in div.frame_id])
    spread_top = selection_spread([emb[f] for f in top.index])
    assert spread_div["min_pairwise"] > 10 * spread_top["min_pairwise"]
    assert spread_div["mean_pairwise"] > 2 * spread_top["mean_pairwise"]
    # The first pick is the most surprising frame; restricted runs stay inside the top 30 %.
    assert div.frame_id.iloc[0] == top.index[0]
    el = eligible(df)
    n_top = math.ceil(0.3 * len(el))
    bound = np.sort(el["mdsa"].to_numpy())[::-1][n_top - 1]
    restricted = select_frames(df, target_class=TARGET, level="diverse", size=k)
    assert (restricted["mdsa"] >= bound).all()
    # Embeddings given as a mapping give the same walk as the at_mean column.
    mapped = select_frames(df.drop(columns="at_mean"), target_class=TARGET, level="diverse",
                           size=k, top_fraction=1.0, embeddings=emb)
    assert list(mapped.frame_id) == list(div.frame_id)


def test_farthest_point_order_matches_brute_force():
    rng = np.random.default_rng(3)
    e, w, ref = rng.normal(size=(30, 5)), rng.uniform(0.2, 1, 30), rng.normal(size=(2, 5))
    picks, dist = farthest_point_order(e, 8, weights=w, reference=ref)
    chosen = list(ref)
    for p, dp in zip(picks, dist):
        d = cdist(e, np.array(chosen)).min(1)  # brute force: distance to every chosen point
        gain = w * d
        gain[[q for q in picks[:len(chosen) - 2]]] = -np.inf
        assert p == int(np.argmax(gain))
        assert dp == pytest.approx(d[p])
        chosen.append(e[p])
    # No reference: the first pick is the heaviest weight, its distance infinite.
    picks, dist = farthest_point_order(e, 2, weights=w)
    assert picks[0] == int(np.argmax(w)) and np.isinf(dist[0])


def test_selection_spread_against_scipy():
    e = np.random.default_rng(0).normal(size=(7, 3))
    s = selection_spread(e)
    assert s["mean_pairwise"] == pytest.approx(pdist(e).mean())
    assert s["min_pairwise"] == pytest.approx(pdist(e).min())
    assert s["n"] == 7
    assert math.isnan(selection_spread(e[:1])["mean_pairwise"])
    assert selection_spread({"a": e[0], "b": e[1]})["n"] == 2
    with pytest.raises(DataError):
        selection_spread(np.zeros(3))


def test_errors():
    df = make_scores()
    with pytest.raises(UnknownClassError):
        select_frames(df, target_class=7, level="high", size=1)
    with pytest.raises(UnknownClassError):
        select_frames(df, target_class="bicycle", level="high", size=1)
    with pytest.raises(DataError, match="more than 99999"):
        select_frames(df, target_class=TARGET, level="high", size=1, min_pixels=99999)
    with pytest.raises(DataError, match="at_mean"):
        select_frames(df.drop(columns="at_mean"), target_class=TARGET, level="diverse", size=2)
    with pytest.raises(DataError, match="embedding for every"):
        select_frames(df.drop(columns="at_mean"), target_class=TARGET, level="diverse", size=2,
                      embeddings={"f999": np.zeros(4)})
    with pytest.raises(DataError, match="level"):
        select_frames(df, target_class=TARGET, level="medium", size=1)
    with pytest.raises(DataError, match="top_fraction"):
        select_frames(df, target_class=TARGET, level="high", size=1, top_fraction=0)
    with pytest.raises(DataError, match="lsa"):
        select_frames(df, target_class=TARGET, level="high", size=1, score="lsa")
    with pytest.raises(DataError, match="duplicate"):
        select_frames(pd.concat([df, df]), target_class=TARGET, level="high", size=1)
    with pytest.raises(DataError, match="one length"):
        bad = df.copy()
        bad["at_mean"] = [list(range(1 + i % 2)) for i in range(len(bad))]
        select_frames(bad, target_class=TARGET, level="diverse", size=3, top_fraction=1.0)
    with pytest.raises(DataError):
        select_frames(df, target_class=TARGET, level="random", size=0.1, base_size=0)
    e = np.zeros((4, 2))
    for kwargs in (dict(k=5), dict(k=0), dict(k=2, weights=np.zeros(4)),
                   dict(k=2, reference=np.zeros(3))):
        with pytest.raises(DataError):
            farthest_point_order(e, **kwargs)
    with pytest.raises(DataError, match="finite"):
        farthest_point_order(np.full((3, 2), np.nan), 1)


def test_select_from_scores_writes_csv_and_reports_spread(tmp_path):
    from saseg.commands.selection import select_from_scores

    df = make_scores()
    df.to_parquet(tmp_path / "scores.parquet")
    chosen, spread = select_from_scores(tmp_path / "scores.parquet", tmp_path / "sel.csv",
                                        target_class="vehicle", level="diverse", size=4)
    written = pd.read_csv(tmp_path / "sel.csv")
    assert list(written.frame_id) == list(chosen.frame_id) and len(written) == 4
    emb = eligible(df).loc[chosen.frame_id, "at_mean"]
    assert spread["mean_pairwise"] == pytest.approx(pdist(np.stack(emb.to_list())).mean())
    df.drop(columns="at_mean").to_parquet(tmp_path / "plain.parquet")
    _, spread = select_from_scores(tmp_path / "plain.parquet", tmp_path / "sel2.csv",
                                   target_class=TARGET, level="high", size=2)
    assert math.isnan(spread["mean_pairwise"])
    with pytest.raises(DataError, match="cannot be read"):
        select_from_scores(tmp_path / "missing.parquet", tmp_path / "x.csv", target_class=TARGET,
                           level="high", size=1)


def test_a_text_column_is_no_score():
    scores = pd.DataFrame({"frame_id": ["a", "b"], "frame_index": [0, 1], "source": ["", ""], "class_id": [0, 0],
                           "class_name": ["road", "road"], "n_pixels": [5000, 5000], "mdsa": [1.0, 2.0]})
    with pytest.raises(DataError, match="expected a numeric score column"):
        select_frames(scores, target_class=0, level="high", size=1, score="class_name")
