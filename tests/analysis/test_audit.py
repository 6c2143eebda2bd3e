"""Audit of a scored run: the sample folder, the estimate, and what is refused."""

import json

import numpy as np
import pandas as pd
import pytest

from saseg.analysis.audit import (CLASSES_CSV, ESTIMATE_JSON, SAMPLE_JSON, PoolPredictions, estimate, frame_truth,
                                  predict_pool)
from saseg.commands.audit import estimate_audit, pool_predictions, read_audit, sample_audit
from saseg.data import open_dataset
from saseg.data.classes import ClassInfo
from saseg.errors import DataError, SasegError
from saseg.export.queue import read_plan, select_rows
from saseg.io import read_json
from saseg.metrics import ConfusionMatrix, frame_iou
from saseg.layout import RunDir

from conftest import TEST_SPEC


def test_sample_writes_the_sample_and_an_exportable_queue(tiny_run, tmp_path):
    run = RunDir(tiny_run)
    table = sample_audit(run, 4, tmp_path / "audit", seed=1)
    meta, again = read_audit(tmp_path / "audit")
    assert len(table) == 4 and table["frame_id"].is_unique
    assert ((table["pi"] > 0) & (table["pi"] <= 1)).all()
    assert meta["n"] == 4 and meta["n_pool"] == 10 and meta["uniform_share"] == 0.5
    rows = select_rows(read_plan(tmp_path / "audit" / "plan.csv"))
    assert sorted(rows["frame_id"]) == sorted(table["frame_id"])
    assert rows["score"].is_monotonic_decreasing  # most uncertain first
    # seeded
    assert sample_audit(run, 4, tmp_path / "again", seed=1)["frame_id"].tolist() == table["frame_id"].tolist()


def test_a_census_gives_the_pool_iou_of_one_confusion_matrix(tiny_run, tmp_path):
    """All 10 frames labelled (pi = 1): the estimate is the exact pool IoU, with no width."""
    run = RunDir(tiny_run)
    sample_audit(run, 10, tmp_path / "audit")
    result = estimate_audit(run, tmp_path / "audit", TEST_SPEC, tmp_path / "out")
    classes = run.classes()
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    for frame in open_dataset(TEST_SPEC):
        cm.update(run.prediction(frame.frame_id), frame.label)
    truth = cm.compute().numpy()
    table = pd.read_csv(tmp_path / "out" / CLASSES_CSV)
    assert np.allclose(table["estimate"], truth[table["class_id"]])
    assert np.allclose(table["high"] - table["low"], 0.0)
    summary = read_json(tmp_path / "out" / ESTIMATE_JSON)
    assert summary["miou"]["estimate"] == pytest.approx(np.nanmean(truth))
    # the share of frames below IoU 0.5, against metrics.frame_iou's class rows
    frame_ious = [frame_iou(run.prediction(f.frame_id), f.label, classes).query("kind == 'class'")["iou"].mean()
                  for f in open_dataset(TEST_SPEC)]
    assert summary["share_below"]["estimate"] == pytest.approx(np.mean(np.array(frame_ious) < 0.5))
    assert summary["sentence"].startswith("mIoU on this pool is ")
    assert "from 10 labelled frames of 10" in result.summary["sentence"]
    assert (tmp_path / "out" / "widths.png").is_file()


