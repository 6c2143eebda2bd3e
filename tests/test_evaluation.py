"""evaluate() on the tiny scored run, against IoU and Spearman rho recomputed by brute force."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from conftest import TEST_SPEC
from saseg.data import open_dataset
from saseg.errors import DataError
from saseg.evaluation import evaluate


def saved_prediction(run_dir, frame_id: str) -> np.ndarray:
    """The mask `score` wrote, read straight from the run's files (RUN/predictions/<id>.png)."""
    with Image.open(run_dir / "predictions" / f"{frame_id}.png") as img:
        return np.asarray(img, dtype=np.int64)


def brute_force_iou(pred: np.ndarray, label: np.ndarray, classes) -> dict[tuple[str, str], tuple]:
    """``(kind, target) -> (iou, n_label, n_pred)`` from pixel masks, ignore pixels left out."""
    valid = label != classes.ignore_index
    targets = [("class", name, [c]) for c, name in enumerate(classes.names)]
    targets += [("group", name, list(ids)) for name, ids in classes.groups.items()]
    out = {}
    for kind, name, ids in targets:
        in_pred, in_label = np.isin(pred, ids) & valid, np.isin(label, ids) & valid
        union = int((in_pred | in_label).sum())
        if union:
            out[(kind, name)] = (int((in_pred & in_label).sum()) / union, int(in_label.sum()),
                                 int(in_pred.sum()))
    return out


PER_ROW_COLUMNS = ("frame_id", "frame_index", "source", "class_id", "class_name", "n_pixels", "n_sampled")


def write_varied_run(tiny_run, run, columns=("mdsa", "lsa")):
    """A copy of the tiny run at `run`, with predictions and scores that vary from frame to frame.

    The tiny model predicts one class everywhere, which leaves most correlations undefined.
    Here each frame's prediction is its label with a growing share of pixels (5 % to 59 %) set
    to random classes, and every predicted class, group and frame gets a random SA; the groups
    have no SA in frame 0, as if not predicted there. Only the scores `columns` are kept:
    evaluate's cost grows with targets x scores.
    """
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval", "plan", "predictions"))
    meta = json.loads((run / "score.json").read_text())
    original = pd.read_parquet(run / "scores.parquet")
    other_columns = [c for c in original.columns  # e.g. at_mean, unused by evaluate
                     if c not in PER_ROW_COLUMNS and c.removesuffix("_q90") not in meta["score_columns"]]
    data = open_dataset(TEST_SPEC)
    classes = data.classes
    frames = pd.read_parquet(run / "frames.parquet").set_index("frame_id")
    frames = frames.drop(columns=[f"{target}_{s}" for s in meta["score_columns"]
                                  for target in ["frame", *(f"group_{g}" for g in classes.groups)]])
    columns = meta["score_columns"] = list(columns)
    (run / "score.json").write_text(json.dumps(meta))
    noise_rng, sa_rng = np.random.default_rng(0), np.random.default_rng(1)  # same masks for any columns
    rows = []
    for frame in data:
        pred = np.where(frame.label == classes.ignore_index, 0, frame.label)
        noisy = noise_rng.random(pred.shape) < 0.05 + 0.06 * frame.index
        pred[noisy] = noise_rng.integers(0, classes.num_classes, int(noisy.sum()))
        path = run / "predictions" / f"{frame.frame_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pred.astype(np.uint8)).save(path)
        for c in np.unique(pred):
            n = int((pred == c).sum())
            rows.append({"frame_id": frame.frame_id, "frame_index": frame.index, "source": frame.source,
                         "class_id": int(c), "class_name": classes.names[c], "n_pixels": n,
                         "n_sampled": min(50, n),
                         **{f"{col}{q}": sa_rng.normal() for col in columns for q in ("", "_q90")}})
        for col in columns:
            frames.loc[frame.frame_id, f"frame_{col}"] = sa_rng.normal()
            for group in classes.groups:
                frames.loc[frame.frame_id, f"group_{group}_{col}"] = sa_rng.normal() if frame.index else np.nan
    scores = pd.DataFrame(rows)
    for col in other_columns:
        scores[col] = [original[col].iloc[0]] * len(scores)
    scores.to_parquet(run / "scores.parquet", index=False)
    frames.reset_index().to_parquet(run / "frames.parquet", index=False)
    return run


@pytest.fixture(scope="module")
def varied_run(tiny_run, tmp_path_factory):
    """MDSA and LSA (so the agreement table is written too)."""
    return write_varied_run(tiny_run, tmp_path_factory.mktemp("varied") / "run")


