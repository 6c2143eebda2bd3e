import numpy as np
import pytest
import torch

from saseg.errors import DataError, DegenerateDataError
from saseg.estimators import softmax_scores


def hand_scores(logits):
    """Per-row scores written out with numpy; logits (N, C)."""
    out = {"max_softmax": [], "entropy": [], "margin": []}
    for row in logits.astype(np.float64):
        p = np.exp(row - row.max())
        p /= p.sum()
        s = np.sort(p)[::-1]
        out["max_softmax"].append(1 - s[0])
        out["entropy"].append(-sum(pi * np.log(pi) for pi in p))
        out["margin"].append(1 - (s[0] - s[1]))
    return {k: np.array(v) for k, v in out.items()}


def test_flat_logits_match_hand_computation():
    logits = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0], [50.0, -50.0, 0.0], [1.0, 3.0, 2.9]])
    got = softmax_scores(logits)
    for key, expected in hand_scores(logits).items():
        np.testing.assert_allclose(got[key].numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["entropy"][1].item(), np.log(3), rtol=1e-6)


def test_image_logits_and_other_dim():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 3, 5)).astype(np.float32) * 3
    got = softmax_scores(torch.from_numpy(logits))
    flat = logits.transpose(0, 2, 3, 1).reshape(-1, 4)
    for key, expected in hand_scores(flat).items():
        assert got[key].shape == (2, 3, 5) and got[key].dtype == torch.float32
        np.testing.assert_allclose(got[key].numpy().ravel(), expected, rtol=1e-5, atol=1e-6)
    last = softmax_scores(flat, dim=-1)
    np.testing.assert_allclose(last["margin"].numpy(), hand_scores(flat)["margin"], rtol=1e-5, atol=1e-6)


def test_bad_logits():
    with pytest.raises(DegenerateDataError, match="2 NaN or Inf"):
        softmax_scores(np.array([[np.nan, 1.0], [np.inf, 0.0], [1.0, 2.0]]))
    with pytest.raises(DataError, match="at least 2 classes"):
        softmax_scores(np.zeros((4, 1)))
    with pytest.raises(DataError, match="shape"):
        softmax_scores(np.zeros(4))
    with pytest.raises(DataError, match="floating-point"):
        softmax_scores(np.zeros((4, 3), dtype=int))
