"""ScoreWriter: masks off the critical path, and a part on disk always has its masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saseg.io import PartStore
from saseg.layout import RunDir, encode_prediction
from saseg.writer import ScoreWriter
import pandas as pd


def _masks(n: int):
    rng = np.random.default_rng(0)
    return {f"d/{i:03d}": torch.from_numpy(rng.integers(0, 5, (12, 9))) for i in range(n)}


@pytest.mark.parametrize("background", [True, False])
def test_masks_and_parts_land_as_written_at_once(tmp_path, background):
    run = RunDir(tmp_path)
    store = PartStore(run.scores_path, {"a": 1})
    masks = _masks(5)
    with ScoreWriter(store, run, background=background) as writer:
        for frame_id, mask in masks.items():
            writer.write_prediction(frame_id, mask)
        writer.write_prediction("d/png", encode_prediction(masks["d/000"]))  # bytes from a worker
        writer.write_part(0, pd.DataFrame({"frame_id": list(masks)}))
        # the part is on disk only after every mask handed in before it
        assert all(run.prediction_path(f).exists() for f in [*masks, "d/png"])
    for frame_id, mask in masks.items():
        assert run.prediction_path(frame_id).read_bytes() == encode_prediction(mask)
        np.testing.assert_array_equal(run.prediction(frame_id), mask.numpy())
    assert store.done_chunks() == {0}
    assert writer.seconds > 0


def test_a_failed_mask_write_stops_the_part(tmp_path, monkeypatch):
    """A full disk on the writer's thread is raised on the driver, and the chunk's part is not
    written: the resumed run scores the chunk again instead of trusting missing masks."""
    run = RunDir(tmp_path)
    store = PartStore(run.scores_path, {"a": 1})

    def full_disk(self, frame_id, png):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunDir, "write_prediction_png", full_disk)
    writer = ScoreWriter(store, run)
    writer.write_prediction("d/0", torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(OSError, match="No space"):
        writer.write_part(0, pd.DataFrame({"frame_id": ["d/0"]}))
    writer.close()
    assert store.done_chunks() == set()


def test_without_a_run_masks_are_dropped(tmp_path):
    store = PartStore(tmp_path / "scores.parquet", {"a": 1})
    with ScoreWriter(store, None) as writer:
        writer.write_prediction("d/0", torch.zeros(4, 4, dtype=torch.long))
        writer.write_part(0, pd.DataFrame({"frame_id": ["d/0"]}))
    assert not (tmp_path / "predictions").exists() and store.done_chunks() == {0}