@pytest.fixture(scope="module")
def evaluated(varied_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    summary = evaluate(varied_run / "scores.parquet", None, out, plots=False, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def expected_iou(varied_run):
    """Brute-force IoU of every scored frame: {frame_id: {(kind, target): (iou, n_label, n_pred)}}."""
    data = open_dataset(TEST_SPEC)
    return {frame.frame_id: brute_force_iou(saved_prediction(varied_run, frame.frame_id), frame.label,
                                            data.classes)
            for frame in data}


def test_iou_table_equals_brute_force_per_frame_iou(evaluated, expected_iou):
    out, _ = evaluated
    iou = pd.read_parquet(out / "iou.parquet")
    assert {"frame_id", "frame_index", "target", "kind", "class_id", "iou", "n_label", "n_pred"} <= set(iou.columns)
    got = {(r.frame_id, r.kind, r.target): (r.iou, r.n_label, r.n_pred) for r in iou.itertuples()}
    want = {(fid, kind, target): v for fid, rows in expected_iou.items() for (kind, target), v in rows.items()}
    assert got.keys() == want.keys()
    for key, (value, n_label, n_pred) in want.items():
        assert got[key][0] == pytest.approx(value, abs=1e-12), key
        assert got[key][1:] == (n_label, n_pred), key
    indices = {f.frame_id: f.index for f in open_dataset(TEST_SPEC)}
    assert (iou["frame_index"] == iou["frame_id"].map(indices)).all()
    assert (iou.loc[iou["kind"] == "group", "class_id"] == -1).all()
    assert set(iou["kind"]) == {"class", "group"}  # the tiny run has both, so both were compared


def _expected_rho(sa, iou):
    """scipy's rho, or NaN where the correlation is undefined (< 3 pairs or a constant side)."""
    sa, iou = np.asarray(sa, float), np.asarray(iou, float)
    if len(sa) < 3 or np.ptp(sa) == 0 or np.ptp(iou) == 0:
        return math.nan, math.nan
    res = spearmanr(sa, iou)
    return res.statistic, res.pvalue


def test_correlation_table_equals_scipy_spearman(evaluated, expected_iou, varied_run):
    out, _ = evaluated
    corr = pd.read_csv(out / "correlation.csv", keep_default_na=True)
    scores = pd.read_parquet(varied_run / "scores.parquet")
    frames = pd.read_parquet(varied_run / "frames.parquet")
    columns = json.loads((varied_run / "score.json").read_text())["score_columns"]
    classes = open_dataset(TEST_SPEC).classes
    compared = {"class": 0, "group": 0, "frame": 0}
    for row in corr.itertuples():
        if row.kind == "class":  # class SA of the frames predicting it vs that class's IoU
            rows = scores[scores["class_name"] == row.target]
            iou = [expected_iou[f][("class", row.target)][0] for f in rows["frame_id"]]
            sa = rows[row.score].to_numpy(float)
        elif row.kind == "group":  # z-scored group SA vs the group's IoU, frames with both
            sa_all = frames.set_index("frame_id")[f"group_{row.target}_{row.score}"]
            pairs = [(sa_all[f], v[("group", row.target)][0]) for f, v in expected_iou.items()
                     if ("group", row.target) in v and np.isfinite(sa_all[f])]
            sa, iou = np.array([p[0] for p in pairs]), [p[1] for p in pairs]
        else:  # frame SA vs the frame's mean class IoU
            assert (row.kind, row.target) == ("frame", "frame")
            sa = frames.set_index("frame_id")[f"frame_{row.score}"].loc[list(expected_iou)].to_numpy(float)
            iou = [np.mean([v[0] for (kind, _), v in rows.items() if kind == "class"])
                   for rows in expected_iou.values()]
        assert row.n_frames == len(sa), row
        rho, p = _expected_rho(sa, iou)
        if math.isnan(rho):
            assert math.isnan(row.rho) and isinstance(row.reason, str) and row.reason, row
        else:
            assert row.rho == pytest.approx(rho, abs=1e-9) and row.p == pytest.approx(p, rel=1e-6), row
            compared[row.kind] += 1
    assert compared["class"] == len(columns) * len(classes.names), compared  # all defined here
    assert compared["group"] == len(columns) * len(classes.groups) and compared["frame"] == len(columns)
    assert set(corr["score"]) == set(columns)
    present = {name for name in classes.names if (scores["class_name"] == name).any()}
    assert set(corr.loc[corr["kind"] == "class", "target"]) == present


def test_summary_json_and_dataset_iou_from_one_confusion_matrix(evaluated, expected_iou, varied_run):
    out, summary = evaluated
    saved = json.loads((out / "eval.json").read_text())
    assert {"scores", "data", "n_frames", "score_columns", "thresholds", "risk", "table", "plots",
            "mean_iou", "dataset_iou", "dataset_miou"} <= set(saved)
    assert saved["n_frames"] == summary["n_frames"] == 10
    assert saved["data"] == TEST_SPEC and saved["plots"] == []
    assert saved["score_columns"] == json.loads((varied_run / "score.json").read_text())["score_columns"]
    assert saved["thresholds"] == [0.5, 0.6, 0.7, 0.8, 0.9] and saved["risk"] == 0.05

    class_ious = [v[0] for rows in expected_iou.values() for (kind, _), v in rows.items() if kind == "class"]
    assert saved["mean_iou"] == pytest.approx(np.mean(class_ious), abs=1e-12)

    data = open_dataset(TEST_SPEC)
    n = data.classes.num_classes
    confusion = np.zeros((n, n), np.int64)  # rows = label, columns = prediction
    for frame in data:
        pred, label = saved_prediction(varied_run, frame.frame_id), frame.label
        keep = label != data.classes.ignore_index
        np.add.at(confusion, (label[keep], pred[keep]), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    assert list(saved["dataset_iou"]) == list(data.classes.names)
    for c, name in enumerate(data.classes.names):
        got = saved["dataset_iou"][name]
        if union[c] == 0:
            assert got is None or math.isnan(got), name
        else:
            assert got == pytest.approx(tp[c] / union[c], abs=1e-12), name
    defined = union > 0
    assert saved["dataset_miou"] == pytest.approx(np.mean(tp[defined] / union[defined]), abs=1e-12)
    for column in saved["score_columns"]:
        assert f"rho_{column}" in saved["table"]


def test_tradeoff_and_agreement_tables_are_written(evaluated, varied_run):
    out, _ = evaluated
    columns = json.loads((varied_run / "score.json").read_text())["score_columns"]
    curves = pd.read_csv(out / "tradeoff.csv")
    assert len(curves) and (out / "max_skip.csv").is_file()
    agreement = pd.read_csv(out / "agreement.csv")  # the tiny run has both MDSA and LSA
    assert {"mdsa", "lsa"} <= set(columns) and set(agreement["score"]) == {"mdsa~lsa"}
    scores = pd.read_parquet(varied_run / "scores.parquet")
    for row in agreement[agreement["kind"] == "class"].itertuples():
        rows = scores[scores["class_name"] == row.target]
        rho, _ = _expected_rho(rows["mdsa"], rows["lsa"])
        assert row.n_frames == len(rows)
        assert (math.isnan(rho) and math.isnan(row.rho)) or row.rho == pytest.approx(rho, abs=1e-9)


@pytest.mark.slow  # evaluate with plots: 5-9 s, most of it drawing the panels
def test_explicit_data_spec_and_plots(evaluated, tiny_run, tmp_path):
    by_default, _ = evaluated  # the same masks, data from score.json, no plots
    run = write_varied_run(tiny_run, tmp_path / "run", columns=["mdsa"])
    summary = evaluate(run / "scores.parquet", TEST_SPEC, tmp_path / "eval", progress=False)
    assert summary["data"] == TEST_SPEC
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "eval" / "iou.parquet"),
                                  pd.read_parquet(by_default / "iou.parquet"))
    expected = {tmp_path / "eval" / "iou_vs_mdsa.png", tmp_path / "eval" / "tradeoff_mdsa.png"}
    assert set(map(type(tmp_path), summary["plots"])) == expected
    for path in expected:
        with Image.open(path) as img:
            assert img.format == "PNG" and min(img.size) > 50


def test_missing_frames_or_labels_are_data_errors(tiny_run, tmp_path):
    with pytest.raises(DataError, match="7 are not in"):
        evaluate(tiny_run / "scores.parquet", TEST_SPEC.replace("n=10", "n=3"), tmp_path / "a",
                 plots=False, progress=False)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "a.png")
    with pytest.raises(DataError, match="labels"):
        evaluate(tiny_run / "scores.parquet", f"folder:{images}", tmp_path / "b", plots=False,
                 progress=False)
    assert not (tmp_path / "a" / "eval.json").exists() and not (tmp_path / "b" / "eval.json").exists()


