import json
import math

import numpy as np
import pandas as pd
import pytest

from saseg.analysis.plan import Plan, PriceModel, plan
from saseg.errors import DataError


def _frames():
    # frame_index: 0..7, scores with a tie (0.2 twice) and one NaN
    score = [0.9, 0.2, 0.5, np.nan, 0.2, 0.7, 0.1, 0.4]
    return pd.DataFrame({"frame_id": [f"f{i}" for i in range(8)], "frame_index": range(8),
                         "source": "mem", "frame_mdsa": score,
                         "n_segments": [5, 6, 7, 8, 5, 6, 7, 10]})


def test_price_tiers_by_hand():
    p = PriceModel()
    assert p.cost(0) == 0
    assert p.cost(1) == pytest.approx(0.87)
    assert p.cost(50_000) == pytest.approx(50_000 * 0.87)
    assert p.cost(50_001) == pytest.approx(50_000 * 0.87 + 0.85)
    assert p.cost(120_000) == pytest.approx(43_500 + 70_000 * 0.85)
    three = PriceModel(tiers=((10, 2.0), (20, 1.0), (math.inf, 0.5)))
    assert three.cost(25) == pytest.approx(10 * 2 + 10 * 1 + 5 * 0.5)
    np.testing.assert_array_equal(PriceModel(annotators=3).units([5, 10]), [15, 30])
    np.testing.assert_array_equal(PriceModel(segments_per_frame=4, annotators=2).units([5, 10]), [8, 8])
    with pytest.raises(DataError, match="cover"):
        PriceModel(tiers=((10, 1.0),)).cost(11)
    with pytest.raises(DataError, match="non-negative"):
        PriceModel().cost(-1)
    with pytest.raises(DataError, match="annotator"):
        PriceModel(annotators=0).units([1])


def test_skip_ratio_ranking_and_nan_labelled():
    p = plan(_frames(), skip_ratio=0.5)
    q = p.queue
    # 7 scored frames -> floor(3.5) = 3 skipped: f6 (0.1), then the tie 0.2: f1 before f4
    assert list(q[q.action == "skip"].frame_id) == ["f4", "f1", "f6"]
    assert list(q[q.action == "label"].frame_id) == ["f0", "f5", "f2", "f7", "f3"]
    assert list(q["rank"]) == list(range(1, 9))
    assert p.summary["nan_frames"] == 1 and p.summary["n_skip"] == 3
    assert p.summary["skip_ratio"] == pytest.approx(3 / 7)
    units = np.array([5, 6, 7, 8, 5, 6, 7, 10]) * 3
    assert p.summary["units_all"] == units.sum()
    assert p.summary["units_plan"] == units[[0, 5, 2, 7, 3]].sum()
    assert p.summary["cost_all_usd"] == pytest.approx(round(units.sum() * 0.87, 2))
    assert p.summary["saved_usd"] == pytest.approx(round(units[[1, 4, 6]].sum() * 0.87, 2))
    assert "labelled anyway" in p.describe()


def test_budget_mode_and_over_budget(caplog):
    p = plan(_frames(), budget=3)
    assert p.summary["n_label"] == 3
    assert list(p.queue[p.queue.action == "label"].frame_id) == ["f0", "f5", "f3"]
    p = plan(_frames(), budget=0)
    assert p.summary["n_label"] == 1 and p.summary["over_budget"]
    assert "Over budget" in p.describe() and "more than the budget" in caplog.text
    p = plan(_frames(), budget=100)
    assert p.summary["n_skip"] == 0


def _pilot():
    r = np.linspace(0, 1, 11)
    below5 = np.array([0, 0, 0.01, 0.02, 0.04, 0.05, 0.08, 0.04, 0.2, 0.3, 0.4])
    below9 = np.clip(below5 * 3, 0, 1)
    one_minus = below5 / 2
    rows = [pd.DataFrame({"skip_ratio": r, "n_skipped": (r * 10).astype(int), "metric": "below_t",
                          "threshold": t, "value": v}) for t, v in ((0.5, below5), (0.9, below9))]
    rows.append(pd.DataFrame({"skip_ratio": r, "n_skipped": (r * 10).astype(int),
                              "metric": "mean_1_minus_iou", "threshold": np.nan, "value": one_minus}))
    return pd.concat(rows, ignore_index=True)


