"""Class-conditional surprise estimators (MDSA, LSA, DSA) and softmax baselines.

Each estimator fits on ``(ats (N, d), classes (N,))``, scores one surprise per AT, and saves
to ``<name>.safetensors`` + ``<name>.json``; `load_estimator` reads any of them back.
"""

from __future__ import annotations

import os

from ..errors import FormatError
from .base import SurpriseEstimator, read_metadata
from .dsa import DSA
from .lsa import LSA
from .mdsa import MDSA
from .softmax import softmax_scores

ESTIMATORS: dict[str, type[SurpriseEstimator]] = {cls.name: cls for cls in (MDSA, LSA, DSA)}

__all__ = ["MDSA", "LSA", "DSA", "ESTIMATORS", "SurpriseEstimator", "load_estimator", "softmax_scores"]


def load_estimator(path_dir: str | os.PathLike, name: str) -> SurpriseEstimator:
    """Load ``<path_dir>/<name>.json`` + ``.safetensors``, dispatching on the JSON's "estimator"."""
    meta = read_metadata(path_dir, name)
    cls = ESTIMATORS.get(meta["estimator"])
    if cls is None:
        raise FormatError(
            f"{path_dir}/{name}.json: expected estimator one of {sorted(ESTIMATORS)}, but got {meta['estimator']!r}."
        )
    return cls.load(path_dir, name)
