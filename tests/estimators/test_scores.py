"""The per-pixel score registry: kinds, the default columns, and a logit score added in one line."""

import numpy as np
import pytest
import torch

from saseg.errors import DataError
from saseg.estimators import (DEFAULT_BASELINES, ESTIMATORS, MDSA, SCORES, baseline_map, make_estimator, register_score,
                              registered_score, score_kind, score_names, softmax_scores, unregister_score)
from saseg.estimators.softmax import DISPERSION_FORMULAS, SoftmaxStats, dispersion_maps, softmax_stats
from saseg.scoring import score_columns


def energy(logits, dim=1):
    """Free energy, higher = less certain (Liu et al., 2020)."""
    return -torch.logsumexp(logits, dim)


def test_kinds_and_the_default_columns_are_the_registry():
    assert score_names("surprise") == ("mdsa", "lsa", "dsa") == tuple(ESTIMATORS)
    assert score_names("baseline") == ("max_softmax", "entropy", "margin") == tuple(DISPERSION_FORMULAS)
    assert score_names() == (*score_names("surprise"), *score_names("baseline")) == tuple(SCORES)
    assert SCORES["mdsa"].compute is MDSA and score_kind("entropy") == "baseline"
    assert score_kind("risk") is None and score_kind("frame_mdsa") is None
    assert score_columns(["mdsa"], True) == ["mdsa", "max_softmax", "entropy", "margin"]
    assert score_columns(["lsa"], False) == ["lsa"]


def test_baselines_are_the_dispersion_formulas():
    logits = torch.randn(2, 5, 3, 4) * 3
    stats = softmax_stats(logits, 1)
    maps = dispersion_maps(stats)
    for name, value in softmax_scores(logits).items():
        assert torch.equal(value, maps[name]) and torch.equal(baseline_map(name, logits), value)
    flat = logits.movedim(1, -1).reshape(-1, 5)
    assert torch.allclose(softmax_scores(flat, dim=-1)["entropy"], maps["entropy"].flatten())
    # quality_features passes its own top-2 (argmax gather) and a class dim of 0
    p = stats.p[0]
    own = dispersion_maps(SoftmaxStats(stats.logp[0], p, p.max(0).values, p.topk(2, 0).values[1], 0))
    assert torch.equal(own["margin"], maps["margin"][0])


def test_a_registered_logit_score_joins_scoring_and_heatmaps_then_leaves():
    logits = torch.randn(7, 4, dtype=torch.float64)
    with registered_score("energy", energy, description="-logsumexp") as entry:
        assert entry.kind == "baseline" and score_kind("energy") == "baseline"
        got = softmax_scores(logits)
        assert list(got) == ["max_softmax", "entropy", "margin", "energy"]
        np.testing.assert_allclose(got["energy"].numpy(), -np.log(np.exp(logits.numpy()).sum(1)))
        assert score_columns(["mdsa"], True) == ["mdsa", "max_softmax", "entropy", "margin", "energy"]
        image = torch.randn(1, 4, 3, 5)
        assert torch.equal(baseline_map("energy", image), energy(image))
    assert "energy" not in SCORES and list(softmax_scores(logits)) == ["max_softmax", "entropy", "margin"]


def test_a_registered_surprise_score_is_an_estimator_too():
    class Toy(MDSA):
        name = "toy_sa"

    with registered_score("toy_sa", Toy, kind="surprise"):
        assert score_names("surprise")[-1] == "toy_sa" and type(make_estimator("toy_sa")) is Toy
        assert "toy_sa" not in softmax_scores(torch.randn(3, 2))
    assert "toy_sa" not in ESTIMATORS and "toy_sa" not in SCORES


@pytest.mark.parametrize("name, compute, kind, match", [
    ("entropy", energy, "baseline", "is registered"),
    ("Energy", energy, "baseline", "lower-case"),
    ("risk", energy, "baseline", "lower-case"),
    ("energy", energy, "logit", "kind"),
    ("energy", 3.0, "baseline", "function"),
    ("other", MDSA, "surprise", "SurpriseEstimator class named 'other'"),
])
def test_bad_registrations_are_refused(name, compute, kind, match):
    with pytest.raises(DataError, match=match):
        register_score(name, compute, kind=kind)
    assert name not in SCORES or SCORES[name].compute is not compute


def test_softmax_scores_can_be_asked_for_named_baselines():
    logits = torch.randn(5, 3)
    assert list(softmax_scores(logits, names=["margin", "entropy"])) == ["margin", "entropy"]
    with pytest.raises(DataError, match=r"expected baselines from .*, but got \['energy', 'mdsa'\]"):
        softmax_scores(logits, names=["entropy", "energy", "mdsa"])  # e.g. a worker without the registration
    assert DEFAULT_BASELINES == score_names("baseline")


def test_unknown_names():
    with pytest.raises(DataError, match="registered score"):
        unregister_score("energy")
    with pytest.raises(DataError, match=r"baseline score from \['max_softmax'"):
        baseline_map("mdsa", torch.zeros(2, 3))
    with pytest.raises(DataError, match="kind"):
        score_names("logit")