def test_labelled_only_needs_some_of_the_runs_frames(tiny_run, tmp_path):
    """--labelled-only evaluates the frames the labels hold; labels of none of them: one line."""
    frames = list(open_dataset(TEST_SPEC))
    classes = json.loads((tiny_run / "score.json").read_text())["classes"]
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for frame in frames[:3]:
        for folder, array in (("images", frame.image), ("labels", frame.label.astype(np.uint8))):
            path = tmp_path / folder / f"{frame.frame_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    spec = f"folder:{tmp_path / 'images'}:{tmp_path / 'labels'}?classes={tmp_path / 'classes.json'}"
    summary = evaluate(tiny_run / "scores.parquet", spec, tmp_path / "eval", plots=False,
                       progress=False, labelled_only=True)
    assert summary["n_frames"] == 3
    with pytest.raises(DataError, match="every scored frame"):
        evaluate(tiny_run / "scores.parquet", spec, tmp_path / "eval", plots=False, progress=False)
    for name in ("images", "labels"):
        for path in (tmp_path / name).iterdir():
            path.rename(path.with_name("other_" + path.name))
    with pytest.raises(DataError, match="holds none of the run's frame ids"):
        evaluate(tiny_run / "scores.parquet", spec, tmp_path / "eval", plots=False, progress=False,
                 labelled_only=True)
