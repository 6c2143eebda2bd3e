import numpy as np
import pytest
import torch

from saseg.errors import DegenerateDataError, NotFittedError, UnknownClassError
from saseg.estimators import DSA


def brute_force_dsa(q, qc, ref, rc):
    out = []
    for x, c in zip(q, qc):
        same, others = ref[rc == c], ref[rc != c]
        dists = [np.linalg.norm(x - r) for r in same]
        x_a = same[int(np.argmin(dists))]
        dist_b = min(np.linalg.norm(x_a - r) for r in others)
        out.append(min(dists) / dist_b)
    return np.array(out)


@pytest.mark.parametrize("block_bytes", [8 * 2**20, 256])
def test_matches_brute_force_loop(block_bytes):
    rng = np.random.default_rng(0)
    rc = rng.integers(0, 3, 150)
    ref = rng.normal(size=(150, 5)) + rc[:, None]
    qc = rng.integers(0, 3, 40)
    q = rng.normal(size=(40, 5)) * 1.3 + qc[:, None]
    expected = brute_force_dsa(q, qc, ref, rc)
    out = DSA(block_bytes=block_bytes).fit(ref, rc).score(q, qc)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10)
    out32 = DSA().fit(torch.tensor(ref, dtype=torch.float32), rc).score(torch.tensor(q, dtype=torch.float32), qc)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), expected, rtol=1e-4)


def test_coinciding_references_of_two_classes_stay_finite():
    ref = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [5.0, 5.0]])
    rc = np.array([0, 0, 1, 1])
    out = DSA().fit(ref, rc).score(np.array([[0.1, 0.0], [0.0, 0.0]]), np.array([0, 0]))
    assert torch.isfinite(out).all()
    assert out[0] > 1e10 and out[1] == 0


def test_bad_inputs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 3))
    with pytest.raises(NotFittedError, match="DSA"):
        DSA().score(x, np.zeros(10, int))
    with pytest.raises(DegenerateDataError, match="at least 2 classes"):
        DSA().fit(x, np.zeros(10, int))
    est = DSA().fit(x, np.arange(10) % 2)
    with pytest.raises(UnknownClassError, match=r"\[2\]"):
        est.score(x, np.full(10, 2))
    x[4, 2] = -np.inf
    with pytest.raises(DegenerateDataError, match="1 of 10 rows"):
        est.score(x, np.zeros(10, int))
