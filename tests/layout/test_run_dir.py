"""RunDir: the run directory's layout, its checked frame-id paths, and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from saseg.errors import DataError, FormatError
from saseg.layout import RunDir, frame_relpath


@pytest.mark.parametrize("frame_id", ["/etc/passwd", "../x", "a/../../b", "a//b", "", ".", "a/./b",
                                      "C:/x", "c:", "\\\\server\\share", "a\x00b"])
def test_frame_ids_that_would_leave_the_folder_are_refused(frame_id):
    with pytest.raises(DataError, match="frame id"):
        frame_relpath(frame_id, ".png")


def test_frame_ids_map_to_nested_relative_paths():
    assert str(frame_relpath("d000/00012", ".png")) == "d000/00012.png"
    assert str(frame_relpath("0001TP_006690", ".png")) == "0001TP_006690.png"
    assert str(frame_relpath("x:1", ".png")) == "x:1.png"  # a colon is fine past a drive letter


def test_predictions_round_trip_and_stay_inside(tmp_path):
    run = RunDir(tmp_path / "run")
    pred = torch.randint(0, 11, (6, 7))
    run.write_prediction("d0/000001", pred)
    assert (tmp_path / "run" / "predictions" / "d0" / "000001.png").is_file()
    assert np.array_equal(run.prediction("d0/000001"), pred.numpy())
    with pytest.raises(DataError):
        run.write_prediction("../../outside", pred)
    with pytest.raises(DataError):
        run.write_prediction(str(tmp_path / "abs"), pred)
    assert not (tmp_path / "outside.png").exists() and not (tmp_path / "abs.png").exists()
    with pytest.raises(FormatError, match="without --no-predictions"):
        run.prediction("d0/000002")
    path = tmp_path / "run" / "predictions" / "d0" / "000001.png"
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(FormatError, match="000001.png, but it cannot be read"):
        run.prediction("d0/000001")


def test_a_scored_run_reads_back(tiny_run):
    run = RunDir(tiny_run)
    assert run.is_scored and run.has_any_output()
    scores, frames = run.scores(), run.frames()
    assert set(scores["frame_id"]) == set(frames["frame_id"])
    assert run.score_columns()[:3] == ["mdsa", "lsa", "dsa"]
    assert run.classes().names == tuple(run.meta()["classes"]["names"])
    frame_for = run.frame_lookup()
    first = frames.iloc[0]
    assert frame_for(first["frame_id"]).index == first["frame_index"]
    with pytest.raises(DataError, match="not in"):
        frame_for("no/such/frame")
    assert set(run.frame_sources()) == set(frames["frame_id"])
    fitted, provenance = run.sa_model(["mdsa"])
    assert list(fitted) == ["mdsa"] and provenance["model"]["sha256"] == run.model().sha256
    assert RunDir.near(tiny_run / "plan" / "plan.csv").root == tiny_run
    assert RunDir.from_scores(tiny_run / "scores.parquet").scores_path == tiny_run / "scores.parquet"


def test_damaged_runs_give_one_clear_error(tiny_run, tmp_path):
    run_path = tmp_path / "run"
    shutil.copytree(tiny_run, run_path)
    run = RunDir(run_path)
    data = run.scores_path.read_bytes()
    run.scores_path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(FormatError, match="scores.parquet.*cannot be read"):
        run.scores()
    run.frames_path.unlink()
    with pytest.raises(DataError, match="frames.parquet.*does not exist"):
        run.frames()
    meta = json.loads(run.meta_path.read_text())
    del meta["classes"]
    run.meta_path.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="'classes'"):
        RunDir(run_path).classes()
    with pytest.raises(FormatError, match=r"columns \['nope'\]"):
        RunDir(tiny_run).frames(["frame_id", "nope"])
    with pytest.raises(DataError, match="Expected a scored run"):
        RunDir.near(tmp_path / "nowhere" / "plan.csv")


def test_a_frames_table_with_a_frame_twice_is_refused(tiny_run, tmp_path):
    """A plan would queue the frame twice and count its cost twice."""
    shutil.copytree(tiny_run, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    frames = run.frames()
    frames.loc[1] = frames.loc[0]
    frames.to_parquet(run.frames_path)
    with pytest.raises(FormatError, match="one row per frame"):
        run.frames()


def test_a_scores_table_with_a_class_the_run_lacks_is_refused(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    scores = run.scores()
    scores.loc[0, "class_id"] = 99
    scores.to_parquet(run.scores_path)
    with pytest.raises(FormatError, match="expected class ids in 0..10"):
        run.scores()
