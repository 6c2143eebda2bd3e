"""`score` with the agreement features: temporal IoU from saved masks, flip TTA, batch-independent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TEST_SPEC
from saseg.analysis.quality import class_features, target_features
from saseg.columns import drive_of
from saseg.pipeline import score
from saseg.layout import RunDir


def _iou(a, b, c):
    union = np.logical_or(a == c, b == c).sum()
    return np.logical_and(a == c, b == c).sum() / union if union else float("nan")


def test_temporal_iou_equals_the_iou_with_the_previous_frames_mask(tiny_run):
    run = RunDir(tiny_run)
    scores = run.scores()
    frames = scores.drop_duplicates("frame_id").sort_values("frame_index")
    previous, starts = {}, 0
    for drive, group in frames.groupby(frames["frame_id"].map(drive_of)):
        ids = group["frame_id"].tolist()
        previous.update({ids[0]: None, **{b: a for a, b in zip(ids, ids[1:])}})
        starts += 1
    assert len(frames) > starts >= 1  # a start (NaN) and frames with a previous one
    for row in scores.itertuples():
        prev = previous[row.frame_id]
        if prev is None:
            assert np.isnan(row.temporal_iou)
        else:
            want = _iou(run.prediction(row.frame_id), run.prediction(prev), row.class_id)
            assert row.temporal_iou == pytest.approx(want, rel=1e-12, nan_ok=True), row


def test_agreement_rows_do_not_depend_on_batches_or_chunks(tiny_model_dir, tiny_sa_dir, tmp_path):
    runs = []
    for batch, chunk in ((4, 4), (3, 5), (1, 1)):
        out = tmp_path / f"b{batch}" / "scores.parquet"
        runs.append(score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, pixels_per_class=50,
                          batch_size=batch, chunk_frames=chunk, progress=False, tta="flip"))
    first = runs[0][["frame_id", "class_id", "temporal_iou", "flip_iou", "comp_worst_margin"]]
    assert first["temporal_iou"].notna().any() and first["flip_iou"].notna().all()
    for other in runs[1:]:
        pd.testing.assert_frame_equal(first, other[first.columns], check_exact=False, rtol=1e-9)


def test_quality_features_pick_up_the_optional_columns(tiny_run):
    run = RunDir(tiny_run)
    scores, frames = run.scores(), run.frames()
    X = class_features(scores, ["mdsa"], run.classes())
    assert {"temporal_iou", "comp_worst_entropy", "comp_aw_size"} <= set(X.columns)
    F = target_features(scores, frames, ["mdsa"], None, "frame_")
    predicted = scores[scores["n_pixels"] > 0]
    want = predicted.groupby("frame_id")["comp_worst_margin"].max()
    np.testing.assert_allclose(F["max_comp_worst_margin"].to_numpy(), want.reindex(F.index).to_numpy())
    assert "min_temporal_iou" in F.columns and "mean_comp_min_size" in F.columns
    older = class_features(scores.drop(columns=["temporal_iou"]), ["mdsa"], run.classes())
    assert "temporal_iou" not in older.columns


def test_ray_engine_gives_the_local_agreement_rows(ray_cluster, tiny_model_dir, tiny_sa_dir, tmp_path):
    from saseg.distributed import RayOptions

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray workers: then the rows are bit-identical
    try:
        local = score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "local" / "scores.parquet",
                      pixels_per_class=50, batch_size=4, chunk_frames=4, progress=False, tta="flip")
    finally:
        torch.set_num_threads(before)
    remote = score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "ray" / "scores.parquet",
                   pixels_per_class=50, batch_size=4, chunk_frames=4, progress=False, tta="flip",
                   engine="ray", ray_options=RayOptions(workers=2))
    pd.testing.assert_frame_equal(local, remote, check_exact=True)


def test_cli_tta_flip_and_a_model_fitted_with_it_refuses_a_run_without(tiny_model_dir, tiny_sa_dir, tiny_run,
                                                                       tmp_path):
    from typer.testing import CliRunner

    from saseg.commands.quality import apply_quality, fit_quality
    from saseg.cli import app
    from saseg.errors import DataError

    out = tmp_path / "flip" / "scores.parquet"
    args = ["score", "-m", str(tiny_model_dir), "--sa", str(tiny_sa_dir), "-d", TEST_SPEC, "-o", str(out),
            "--pixels-per-class", "50", "-b", "4", "-q"]
    result = CliRunner().invoke(app, [*args, "--tta", "flip"])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(out)["flip_iou"].notna().all()
    assert CliRunner().invoke(app, [*args, "--tta", "mirror"]).exit_code == 2
    # a quality model fitted on the flipped run needs flip_iou where it is applied
    import shutil
    shutil.copytree(tiny_run / "eval", out.parent / "eval")
    tiny_run = shutil.copytree(tiny_run, tmp_path / "plain_run")  # apply writes into it: not the shared one
    fit_quality(out.parent, out.parent / "eval", tmp_path / "quality", min_rows_for_trees=10_000,
                extra_features=["flip", "components"])
    with pytest.raises(DataError, match=r"flip_iou.*--tta flip"):
        apply_quality(tiny_run, tmp_path / "quality")
    # by default the optional groups are left out, so a run without flip_iou is fine
    default = fit_quality(out.parent, out.parent / "eval", tmp_path / "plain", min_rows_for_trees=10_000)
    assert not [f for f in default.models_["class"].features_ if f in ("flip_iou", "temporal_iou")
                or f.startswith("comp_")]
    assert not [f for f in default.models_["frame"].features_ if "comp_" in f or "_iou" in f.replace("plugin_iou", "")]
    apply_quality(tiny_run, tmp_path / "plain")
    with pytest.raises(DataError, match=r"flip_iou.*--tta flip"):
        fit_quality(tiny_run, tiny_run / "eval", tmp_path / "bad", extra_features=["flip"])
    with pytest.raises(DataError, match="components, flip|'components', 'flip'"):
        fit_quality(out.parent, out.parent / "eval", tmp_path / "bad", extra_features=["mirror"])
