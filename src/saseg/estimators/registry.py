"""The one estimator registry: names, `make_estimator`, `load_estimator`.

A submodule of its own, so sibling modules (e.g. SA model directories) can use it without
importing the package ``__init__``.
"""

from __future__ import annotations

import os

from ..errors import DataError, FormatError
from .base import SurpriseEstimator, read_metadata
from .dsa import DSA
from .lsa import LSA
from .mdsa import MDSA

ESTIMATORS: dict[str, type[SurpriseEstimator]] = {cls.name: cls for cls in (MDSA, LSA, DSA)}
ESTIMATOR_NAMES: tuple[str, ...] = tuple(ESTIMATORS)
"""The built-in estimator names, in registry order: ("mdsa", "lsa", "dsa"). `ESTIMATORS` itself
also holds those added since (`saseg.estimators.register_score(..., kind="surprise")`)."""


def make_estimator(name: str, **options) -> SurpriseEstimator:
    """An unfitted estimator by registry name, e.g. ``make_estimator("mdsa", shrinkage=0.1)``.

    Parameters
    ----------
    name : str
        A key of `ESTIMATORS` (lower case).
    **options
        The estimator's keyword-only hyperparameters.

    Returns
    -------
    SurpriseEstimator
    """
    cls = ESTIMATORS.get(name)
    if cls is None:
        raise DataError(f"Expected estimators from {list(ESTIMATORS)}, but got {name!r}.")
    params = list(cls().get_params())  # __init__ only stores its keyword-only hyperparameters
    extra = sorted(set(options) - set(params))
    if extra:
        raise DataError(f"Expected {cls.__name__} options from {params}, but got {extra}.")
    return cls(**options)


def load_estimator(path_dir: str | os.PathLike, name: str) -> SurpriseEstimator:
    """Load ``<path_dir>/<name>.json`` + ``.safetensors``, dispatching on the JSON's "estimator"."""
    meta = read_metadata(path_dir, name)
    cls = ESTIMATORS.get(meta["estimator"])
    if cls is None:
        raise FormatError(
            f"{path_dir}/{name}.json: expected estimator one of {sorted(ESTIMATORS)}, but got {meta['estimator']!r}."
        )
    return cls.load(path_dir, name)
