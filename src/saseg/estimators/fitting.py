"""Fitting per-class SA models when some classes cannot be modelled: too rare, or degenerate.

One rare or dead class (a handful of pixels, or constant ATs) must not cost every other class
its SA model; pixels predicted as a left-out class then get no SA (NaN, see
``SurpriseEstimator.score(..., unknown="nan")``) rather than a noisy one.
"""

from __future__ import annotations

import logging
import numbers
from typing import Mapping, NamedTuple, Sequence

import torch

from ..errors import DataError, DegenerateDataError
from .base import SurpriseEstimator, check_inputs

logger = logging.getLogger(__name__)


class PerClassFit(NamedTuple):
    """What `fit_per_class` returns; unpacks as ``estimator, too_few, failed``."""

    estimator: SurpriseEstimator
    """The estimator passed in, fitted on the classes kept."""
    too_few: dict[int, int]
    """Class id -> its number of ATs, for classes below ``min_ats_per_class`` (in id order)."""
    failed: dict[int, str]
    """Class id -> the `DegenerateDataError` text of fitting that class alone (in id order)."""


def fit_per_class(estimator: SurpriseEstimator, ats, classes, *,
                  class_names: Sequence[str] | Mapping[int, str] | None = None,
                  min_ats_per_class: int = 1) -> PerClassFit:
    """Fit `estimator` on every class it can model, leaving out those it cannot.

    Two rules, applied in order:

    1. classes with fewer than `min_ats_per_class` ATs are left out (``too_few``);
    2. if the fit on the rest raises `DegenerateDataError` and the estimator's per-class
       models are independent (``independent_classes``: MDSA, LSA), each class is fitted alone
       to find the ones that fail; just those are left out (``failed``) and the rest refitted.
       DSA's scores read the other classes' ATs, so leaving a class out would change them: its
       error is raised as is.

    Parameters
    ----------
    estimator : SurpriseEstimator
        Unfitted (or to be refitted); fitted in place. Single-class probes use fresh copies
        with the same parameters.
    ats : Tensor or ndarray of shape (N, d)
    classes : Tensor or ndarray of shape (N,), integer
    class_names : sequence of str (indexed by class id) or mapping id -> name, optional
        Passed to ``estimator.fit``; also names the classes in messages.
    min_ats_per_class : int, default 1
        Classes with fewer ATs are left out before fitting.

    Returns
    -------
    PerClassFit
        ``(estimator, too_few, failed)``: the fitted estimator, ``{class id: AT count}`` of
        the classes below `min_ats_per_class`, ``{class id: error text}`` of the classes whose
        own fit failed.

    Raises
    ------
    DegenerateDataError
        When no class is left, or the estimator's classes are not independent and its fit fails.
    """
    where = "fit_per_class"
    if isinstance(min_ats_per_class, bool) or not isinstance(min_ats_per_class, numbers.Integral):
        raise DataError(f"{where}: expected min_ats_per_class as an int, but got {min_ats_per_class!r}.")
    ats, classes = check_inputs(ats, classes, where, finite=False)  # the estimator checks the values
    ids, counts = torch.unique(classes, return_counts=True)
    rare = counts < min_ats_per_class
    too_few = {int(c): int(n) for c, n in zip(ids[rare].tolist(), counts[rare].tolist())}
    if too_few:
        named = _by_name(too_few, class_names)
        logger.warning("too few ATs to model classes %s (need %d); pixels predicted as them get no %s",
                       named, min_ats_per_class, estimator.name)
        keep = ~torch.isin(classes, ids[rare])
        ats, classes = ats[keep], classes[keep]
        if not len(classes):
            raise DegenerateDataError(f"Expected at least {min_ats_per_class} ATs for some class, but got {named}.")
    try:
        return PerClassFit(estimator.fit(ats, classes, class_names=class_names), too_few, {})
    except DegenerateDataError:
        if not estimator.independent_classes:
            raise
    failed = {}
    for c in torch.unique(classes).tolist():
        alone = classes == c
        try:
            type(estimator)(**estimator.get_params()).fit(ats[alone], classes[alone])
        except DegenerateDataError as exc:
            failed[c] = str(exc)
    keep = ~torch.isin(classes, torch.tensor(list(failed), dtype=classes.dtype, device=classes.device))
    if not bool(keep.any()):
        raise DegenerateDataError(f"Expected some class with usable ATs, but every class failed: {failed}")
    logger.warning("%s: left out degenerate classes: %s", estimator.name, failed)
    return PerClassFit(estimator.fit(ats[keep], classes[keep], class_names=class_names), too_few, failed)


def _by_name(per_class: dict[int, int], class_names) -> dict:
    """`per_class` keyed by class name where `class_names` has one, else by id."""
    if class_names is None:
        return dict(per_class)
    lookup = class_names if isinstance(class_names, Mapping) else dict(enumerate(class_names))
    return {lookup.get(c, c): v for c, v in per_class.items()}
