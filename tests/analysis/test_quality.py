"""Quality models over runs: fit on a pilot, apply to a pool, honest on the pilot itself."""

import json

import numpy as np
import pandas as pd
import pytest

from saseg.commands.plan import plan_from_run
from saseg.analysis.quality import RunQuality, target_features
from saseg.commands.quality import apply_quality, fit_quality
from saseg.columns import drive_of
from saseg.errors import DataError, FormatError
from saseg.evaluation import evaluate
from saseg.pipeline import score
from saseg.layout import RunDir

PILOT = "synthetic:n=24,seed=5,size=64x48,split=test,drive_len=6"
POOL = "synthetic:n=12,seed=6,size=64x48,split=test,drive_len=6"


@pytest.fixture(scope="module")
def pilot_and_pool(tiny_model_dir, tiny_sa_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("triage")
    for name, spec in (("pilot", PILOT), ("pool", POOL)):
        score(tiny_model_dir, tiny_sa_dir, spec, root / name / "scores.parquet", pixels_per_class=30,
              batch_size=6, progress=False)
        evaluate(root / name / "scores.parquet", None, root / name / "eval", plots=False, progress=False)
    return root


def test_drive_of():
    assert drive_of("d003/00012") == "d003"
    assert drive_of("0001TP_006690") == "0001TP"
    assert drive_of("frame7") == ""


def _predict(quality: RunQuality, run: RunDir):
    """`RunQuality.predict` on a run folder's tables."""
    return quality.predict(run.scores(), run.frames(), run.meta(), where=run.root)


def test_fit_apply_round_trip_without_pickle(pilot_and_pool, tmp_path):
    root = pilot_and_pool
    fitted = fit_quality(root / "pilot", root / "pilot" / "eval", tmp_path / "q")
    files = sorted(p.relative_to(tmp_path / "q").as_posix() for p in (tmp_path / "q").rglob("*") if p.is_file())
    assert "run_quality.json" in files and "class/quality.json" in files and "frame/quality.json" in files
    assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files)
    assert fitted.models_["class"].cv_["n_groups"] == 4  # four drives of six frames
    loaded = RunQuality.load(tmp_path / "q")
    pool = RunDir(root / "pool")
    a_scores, a_frames = _predict(fitted, pool)
    b_scores, b_frames = _predict(loaded, pool)
    np.testing.assert_allclose(a_scores["risk"], b_scores["risk"])
    np.testing.assert_allclose(a_frames["frame_risk"], b_frames["frame_risk"])
    assert ((a_scores["risk"] >= 0) & (a_scores["risk"] <= 1)).all()
    np.testing.assert_allclose(a_scores["quality"], 1 - a_scores["risk"])


def test_pilot_gets_out_of_fold_risk(pilot_and_pool, tmp_path):
    root = pilot_and_pool
    fitted = fit_quality(root / "pilot", root / "pilot" / "eval", tmp_path / "q")
    scores, frames = _predict(fitted, RunDir(root / "pilot"))
    oof = fitted.oof_["frame"].set_index("key")["oof"]
    np.testing.assert_allclose(frames["frame_quality"], frames["frame_id"].map(oof))
    in_sample = fitted.models_["frame"].predict(
        target_features(RunDir(root / "pilot").scores(), RunDir(root / "pilot").frames(),
                        fitted.score_columns_, None, "frame").reset_index(drop=True))
    assert not np.allclose(in_sample, frames["frame_quality"])


def test_apply_then_plan_with_guarantee(pilot_and_pool, tmp_path):
    root = pilot_and_pool
    fit_quality(root / "pilot", root / "pilot" / "eval", tmp_path / "q")
    for name in ("pilot", "pool"):
        apply_quality(root / name, tmp_path / "q")
        assert "risk" in RunDir(root / name).score_columns()
    p = plan_from_run(root / "pool" / "scores.parquet", tmp_path / "plan", max_risk=0.05,
                      calibration=root / "pilot" / "eval", confidence=0.9)
    s = p.summary
    assert s["score"] == "frame_risk" and s["mode"] == "guarantee"
    assert s["guarantee"]["threshold"] is None and s["n_skip"] == 0  # 24 pilot frames < 45 needed
    assert s["guarantee"]["frames_needed"] == 45 and len(s["shift"]) == 2
    assert json.loads((tmp_path / "plan" / "plan.json").read_text())["guarantee"]["confidence"] == 0.9
    with pytest.raises(DataError, match="together"):
        plan_from_run(root / "pool" / "scores.parquet", tmp_path / "p2", max_risk=0.05)


def test_bad_quality_dirs(pilot_and_pool, tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "run_quality.json").write_text('{"format": "other"}')
    with pytest.raises(FormatError, match="saseg quality dir"):
        RunQuality.load(tmp_path / "q")
    with pytest.raises(DataError, match="iou.parquet"):
        fit_quality(pilot_and_pool / "pilot", tmp_path, tmp_path / "q2")


def test_scores_without_features_are_refused(tiny_model_dir, tiny_sa_dir, tmp_path, pilot_and_pool):
    score(tiny_model_dir, tiny_sa_dir, POOL, tmp_path / "plain" / "scores.parquet", pixels_per_class=10,
          batch_size=6, progress=False, features=False)
    fitted = fit_quality(pilot_and_pool / "pilot", pilot_and_pool / "pilot" / "eval", tmp_path / "q")
    with pytest.raises(DataError, match="scored with features"):
        _predict(fitted, RunDir(tmp_path / "plain"))


def test_rows_cover_likely_missed_classes(pilot_and_pool):
    scores = pd.read_parquet(pilot_and_pool / "pilot" / "scores.parquet")
    missed = scores[scores["n_pixels"] == 0]
    assert scores["mdsa"][missed.index].isna().all() and (missed["plugin_iou"] == 0).all()
    frames = pd.read_parquet(pilot_and_pool / "pilot" / "frames.parquet")
    predicted = scores[scores["n_pixels"] > 0].groupby("frame_id")["class_id"].nunique()
    assert (frames.set_index("frame_id")["n_segments"] == predicted).all()


def test_apply_that_fails_while_writing_leaves_the_run_as_it_was(pilot_and_pool, tmp_path, monkeypatch):
    """The three files are written before any replaces its own: a full disk mixes nothing."""
    import shutil

    import saseg.layout.run

    root = pilot_and_pool
    fit_quality(root / "pilot", root / "pilot" / "eval", tmp_path / "q")
    run = tmp_path / "pool"
    shutil.copytree(root / "pool", run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saseg.layout.run, "json_text", full)  # the last of the three
    with pytest.raises(OSError):
        apply_quality(run, tmp_path / "q")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    monkeypatch.undo()
    apply_quality(run, tmp_path / "q")
    assert "risk" in RunDir(run).score_columns() and "risk" in RunDir(run).scores().columns


def test_fit_refuses_the_evaluation_of_another_run(pilot_and_pool, tmp_path):
    """Its IoUs are of other predictions; frame ids alone can repeat across data sets."""
    root = pilot_and_pool
    evaluate(root / "pool" / "scores.parquet", None, tmp_path / "pool_eval", plots=False)
    with pytest.raises(DataError, match="evaluated another run"):
        fit_quality(root / "pilot", tmp_path / "pool_eval", tmp_path / "q")
    assert not (tmp_path / "q").exists()
    fit_quality(root / "pilot", root / "pilot" / "eval", tmp_path / "q")  # its own: fine
