"""Class-conditional surprise estimators (MDSA, LSA, DSA) and softmax baselines.

Each estimator fits on ``(ats (N, d), classes (N,))``, scores one surprise per AT, and saves
to ``<name>.safetensors`` + ``<name>.json``. `make_estimator` builds one by name from the
estimator registry `ESTIMATORS`, `load_estimator` reads any of them back, `fit_per_class` leaves
out the classes an estimator cannot model, and `pixel_sa_map` scores every pixel of a frame.
`SCORES` lists every per-pixel score with its kind (surprise or baseline); `softmax_scores`
evaluates the baselines and `register_score` adds one.
"""

from __future__ import annotations

from .base import UNKNOWN_OPTIONS, SurpriseEstimator
from .dsa import DSA
from .fitting import PerClassFit, fit_per_class
from .lsa import LSA
from .mdsa import MDSA
from .pixel import pixel_sa_map
from .registry import ESTIMATOR_NAMES, ESTIMATORS, load_estimator, make_estimator
from .scores import (DEFAULT_BASELINES, SCORE_KINDS, SCORES, Score, baseline_map, register_score,
                     registered_score, score_kind, score_names, softmax_scores, unregister_score)

__all__ = ["MDSA", "LSA", "DSA", "ESTIMATORS", "ESTIMATOR_NAMES", "UNKNOWN_OPTIONS", "PerClassFit",
           "SurpriseEstimator", "fit_per_class", "load_estimator", "make_estimator", "pixel_sa_map",
           "softmax_scores", "DEFAULT_BASELINES", "SCORES", "SCORE_KINDS", "Score", "register_score",
           "unregister_score", "registered_score", "score_names", "score_kind", "baseline_map"]
