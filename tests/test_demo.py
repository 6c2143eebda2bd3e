"""`saseg demo --quick`: every step of the embedded default runs and lands where it says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saseg.demo import run_demo


@pytest.mark.slow
def test_quick_demo_writes_every_output(tmp_path):
    text = run_demo(tmp_path, quick=True, progress=False)
    for path in ("model/model.pt", "sa/sa.json", "scores.parquet", "frames.parquet",
                 "eval/correlation.csv", "eval/tradeoff.csv", "plan/plan.csv",
                 "export/labelstudio/tasks.json", "export/cvat/annotations.zip",
                 "export/fiftyone/samples.json", "review.mp4", "report/index.html"):
        assert (tmp_path / path).stat().st_size > 0, path
    assert "RQ1" in text and "Surprise by driving condition" in text and "report" in text
    assert "mIoU on this pool is" in text and "true pool mIoU" in text
    assert (tmp_path / "audit" / "plan.csv").is_file() and (tmp_path / "audit" / "estimate" / "audit.json").is_file()
    # The loop closes: the labelled queue comes back through `labels import` and is evaluated.
    labelled = (pd.read_csv(tmp_path / "plan" / "plan.csv").action == "label").sum()
    assert f"labelstudio: {labelled} labelled frames imported, 0 unlabelled" in text
    # The imported labels are the generator's: the same IoU as the pool's own labels.
    imported = pd.read_parquet(tmp_path / "labelled" / "eval" / "iou.parquet")
    own = pd.read_parquet(tmp_path / "eval" / "iou.parquet")
    merged = imported.merge(own, on=["frame_id", "kind", "target"], suffixes=("", "_own"))
    assert len(merged) == len(imported) and imported["frame_id"].nunique() == labelled
    assert np.allclose(merged["iou"], merged["iou_own"], equal_nan=True)