def test_labels_that_miss_sampled_frames_write_nothing(tiny_run, tmp_path):
    run = RunDir(tiny_run)
    sample_audit(run, 10, tmp_path / "audit")
    other = "synthetic:n=3,seed=2,size=64x48,split=test"  # only the first 3 frames' ids
    with pytest.raises(DataError, match="expected labels for every sampled frame"):
        estimate_audit(run, tmp_path / "audit", other, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    ("pi", "the pool's predictions changed since the sample was drawn"),
    ("duplicate", "to hold 4 distinct frames .* 3 distinct"),
    ("drop", "to hold 4 distinct frames .* holds 3 rows"),
    ("no_n", "expected an audit sample from `saseg audit sample`"),
])
def test_an_edited_sample_is_refused_and_writes_nothing(tiny_run, tmp_path, edit, message):
    """The estimate recomputes every pool frame's inclusion probability from the design; a sample
    whose frames or probabilities differ from it (edited by hand, or the pool re-scored) cannot be
    weighted honestly."""
    run = RunDir(tiny_run)
    sample_audit(run, 4, tmp_path / "audit", seed=1)
    path = tmp_path / "audit" / "sample.csv"
    table = pd.read_csv(path, dtype={"frame_id": str})
    if edit == "pi":
        table.loc[0, "pi"] = table.loc[0, "pi"] * 0.9
    elif edit == "duplicate":
        table.loc[1] = table.loc[0]
    elif edit == "drop":
        table = table.iloc[1:]
    else:
        meta = read_json(tmp_path / "audit" / SAMPLE_JSON)
        del meta["n"]
        (tmp_path / "audit" / SAMPLE_JSON).write_text(json.dumps(meta))
    table.to_csv(path, index=False)
    with pytest.raises(SasegError, match=message):
        estimate_audit(run, tmp_path / "audit", TEST_SPEC, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    ("empty_csv", "sample.csv: expected the sample table .* cannot be read"),
    ("unterminated_csv", "sample.csv: expected the sample table .* cannot be read"),
    ("latin1_csv", "sample.csv: expected the sample table .* cannot be read"),
    ("share_text", "expected an audit sample"),
    ("share_null", "expected an audit sample"),
    ("n_too_large", "expected n <= 10"),
    ("fingerprint_number", "expected an audit sample"),
    ("unfinished", "stopped halfway"),
])
def test_a_tampered_audit_folder_is_one_clear_error(tiny_run, tmp_path, edit, message):
    run = RunDir(tiny_run)
    audit = tmp_path / "audit"
    sample_audit(run, 4, audit, seed=1)
    meta = read_json(audit / SAMPLE_JSON)
    if edit == "empty_csv":
        (audit / "sample.csv").write_text("")
    elif edit == "unterminated_csv":
        (audit / "sample.csv").write_text((audit / "sample.csv").read_text() + '"unterminated\n')
    elif edit == "latin1_csv":
        (audit / "sample.csv").write_bytes((audit / "sample.csv").read_bytes().replace(b"\n", b"\xe9\n", 2))
    elif edit == "unfinished":
        (audit / ".saseg.lock").write_text("pid 99999\n")  # a writer killed halfway
    else:
        key, value = {"share_text": ("uniform_share", "abc"), "share_null": ("uniform_share", None),
                      "n_too_large": ("n", 33), "fingerprint_number": ("pool_fingerprint", 5)}[edit]
        (audit / SAMPLE_JSON).write_text(json.dumps({**meta, key: value}))
    with pytest.raises(SasegError, match=message):
        estimate_audit(run, audit, TEST_SPEC, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_sample_is_not_drawn_into_a_plan_or_run_folder(tiny_run, tmp_path):
    """A plan folder's plan.csv is the plan's queue: the audit's queue must not replace it."""
    import shutil

    run = RunDir(tiny_run)
    plan = tmp_path / "plan"
    plan.mkdir()
    (plan / "plan.json").write_text("{}")
    (plan / "plan.csv").write_text("the plan's queue\n")
    with pytest.raises(DataError, match="holds plan.json of another command"):
        sample_audit(run, 4, plan)
    assert sorted(p.name for p in plan.iterdir()) == ["plan.csv", "plan.json"]
    assert (plan / "plan.csv").read_text() == "the plan's queue\n"
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    with pytest.raises(DataError, match="holds score.json"):
        sample_audit(run, 4, copy)


def test_a_write_stopped_partway_leaves_no_summary(tiny_run, tmp_path, monkeypatch):
    """Summaries go out first and in last, so readers never take old and new files for one."""
    import saseg.viz.audit_plot
    from saseg.commands.audit import find_estimate

    run = RunDir(tiny_run)
    audit, out = tmp_path / "audit", tmp_path / "run" / "audit" / "estimate"
    sample_audit(run, 4, audit, seed=1)
    estimate_audit(run, audit, TEST_SPEC, out)
    assert find_estimate(tmp_path / "run") == out

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saseg.viz.audit_plot, "plot_widths", broken)
    with pytest.raises(OSError):
        estimate_audit(run, audit, TEST_SPEC, out, level=0.8)
    assert not (out / ESTIMATE_JSON).exists() and find_estimate(tmp_path / "run") is None
    monkeypatch.setattr("saseg.commands.audit.write_csv", broken)
    with pytest.raises(OSError):
        sample_audit(run, 5, audit, seed=2)
    with pytest.raises(DataError, match="Expected an audit sample .* no audit_sample.json"):
        read_audit(audit)


