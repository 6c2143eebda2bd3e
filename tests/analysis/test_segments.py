"""Segment plans: truth per segment, losses against a brute-force loop, calibration against scipy,
validity over splits with frames as the unit, and the price."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from saseg.analysis.bounds import crc_index, fixed_sequence, p_values
from saseg.analysis.plan import PriceModel
from saseg.analysis.segment_plan import calibrate_segments, plan_segments, segment_losses
from saseg.analysis.segments import (SegmentTable, accept, class_losses, label_error_losses, realised,
                                     segment_table, skip_precision_losses, threshold_grid)
from saseg.errors import DataError

NAMES = ["Sky", "Road", "Car", "Pedestrian"]


def _scores(rows):
    """rows: (frame, class_id, n_pixels, risk)."""
    df = pd.DataFrame(rows, columns=["frame_id", "class_id", "n_pixels", "risk"])
    df["class_name"] = [NAMES[c] for c in df["class_id"]]
    df["frame_index"] = df["frame_id"].str[1:].astype(int)
    df["source"] = "x"
    df["plugin_iou"] = 1 - df["risk"] / 2
    return df


def _iou(rows):
    """rows: (frame, class_id, iou, n_label)."""
    df = pd.DataFrame(rows, columns=["frame_id", "class_id", "iou", "n_label"])
    df["target"] = [NAMES[c] for c in df["class_id"]]
    df["kind"] = "class"
    return df


def _toy():
    scores = _scores([("f0", 0, 100, 0.1), ("f0", 1, 100, 0.2),            # f0: fine, but Car missed
                      ("f1", 0, 100, 0.1), ("f1", 2, 0, 0.3),              # f1: likely Car, absent: right
                      ("f2", 1, 100, 0.1), ("f2", 3, 50, 0.4),             # f2: Pedestrian not in label
                      ("f3", 0, 100, np.nan)])                             # f3: unscored
    iou = _iou([("f0", 0, 0.9, 100), ("f0", 1, 0.8, 90), ("f0", 2, 0.0, 20),
                ("f1", 0, 0.9, 100),
                ("f2", 1, 0.7, 100), ("f2", 3, 0.0, 0),
                ("f3", 0, 0.9, 100)])
    return segment_table(scores, "risk", 4, iou, 0.5), scores


def test_truth_missed_and_absent_classes():
    t, _ = _toy()
    assert t.wrong.tolist() == [False, False, False, False, False, True, False]
    assert t.missed.tolist() == [1, 0, 0, 0] and t.missed_classes[0] == ["Car"]
    grid = threshold_grid(t.score)
    assert grid.tolist() == [0.1, 0.2, 0.3, 0.4]
    L = label_error_losses(t, grid)
    # f0 is skipped whole from 0.2 on: its missed Car is a wrongly accepted segment (1 of 3)
    assert L[0].tolist() == [0, 1 / 3, 1 / 3, 1 / 3]
    assert L[1].tolist() == [0, 0, 0, 0]            # the likely Car absent from the label is right
    assert L[2].tolist() == [0, 0, 0, 0.5]          # the Pedestrian false positive
    assert L[3].tolist() == [0, 0, 0, 0]            # never accepted (NaN)
    accepted, skipped = accept(t, 0.4)
    assert skipped.tolist() == [True, True, True, False]
    r = realised(t, accepted, skipped)
    assert r["missed_accepted"] == 1 and r["wrong_share_of_segments"] == pytest.approx(2 / 8)
    assert r["wrong_among_accepted"] == pytest.approx(2 / 7)
    assert class_losses(t, grid, "Car")[:, -1].tolist() == [1, 0]  # f0 (missed) and f1 (likely, right)
    assert segment_table(_toy()[1], "plugin_risk", 4).score[0] == pytest.approx(0.05)


def _random_table(rng, n_frames, n_classes=8):
    rows, wrong, missed = [], [], []
    for i in range(n_frames):
        k = rng.integers(1, n_classes - 1)
        hard = rng.uniform() < 0.3  # frame effect: segments of one frame fail together
        for c in rng.choice(n_classes, k, replace=False):
            s = rng.uniform()
            rows.append((i, c, s))
            wrong.append(rng.uniform() < (0.5 if hard else 0.1) * s)
        missed.append(int(rng.uniform() < 0.05))
    rows = np.array(rows)
    names = np.array([f"c{int(c)}" for c in rows[:, 1]])
    scores = np.where(rng.uniform(size=len(rows)) < 0.02, np.nan, rows[:, 2])
    return SegmentTable(frame_ids=np.array([f"f{i}" for i in range(n_frames)]), row_frame=rows[:, 0].astype(int),
                        class_id=rows[:, 1].astype(int), class_name=names, score=scores,
                        wrong=np.array(wrong), missed=np.array(missed),
                        missed_classes=[["c0"] * m for m in missed], n_classes=n_classes)


def _brute_losses(t, lam, alpha=None):
    out = []
    for i in range(t.n_frames):
        r = t.row_frame == i
        acc = np.isfinite(t.score[r]) & (t.score[r] <= lam)
        whole = acc.all()
        W = (acc & t.wrong[r]).sum() + whole * t.missed[i]
        A = acc.sum() + whole * t.missed[i]
        S = r.sum() + t.missed[i]
        out.append(W / S if alpha is None else (W - alpha * A) / t.n_classes + alpha)
    return np.array(out)


def test_losses_match_a_brute_force_loop():
    t = _random_table(np.random.default_rng(0), 40)
    grid = threshold_grid(t.score)
    L, X = label_error_losses(t, grid), skip_precision_losses(t, grid, 0.1)
    for j in range(0, len(grid), 7):
        assert np.allclose(L[:, j], _brute_losses(t, grid[j]))
        assert np.allclose(X[:, j], _brute_losses(t, grid[j], 0.1))
    assert np.all(np.diff(L, axis=1) >= 0)


def test_calibration_against_scipy_hb():
    t = _random_table(np.random.default_rng(1), 300)
    g = calibrate_segments(t, score="risk", alpha=0.1, delta=0.1, bound="hb")
    grid = threshold_grid(t.score)
    best = None
    L = label_error_losses(t, grid)  # checked against the loop above
    for j, lam in enumerate(grid):  # brute force: Hoeffding-Bentkus by hand with scipy, in sequence
        losses = L[:, j]
        n, mean = len(losses), losses.mean()
        a = min(mean, 0.1)
        h = (a * math.log(a / 0.1) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / 0.9)
        p = min(1.0, math.exp(-n * h), math.e * binom.cdf(math.ceil(n * mean - 1e-9), n, 0.1))
        if p > 0.1:
            break
        best = lam
    assert best is not None and g.threshold == best
    assert g.pilot["label_error"] <= 0.1


def test_small_pilot_and_failing_pilot_say_why():
    small = _random_table(np.random.default_rng(2), 12)
    g = calibrate_segments(small, score="risk", alpha=0.05, delta=0.1)
    assert g.threshold is None and "too few pilot frames" in g.describe()
    bad = _random_table(np.random.default_rng(3), 200)
    bad.wrong[:] = True
    g = calibrate_segments(bad, score="risk", alpha=0.05, delta=0.1, promise="skip-precision")
    assert g.threshold is None and "little power" in g.describe()
    # one wrong segment per frame, all tied: the most cautious threshold already accepts them all
    tied = SegmentTable(frame_ids=np.array([f"f{i}" for i in range(200)]), row_frame=np.arange(200),
                        class_id=np.zeros(200, int), class_name=np.array(["c0"] * 200), score=np.full(200, 0.5),
                        wrong=np.ones(200, bool), missed=np.zeros(200, int), missed_classes=[[]] * 200, n_classes=4)
    g = calibrate_segments(tied, score="risk", alpha=0.05, delta=0.1)
    assert g.threshold is None and "too many failures" in g.describe() and "would not help" in g.describe()
    g = calibrate_segments(small, score="risk", alpha=0.05, in_expectation=True)
    assert g.threshold is None and "at least 19" in g.describe()


@pytest.mark.parametrize("promise,in_expectation", [("label-error", False), ("skip-precision", False),
                                                    ("label-error", True)])
def test_validity_over_splits_with_frames_as_unit(promise, in_expectation):
    """Pilots of 120 frames from a population of 3000: the realised promise on the population."""
    rng = np.random.default_rng(4)
    pop = _random_table(rng, 3000)
    grid = np.linspace(0, 1, 51)
    alpha, delta, splits = 0.1, 0.1, 150
    L = label_error_losses(pop, grid)
    W_minus = skip_precision_losses(pop, grid, alpha)  # E[X] <= alpha  <=>  E[W] <= alpha E[A]
    truth = (L if promise == "label-error" else W_minus).mean(0)
    full = segment_losses(pop, grid, promise, alpha, in_expectation)
    outcomes, certified = [], 0
    for s in range(splits):
        pick = rng.choice(pop.n_frames, 120, replace=False)
        losses = full[pick]
        j = crc_index(losses, alpha) if in_expectation else fixed_sequence(p_values(losses, alpha, delta), delta)
        certified += j >= 0
        outcomes.append(truth[j] if j >= 0 else 0.0)
    outcomes = np.array(outcomes)
    if in_expectation:
        assert outcomes.mean() <= alpha + 2 * outcomes.std() / math.sqrt(splits)
    else:
        assert np.mean(outcomes > alpha) <= delta + 2 * math.sqrt(delta * (1 - delta) / splits)
    if promise == "label-error":
        assert certified > splits / 2


def test_per_class_caps_its_class_and_the_whole_frame_skip():
    t = _random_table(np.random.default_rng(5), 400)
    g = calibrate_segments(t, score="risk", alpha=0.1, delta=0.1, per_class=["c3"])
    assert g.threshold is not None and "c3" in g.class_thresholds
    cap = g.class_thresholds["c3"]
    accepted, skipped = accept(t, g.threshold, g.class_thresholds)
    c3 = t.class_name == "c3"
    assert not np.any(accepted[c3] & (t.score[c3] > min(cap if cap is not None else -np.inf, g.threshold)))
    assert np.all(t.frame_max()[skipped] <= min(g.threshold, cap if cap is not None else -np.inf))
    with pytest.raises(DataError, match="per-class"):
        calibrate_segments(t, score="risk", per_class=["Unicorn"])
    with pytest.raises(DataError, match="not monotone"):
        calibrate_segments(t, score="risk", promise="skip-precision", in_expectation=True)


def test_plan_prices_segments_and_marks_them(tmp_path):
    t, scores = _toy()
    g = calibrate_segments(t, score="risk", alpha=0.5, delta=0.5, in_expectation=True)
    g.threshold = 0.2  # as if certified: accept the risk <= 0.2 segments
    plan = plan_segments(scores, segment_table(scores, "risk", 4), g,
                         price=PriceModel(annotators=3), review=0.5)
    s = plan.summary
    assert s["n_segments"] == 7 and s["n_accepted"] == 4 and s["n_skip"] == 1  # f0 whole
    assert s["units_all"] == 21 and s["units_plan"] == pytest.approx(3 * 3 + 0.5 * 4)
    assert s["cost_plan_usd"] == pytest.approx(round(11 * 0.87, 2))
    assert plan.queue["action"].tolist()[-1] == "skip" and plan.queue["frame_id"].tolist()[-1] == "f0"
    path = plan.save(tmp_path)
    seg = pd.read_csv(tmp_path / "segments.csv")
    assert path.name == "plan.csv" and (seg["action"] == "accept").sum() == 4
    assert "Segment plan: accept 4 of 7" in plan.describe()
    with pytest.raises(DataError, match="review"):
        plan_segments(scores, segment_table(scores, "risk", 4), g, review=-1)


def test_hindsight_and_oracle_against_brute_force():
    from saseg.analysis.segments import hindsight, oracle_score
    t = _random_table(np.random.default_rng(6), 60)
    h = hindsight(t, 0.05)
    best = None
    for lam in threshold_grid(t.score):
        if _brute_losses(t, lam).mean() > 0.05:
            break
        best = lam
    assert h["threshold"] == best
    assert h["accepted_rows_share"] == pytest.approx(np.mean(np.isfinite(t.score) & (t.score <= best)))
    t.score = oracle_score(t)
    assert hindsight(t, 0.05)["accepted_rows_share"] >= h["accepted_rows_share"]
    t.missed[:] = 0  # without missed classes, the oracle at ALPHA 0 accepts exactly the right segments
    t.score = oracle_score(t)
    assert hindsight(t, 0.0)["accepted_rows_share"] == pytest.approx(np.mean(~t.wrong))


def test_compare_scores_judges_nan_rows_both_ways():
    from saseg.analysis.segment_compare import compare_scores
    _, scores = _toy()
    scores["mdsa"] = [0.1, 0.2, 0.1, np.nan, 0.1, 0.4, np.nan]  # no SA on the likely row and f3
    iou = _iou([("f0", 0, 0.9, 100), ("f0", 1, 0.8, 90), ("f1", 0, 0.9, 100), ("f2", 1, 0.7, 100),
                ("f2", 3, 0.0, 0), ("f3", 0, 0.9, 100)])
    table = compare_scores(scores, iou, 4, ["mdsa", "risk", "plugin_risk"], alpha=0.0)
    r = table.set_index("score")
    assert r.loc["risk", "n_all"] == 7 and r.loc["risk", "n_shared"] == 5
    assert r.loc["risk", "all_rows"] == pytest.approx(5 / 7)  # all but the Pedestrian FP and NaN f3
    assert r.loc["mdsa", "all_rows"] == pytest.approx(4 / 7)   # its NaN likely row is labelled
    assert r.loc["mdsa", "shared_rows"] == pytest.approx(r.loc["risk", "shared_rows"])
    assert r.loc["oracle", "all_rows"] == pytest.approx(6 / 7)


def test_subset_keeps_the_frames_segments():
    from saseg.analysis.segments import subset
    t = _random_table(np.random.default_rng(7), 30)
    pick = np.array([3, 10, 11, 25])
    s = subset(t, pick)
    grid = threshold_grid(t.score)
    assert np.allclose(label_error_losses(s, grid), label_error_losses(t, grid)[pick])
    assert s.frame_ids.tolist() == t.frame_ids[pick].tolist() and s.missed.tolist() == t.missed[pick].tolist()


def test_a_frame_plan_saved_over_a_segment_plan_drops_its_marks(tmp_path):
    from saseg.analysis.plan import plan
    t, scores = _toy()
    g = calibrate_segments(t, score="risk", alpha=0.5, delta=0.5, in_expectation=True)
    plan_segments(scores, segment_table(scores, "risk", 4), g).save(tmp_path)
    assert (tmp_path / "segments.csv").exists()
    frames = pd.DataFrame({"frame_id": ["f0", "f1"], "frame_index": [0, 1], "source": "x",
                           "frame_risk": [0.1, 0.2], "n_segments": [2, 2]})
    plan(frames, score="frame_risk", skip_ratio=0.5).save(tmp_path)
    assert not (tmp_path / "segments.csv").exists()


def test_calibrate_segments_end_to_end_validity():
    """calibrate_segments itself (its grid is the pilot's scores) over 150 pilots of 120 frames:
    the population's label error at the certified threshold exceeds ALPHA in <= DELTA of them."""
    from saseg.analysis.segments import subset
    rng = np.random.default_rng(8)
    pop = _random_table(rng, 3000)
    alpha, delta, splits = 0.1, 0.1, 150
    violations, accepted = 0, []
    for _ in range(splits):
        pilot = subset(pop, rng.choice(pop.n_frames, 120, replace=False))
        g = calibrate_segments(pilot, score="risk", alpha=alpha, delta=delta)
        r = realised(pop, *accept(pop, g.threshold))
        violations += r["label_error"] > alpha
        accepted.append(r["accepted_rows_share"])
    assert violations / splits <= delta + 2 * math.sqrt(delta * (1 - delta) / splits)
    assert np.mean(accepted) > 0.2  # it has power