def test_ratio_risk_from_hand_made_pilot_curve():
    frames = pd.concat([_frames()] * 3, ignore_index=True)
    frames["frame_index"] = range(len(frames))
    frames["frame_id"] = [f"g{i}" for i in range(len(frames))]
    frames["frame_mdsa"] = np.arange(len(frames), dtype=float)  # 24 scored frames
    p = plan(frames, ratio_risk=0.05, pilot_curve=_pilot())
    # largest ratio with below_0.5 <= 0.05 is 0.7 (the curve dips back at 0.7)
    assert p.summary["n_skip"] == math.floor(0.7 * 24)
    assert list(p.queue[p.queue.action == "skip"].score) == list(np.arange(16, dtype=float)[::-1])
    exp = p.summary["expected_inaccuracy"]
    ratio = 16 / 24
    assert exp["below_0.5"] == pytest.approx(np.interp(ratio, np.linspace(0, 1, 11), _pilot().value[:11]))
    assert set(exp) == {"below_0.5", "below_0.9", "mean_1_minus_iou"}
    assert "Expected among skipped" in p.describe()
    p = plan(frames, ratio_risk=0.01, threshold=0.9, pilot_curve=_pilot())
    assert p.summary["n_skip"] == math.floor(0.1 * 24)


def test_fixed_segments_and_save(tmp_path):
    frames = _frames().drop(columns="n_segments")
    p = plan(frames, skip_ratio=0.0, price=PriceModel(segments_per_frame=5, annotators=1))
    assert (p.queue.units == 5).all() and p.summary["n_skip"] == 0
    p.save(tmp_path / "out")
    back = pd.read_csv(tmp_path / "out" / "plan.csv")
    assert list(back.columns) == ["rank", "frame_id", "frame_index", "source", "score",
                                  "action", "n_segments", "units"]
    summary = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert summary["n_frames"] == 8 and summary["price"]["tiers"][1][0] is None


def test_bad_inputs():
    f = _frames()
    with pytest.raises(DataError, match="exactly one"):
        plan(f)
    with pytest.raises(DataError, match="exactly one"):
        plan(f, skip_ratio=0.1, budget=2)
    with pytest.raises(DataError, match="pilot_curve"):
        plan(f, ratio_risk=0.1)
    with pytest.raises(DataError, match="ratio_risk"):
        plan(f, ratio_risk=2, pilot_curve=_pilot())
    with pytest.raises(DataError, match="skip_ratio"):
        plan(f, skip_ratio=1.5)
    with pytest.raises(DataError, match="budget"):
        plan(f, budget=-1)
    with pytest.raises(DataError, match="n_segments"):
        plan(f.drop(columns="n_segments"), skip_ratio=0.1)
    with pytest.raises(DataError, match="frame_lsa"):
        plan(f, score="frame_lsa", skip_ratio=0.1)


def test_plan_from_run_with_pilot(tmp_path):
    from saseg.analysis.plan import pilot_curve_for
    from saseg.commands.plan import plan_from_run

    run = tmp_path / "run"
    run.mkdir()
    _frames().to_parquet(run / "frames.parquet")
    (run / "scores.parquet").write_bytes(b"")
    curve = _pilot()
    table = pd.concat([curve.assign(target="frame", kind="frame", score="mdsa", order="sa"),
                       curve.assign(target="frame", kind="frame", score="mdsa", order="oracle",
                                    value=0.0),
                       curve.assign(target="lanes", kind="group", score="mdsa", order="sa",
                                    value=1.0)])
    (tmp_path / "eval").mkdir()
    table.to_csv(tmp_path / "eval" / "tradeoff.csv", index=False)
    p = plan_from_run(run / "scores.parquet", tmp_path / "plan", ratio_risk=0.05,
                      eval_dir=tmp_path / "eval")
    assert p.summary["n_skip"] == math.floor(0.7 * 7)
    assert (tmp_path / "plan" / "plan.csv").exists() and (tmp_path / "plan" / "plan.json").exists()
    assert (pilot_curve_for(table, "group_lanes_mdsa").value == 1.0).all()
    with pytest.raises(DataError, match="expected a curve for 'frame_lsa'"):
        pilot_curve_for(table, "frame_lsa")
    with pytest.raises(DataError, match="frames.parquet"):
        plan_from_run(tmp_path / "nowhere" / "scores.parquet", tmp_path / "p2", skip_ratio=0.1)
    with pytest.raises(DataError, match="tradeoff.csv"):
        plan_from_run(run / "scores.parquet", tmp_path / "p3", skip_ratio=0.1, eval_dir=tmp_path)


def test_a_text_column_is_no_score():
    with pytest.raises(DataError, match="expected a numeric score column"):
        plan(_frames(), score="frame_id", skip_ratio=0.5)


@pytest.mark.parametrize("bad", [np.nan, -5, 2.5])
def test_segment_counts_that_are_no_counts_are_refused(bad):
    frames = _frames().astype({"n_segments": np.float64})
    frames.loc[2, "n_segments"] = bad
    with pytest.raises(DataError, match="expected n_segments as whole non-negative counts"):
        plan(frames, skip_ratio=0.5)
