"""`saseg demo --quick`: every step of the embedded default runs and lands where it says."""

from __future__ import annotations

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
