"""Gallery, review video and heatmaps over a scored run."""

from __future__ import annotations

import json

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest

from conftest import TEST_SPEC
from saseg.errors import DataError
from saseg.review import heatmaps_for_run, write_gallery, write_review_video


def test_gallery_renders_the_most_and_least_surprising_frames(tiny_run):
    entries = write_gallery(tiny_run, n=2)
    frames = pd.read_parquet(tiny_run / "frames.parquet").sort_values("frame_mdsa", ascending=False)
    top = [e["frame_id"] for e in entries if e["which"] == "top"]
    bottom = [e["frame_id"] for e in entries if e["which"] == "bottom"]
    assert top == frames["frame_id"].tolist()[:2]
    assert bottom == frames["frame_id"].tolist()[::-1][:2]
    assert all((tiny_run / e["path"]).stat().st_size > 0 for e in entries)
    assert json.loads((tiny_run / "gallery" / "index.json").read_text()) == entries


def test_review_video_has_one_frame_per_input_frame(tiny_model_dir, tiny_sa_dir, tmp_path):
    path = write_review_video(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "r.mp4",
                              max_frames=4, progress=False)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert meta["codec"].startswith("h264")
    assert sum(1 for _ in reader) == 4


def test_heatmap_for_run_is_finite_where_the_class_is_known(tiny_run):
    heat = heatmaps_for_run(tiny_run)
    frame_id = pd.read_parquet(tiny_run / "frames.parquet")["frame_id"].iloc[0]
    sa = heat(frame_id)
    assert sa.shape == (48, 64)
    assert np.isfinite(sa).mean() > 0.5


def test_heatmaps_follow_the_score_registry(tiny_run):
    """A logit score registered in one line is a heatmap too, with no SA model and no edit here."""
    import torch

    from saseg.estimators import registered_score
    from saseg.layout import RunDir
    from saseg.review import Reviewer

    frame_id = pd.read_parquet(tiny_run / "frames.parquet")["frame_id"].iloc[0]
    run = RunDir(tiny_run)
    with registered_score("energy", lambda logits, dim=1: -torch.logsumexp(logits, dim)):
        heat = heatmaps_for_run(tiny_run, score="energy")(frame_id)
        reviewer = Reviewer(run.meta()["model_path"], None, score="energy")
        logits, _ = reviewer.model.trace([run.frame_lookup()(frame_id)])
    assert heat.shape == (48, 64) and heat.dtype == np.float32
    np.testing.assert_array_equal(heat, -torch.logsumexp(logits[0], 0).numpy())
    entropy = heatmaps_for_run(tiny_run, score="entropy")(frame_id)
    assert np.isfinite(entropy).all() and (entropy >= 0).all()
    with pytest.raises(DataError, match="per-pixel score from"):
        Reviewer(run.meta()["model_path"], None, score="energy")
    with pytest.raises(DataError, match="SA model dir"):
        Reviewer(run.meta()["model_path"], None, score="mdsa")
