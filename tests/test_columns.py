"""The column grammar: one definition of each name rule, the frame IoU, the ranking default and the hashes."""

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saseg.columns import (FRAME, default_ranking_score, frame_column, frame_score_columns,
                           frame_score_names, frame_target_iou, group_column, id_set_sha256,
                           ids_sha256, parse_score_column, require_columns, target_column)
from saseg.data import open_dataset
from saseg.errors import DataError, FormatError

SRC = Path(__file__).resolve().parents[1] / "src" / "saseg"


def test_names_round_trip_through_the_parser():
    assert frame_column("mdsa") == "frame_mdsa"
    assert group_column("lanes", "mdsa") == "group_lanes_mdsa"
    assert target_column(FRAME, "risk") == "frame_risk"
    assert target_column("lanes", "risk") == "group_lanes_risk"
    assert parse_score_column("frame_mdsa") == [("frame", "mdsa")]
    assert parse_score_column("group_lanes_mdsa", ["lanes"]) == [("lanes", "mdsa")]
    # a group name with "_" that prefixes another: the longer one first
    assert parse_score_column("group_road_side_lsa", ["road", "road_side"]) == [
        ("road_side", "lsa"), ("road", "side_lsa")]
    assert parse_score_column("frame_id") == [] and parse_score_column("n_segments") == []
    assert parse_score_column("group_lanes_", ["lanes"]) == []


def test_frame_score_columns_skip_the_keys():
    cols = ["frame_id", "frame_index", "source", "n_segments", "group_a_mdsa", "frame_mdsa", "frame_risk"]
    assert frame_score_columns(cols) == ["frame_mdsa", "frame_risk"]
    assert frame_score_names(cols) == ["mdsa", "risk"]


def test_default_ranking_score_is_one_rule():
    assert default_ranking_score(["frame_mdsa", "frame_risk"], ["mdsa", "risk"]) == "frame_risk"
    assert default_ranking_score(["frame_entropy", "frame_lsa"], ["lsa", "entropy"]) == "frame_lsa"
    assert default_ranking_score(["frame_id", "frame_entropy"]) == "frame_entropy"
    with pytest.raises(DataError, match="frame score column"):
        default_ranking_score(["frame_id", "frame_index"])


def test_frame_target_iou_is_the_mean_class_iou():
    iou = pd.DataFrame({
        "frame_id": ["a", "a", "a", "b", "b"],
        "kind": ["class", "class", "group", "class", "group"],
        "iou": [0.2, 0.6, 0.0, 1.0, 0.5],
    })
    got = frame_target_iou(iou)
    assert got.name == "iou"
    assert got.to_dict() == pytest.approx({"a": 0.4, "b": 1.0})


def test_hashes_pinned():
    ids = ["b", "a", "帧1"]
    ordered = hashlib.sha256(b"".join(i.encode() + b"\0" for i in ids)).hexdigest()
    assert ids_sha256(ids) == ordered
    assert id_set_sha256(ids) == ids_sha256(sorted(ids)) == id_set_sha256(reversed(ids))
    assert ids_sha256(ids) != ids_sha256(reversed(ids))
    dataset = open_dataset("synthetic:n=3,seed=0,size=32x24")
    assert dataset.fingerprint()["ids_sha256"] == ids_sha256(dataset.frame_id(i) for i in range(3))


def test_require_columns_names_the_table():
    df = pd.DataFrame({"a": [1]})
    require_columns(df, ["a"], "t")
    with pytest.raises(DataError, match=r"t: expected columns \['b'\]"):
        require_columns(df, ["a", "b"], "t")
    with pytest.raises(FormatError):
        require_columns(df, ["b"], "f.csv", error=FormatError)


@pytest.mark.parametrize("pattern", [
    r'"(iou\.parquet|eval\.json|tradeoff\.csv|correlation\.csv|max_skip\.csv|agreement\.csv|'
    r'plan\.csv|plan\.json|guarantee_curve\.csv|risk_coverage\.png|run_quality\.json|oof\.parquet)"',
    r'startswith\(\s*f?"(frame|group)_',
    r'f"(frame|group)_\{',
])
def test_no_file_name_or_prefix_rule_outside_its_home(pattern):
    """Eval, plan and quality file names live in saseg.layout; the column grammar in saseg.columns."""
    homes = {SRC / "columns.py", *(SRC / "layout").glob("*.py")}
    offenders = [f"{path.relative_to(SRC)}:{n}" for path in SRC.rglob("*.py") if path not in homes
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(pattern, line)]
    assert offenders == []


def test_frame_iou_defined_once():
    """Only saseg.columns averages class IoU per frame."""
    pattern = re.compile(r'groupby\("frame_id"\)\["iou"\]\.mean\(\)')
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p != SRC / "columns.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert np.isfinite(frame_target_iou(pd.DataFrame({"frame_id": ["x"], "kind": ["class"], "iou": [0.5]}))).all()


def test_analysis_reads_no_run_or_eval_folder():
    """The analysis functions take tables; reading run and eval folders is the commands' work
    (`saseg.commands`), which sit above them (issue 22). (A fitted object may still save and
    load its own folder: `Plan`, `RunQuality`, `AuditResult`.)"""
    pattern = re.compile(r"\b(RunDir|EvalDir)\b")
    offenders = [f"{p.relative_to(SRC)}:{n}" for p in (SRC / "analysis").glob("*.py")
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []
