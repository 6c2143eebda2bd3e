"""FrameScorer.score_batch (one batched pass) against today's per-frame scoring, kept in
`scoring_reference` as the reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TEST_SPEC
from saseg.data import open_dataset
from saseg.estimators.sa_model import load_sa_model
from saseg.models import load_model
from saseg.scoring import FrameScorer
from scoring_reference import score_frames


def _assert_rows_equal(batched: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Equal tables; means may differ in the last bits (another summation order)."""
    pd.testing.assert_frame_equal(batched.drop(columns="at_mean"), reference.drop(columns="at_mean"),
                                  check_exact=False, rtol=1e-12, atol=0)
    for got, want in zip(batched["at_mean"], reference["at_mean"]):
        if isinstance(want, float):  # a likely-present class: no sampled pixel, no embedding
            assert isinstance(got, float) and np.isnan(got) and np.isnan(want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


class _ShadowLastClass(torch.nn.Module):
    """The last class's logit just under the best other one: never predicted, always likely."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = 10 * self.inner(x)  # sharpened, so the best class is confident
        out[:, -1] = out[:, :-1].max(1).values - 0.1
        return out


@pytest.fixture(scope="module")
def scorer_parts(tiny_model_dir, tiny_sa_dir):
    model = load_model(tiny_model_dir)
    fitted, _ = load_sa_model(tiny_sa_dir)
    frames = [open_dataset(TEST_SPEC)[i] for i in range(8)]
    return model, fitted, frames


@pytest.mark.parametrize("options", [
    {}, {"features": False}, {"softmax": False}, {"pixels_per_class": None}, {"pixels_per_class": 2},
])
def test_batched_rows_equal_the_per_frame_rows(scorer_parts, options):
    model, fitted, frames = scorer_parts
    scorer = FrameScorer(model, fitted, **{"pixels_per_class": 40, **options})
    scored = scorer.score_batch(frames)
    reference = score_frames(scorer, frames)
    _assert_rows_equal(scored.rows, reference)
    assert list(scored.predictions) == [f.frame_id for f in frames]
    for frame, logits in zip(frames, model.trace(frames)[0]):
        assert torch.equal(scored.predictions[frame.frame_id], logits.argmax(0))


def test_likely_present_rows_carry_no_sample(scorer_parts):
    """A class only likely present (no predicted pixel) gets a row with n_sampled 0 and no
    score, as the per-frame merge gave: a sharpened network makes some likely rows."""
    model, fitted, frames = scorer_parts
    shadowed = dataclasses.replace(model, net=_ShadowLastClass(model.net), layer=f"inner.{model.layer}")
    scorer = FrameScorer(shadowed, fitted, pixels_per_class=40)
    rows = scorer.score_batch(frames).rows
    _assert_rows_equal(rows, score_frames(scorer, frames))
    likely = rows[rows["n_pixels"] == 0]
    assert len(likely) == len(frames) and (likely["class_id"] == model.classes.num_classes - 1).all()
    assert (likely["n_sampled"] == 0).all() and likely[list(fitted)].isna().all().all()


def test_a_batch_equals_its_frames_scored_one_by_one(scorer_parts):
    """Batch composition changes nothing but the forward pass's own rounding: each frame's
    rows from a batch of 8 equal its rows scored in a batch of 1 (within float tolerance)."""
    model, fitted, frames = scorer_parts
    scorer = FrameScorer(model, fitted, pixels_per_class=40)
    together = scorer.score_batch(frames).rows
    alone = pd.concat([scorer.score_batch([f]).rows for f in frames], ignore_index=True)
    pd.testing.assert_frame_equal(together.drop(columns="at_mean"), alone.drop(columns="at_mean"),
                                  check_exact=False, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_rows_on_cuda_equal_the_cpu_rows(scorer_parts):
    """The same code path on the GPU (features in one pass over the batch, torch components):
    the same rows as on the CPU, to float tolerance (another summation order)."""
    model, fitted, frames = scorer_parts
    cpu = FrameScorer(model, fitted, pixels_per_class=40).score_batch(frames)
    on_gpu = dataclasses.replace(model, net=model.net.to("cuda"), device=torch.device("cuda"))
    gpu = FrameScorer(on_gpu, {k: v for k, v in fitted.items()}, pixels_per_class=40).score_batch(frames)
    pd.testing.assert_frame_equal(gpu.rows.drop(columns="at_mean"), cpu.rows.drop(columns="at_mean"),
                                  check_exact=False, rtol=1e-4, atol=1e-5)
    for frame_id, mask in cpu.predictions.items():
        assert torch.equal(gpu.predictions[frame_id], mask)