def test_the_run_is_checked_before_sampling(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    scores = RunDir(copy).scores()
    scores.loc[0, "class_id"] = 99
    scores.to_parquet(RunDir(copy).scores_path)
    with pytest.raises(SasegError, match="expected class ids in 0..10"):  # the run's reader, or predict_pool
        sample_audit(RunDir(copy), 4, tmp_path / "audit")
    scores["class_id"] = scores["class_id"].astype(np.float64)
    scores.loc[0, "class_id"] = 2.5
    with pytest.raises(DataError, match="expected class ids in 0..10"):
        predict_pool(scores, RunDir(copy).frames(), 11, {})


def _label_folder(frame_ids, classes: dict, root) -> str:
    """The generator's images and labels of `frame_ids` as a folder spec with `classes` (what a
    labelling tool hands back)."""
    from PIL import Image

    from saseg.io import write_json

    frames = {f.frame_id: f for f in open_dataset(TEST_SPEC)}
    for fid in frame_ids:
        for folder, array in (("images", frames[fid].image), ("labels", frames[fid].label.astype(np.uint8))):
            path = root / folder / f"{fid}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    write_json(root / "classes.json", classes)
    return f"folder:{root / 'images'}:{root / 'labels'}?classes={root / 'classes.json'}"


def test_labels_of_other_classes_are_refused(tiny_run, tmp_path):
    """The IoU of class c needs labels whose class c is the run's class c."""
    run = RunDir(tiny_run)
    table = sample_audit(run, 4, tmp_path / "audit", seed=2)
    info = run.classes().to_dict()
    spec = _label_folder(table["frame_id"], {**info, "names": info["names"][::-1]}, tmp_path)
    with pytest.raises(DataError, match="expected labels with the run's classes"):
        estimate_audit(run, tmp_path / "audit", spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_sample_of_the_first_design_still_estimates(tiny_run, tmp_path):
    """A ``sample.json`` naming no uncertainty was drawn by the first design (``error_mass``): its
    labels still count, weighted by that design's probabilities."""
    run = RunDir(tiny_run)
    sample_audit(run, 4, tmp_path / "audit", seed=1)
    meta = read_json(tmp_path / "audit" / SAMPLE_JSON)
    assert meta["uncertainty"] == "residual_scale"
    pool = pool_predictions(run)
    from saseg.analysis.audit_math import inclusion_probabilities
    pi = inclusion_probabilities(pool.uncertainty("error_mass"), 4)
    # the tiny pool's frames are alike, but the designs differ beyond the check's tolerance
    assert not np.allclose(pi, inclusion_probabilities(pool.uncertainty(), 4), rtol=1e-9, atol=0.0)
    table = pd.read_csv(tmp_path / "audit" / "sample.csv", dtype={"frame_id": str})
    table["pi"] = pi[[list(pool.frame_ids).index(f) for f in table["frame_id"]]]
    table.to_csv(tmp_path / "audit" / "sample.csv", index=False)
    del meta["uncertainty"]
    (tmp_path / "audit" / SAMPLE_JSON).write_text(json.dumps(meta))
    result = estimate_audit(run, tmp_path / "audit", TEST_SPEC, tmp_path / "out")
    assert np.isfinite(result.summary["miou"]["estimate"]) and (tmp_path / "out" / ESTIMATE_JSON).is_file()


def test_one_labelled_frame_is_refused(tiny_run, tmp_path):
    """When drawn, and when estimated (a sample edited down to one frame, or the library)."""
    run = RunDir(tiny_run)
    with pytest.raises(DataError, match="n >= 2"):
        sample_audit(run, 1, tmp_path / "audit")
    assert not (tmp_path / "audit").exists()
    pool = pool_predictions(run)
    k = pool.union_hat.shape[1]
    with pytest.raises(DataError, match="at least 2 labelled frames"):
        estimate(pool, np.array([0]), np.full(len(pool.frame_ids), 0.5), np.ones((1, k)), np.ones((1, k)),
                 np.ones(1), run.classes())


def test_pool_predictions_are_the_plug_in_parts(tiny_run):
    run = RunDir(tiny_run)
    pool = pool_predictions(run)
    scores = run.scores()
    row = scores.iloc[0]
    i = list(pool.frame_ids).index(str(row["frame_id"]))
    union = row["n_pixels"] + row["fn_mass"]
    assert pool.union_hat[i, row["class_id"]] == pytest.approx(union)
    assert pool.inter_hat[i, row["class_id"]] == pytest.approx(row["plugin_iou"] * union)
    assert pool.uncertainty().shape == (10,)


def test_a_class_absent_from_the_sample_is_named_and_left_out():
    classes = ClassInfo(names=("road", "car", "sign"), colours=((0, 0, 0),) * 3, ignore_index=255)
    rng = np.random.default_rng(0)
    m = 20
    union_hat = rng.uniform(100, 200, size=(m, 3))
    union_hat[:, 2] = 0.0
    union_hat[7, 2] = 50.0  # the pool predicts a sign in one frame only
    pool = PoolPredictions(np.array([f"f{i}" for i in range(m)]), np.arange(m), np.array([""] * m, object),
                           0.8 * union_hat, union_hat, np.full(m, 0.8))
    rows = np.array([0, 3, 5, 9])
    union = union_hat[rows].copy()
    inter = 0.7 * union
    result = estimate(pool, rows, np.full(m, 0.2), inter, union, np.full(4, 0.7), classes)
    sign = result.classes.set_index("class_name").loc["sign"]
    assert "in none of the 4 labelled frames" in sign["note"] and np.isnan(sign["estimate"])
    assert result.summary["miou"]["classes"] == ["road", "car"]
    assert any("sign" in note for note in result.summary["notes"])


def test_the_estimate_widens_each_kept_class_by_its_ratio_and_copes_with_unsampleable_frames(tmp_path):
    """Uniform share 0: frames the model calls perfect get π = 0 (and v = 0), which must not turn
    the anticipated variance into NaN; each kept class's variance is the plain one x max(1, ρ_c),
    ρ_c from the pool's v over every frame; effective labels use the plain variances."""
    import warnings
    from saseg.analysis.audit_math import anticipation_ratio, inclusion_probabilities
    classes = ClassInfo(names=("road", "car", "sign"), colours=((0, 0, 0),) * 3, ignore_index=255)
    rng = np.random.default_rng(4)
    m = 40
    union_hat = rng.uniform(100, 2000, size=(m, 3))
    union_hat[:, 2] = 0.0
    union_hat[7, 2] = 50.0  # a sign predicted in one frame, left out of the sample
    inter_hat = union_hat * rng.uniform(0.5, 0.95, size=(m, 3))
    inter_hat[:10] = union_hat[:10]  # ten frames predicted perfect: u = 0
    pool = PoolPredictions(np.array([f"f{i}" for i in range(m)]), np.arange(m), np.array([""] * m, object),
                           inter_hat, union_hat, np.full(m, 0.8))
    pi = inclusion_probabilities(pool.uncertainty(), 8, uniform_share=0.0)
    assert (pi[:10] == 0).all()
    rows = np.array([11, 14, 19, 22, 27, 30, 33, 38])
    union = union_hat[rows].copy()
    inter = union * rng.uniform(0.4, 0.9, size=union.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = estimate(pool, rows, pi, inter, union, np.full(8, 0.7), classes)
    plain = estimate(pool, rows, pi, inter, union, np.full(8, 0.7), classes, anticipate=False)
    v = pool.residual_model()
    keep = pi > 0
    total = ((1 - pi[keep]) / pi[keep])[:, None] * v[keep]
    a, b = scaled.classes.set_index("class_name"), plain.classes.set_index("class_name")
    for c, name in enumerate(("road", "car")):
        rho = float(anticipation_ratio(v[rows, c], pi[rows], total[:, c].sum()))
        assert a.loc[name, "se"] ** 2 == pytest.approx(b.loc[name, "se"] ** 2 * rho, rel=1e-9)
        assert a.loc[name, "effective_labels"] == pytest.approx(b.loc[name, "effective_labels"])
    assert np.isnan(a.loc["sign", "estimate"])
    assert scaled.summary["miou"]["effective_labels"] == pytest.approx(plain.summary["miou"]["effective_labels"])
    assert scaled.summary["miou"]["plain_se"] == pytest.approx(plain.summary["miou"]["se"])
    scaled.save(tmp_path / "estimate")  # writes what it computed, inf or not
    assert read_json(tmp_path / "estimate" / ESTIMATE_JSON)["miou"]["se"] == pytest.approx(scaled.summary["miou"]["se"])


def test_frame_truth_ignores_void_pixels():
    classes = ClassInfo(names=("a", "b"), colours=((0, 0, 0),) * 2, ignore_index=9)
    pred = np.array([[0, 0], [1, 1]])
    label = np.array([[0, 9], [0, 1]])
    inter, union, frame = frame_truth(pred, label, classes)
    assert inter.tolist() == [1, 1] and union.tolist() == [2, 2]
    assert frame == pytest.approx(0.5)


def test_labels_from_a_folder_spec_of_just_the_sampled_frames(tiny_run, tmp_path):
    """What a labelling tool hands back: images and labels of the sampled frames only."""
    run = RunDir(tiny_run)
    table = sample_audit(run, 5, tmp_path / "audit", seed=2)
    spec = _label_folder(table["frame_id"], run.classes().to_dict(), tmp_path)
    from_folder = estimate_audit(run, tmp_path / "audit", spec, tmp_path / "a")
    from_generator = estimate_audit(run, tmp_path / "audit", TEST_SPEC, tmp_path / "b")
    pd.testing.assert_frame_equal(from_folder.classes, from_generator.classes)


def test_another_pool_than_the_sampled_one_is_refused(tiny_run, tmp_path):
    from saseg.io import write_json

    run = RunDir(tiny_run)
    sample_audit(run, 4, tmp_path / "audit")
    meta, _ = read_audit(tmp_path / "audit")
    write_json(tmp_path / "audit" / "audit_sample.json", {**meta, "pool_fingerprint": "0" * 16})
    with pytest.raises(DataError, match="expected the pool the sample was drawn from"):
        estimate_audit(run, tmp_path / "audit", TEST_SPEC, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_learned_quality_replaces_the_plug_in_iou(tiny_run, tmp_path):
    import shutil

    shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("report"))
    run = RunDir(tmp_path / "run")
    scores = run.scores()
    scores["quality"] = 0.25
    scores.loc[0, "quality"] = np.nan  # no estimate: the plug-in stays
    run.write_scores(scores)
    plugin, learned = pool_predictions(run), pool_predictions(run, "quality")
    assert np.allclose(learned.union_hat, plugin.union_hat)
    first = list(plugin.frame_ids).index(str(scores.loc[0, "frame_id"])), int(scores.loc[0, "class_id"])
    assert learned.inter_hat[first] == pytest.approx(plugin.inter_hat[first])
    others = np.ones_like(learned.inter_hat, dtype=bool)
    others[first] = False
    assert np.allclose(learned.inter_hat[others], 0.25 * plugin.union_hat[others])
    with pytest.raises(DataError, match="quality apply"):
        pool_predictions(RunDir(tiny_run), "quality")
