"""EvalDir, PlanDir and QualityDir: the one home of each folder's file names."""

import pandas as pd
import pytest

from saseg.errors import DataError, FormatError
from saseg.io import write_json, write_parquet
from saseg.layout import EvalDir, PlanDir, QualityDir


def test_eval_dir_paths_and_reads(tmp_path):
    ev = EvalDir(tmp_path)
    assert (ev.iou_path.name, ev.summary_path.name, ev.tradeoff_path.name) == (
        "iou.parquet", "eval.json", "tradeoff.csv")
    assert ev.iou_plot_path("mdsa").name == "iou_vs_mdsa.png"
    assert ev.tradeoff_plot_path("risk").name == "tradeoff_risk.png"
    assert not ev.is_evaluated
    with pytest.raises(DataError, match="iou.parquet and eval.json"):
        ev.require()
    with pytest.raises(DataError, match="does not exist"):
        ev.iou()
    write_parquet(ev.iou_path, pd.DataFrame({"frame_id": ["a"], "iou": [0.5]}))
    write_json(ev.summary_path, {"scores": "x"})
    assert ev.require() is ev and ev.iou()["iou"].tolist() == [0.5]
    assert ev.summary() == {"scores": "x"}
    ev.iou_path.write_bytes(b"not parquet")
    with pytest.raises(FormatError, match="cannot be read"):
        ev.iou()
    write_json(ev.summary_path, [1])
    with pytest.raises(FormatError, match="JSON object"):
        ev.summary()


def test_plan_dir_paths(tmp_path):
    plan = PlanDir(tmp_path)
    assert plan.queue_path.name == "plan.csv" and plan.summary_path.name == "plan.json"
    assert plan.guarantee_curve_path.name == "guarantee_curve.csv"
    assert plan.risk_coverage_path.name == "risk_coverage.png"
    assert not plan.is_planned


def test_quality_dir_refuses_foreign_folders(tmp_path):
    q = QualityDir(tmp_path)
    assert [q.target_folder(t, i) for i, t in enumerate(["class", "lanes", "frame"])] == [
        "class", "group1", "frame"]
    assert q.oof_path("group1") == tmp_path / "group1" / "oof.parquet"
    for bad in ("../x", "group", "class/..", "/etc"):
        with pytest.raises(FormatError, match="bad target folder"):
            q.model_dir(bad)
