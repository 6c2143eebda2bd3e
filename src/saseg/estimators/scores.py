"""The one registry of per-pixel scores: SA estimators and logit baselines, each with its kind.

Every score is oriented like SA (higher = more surprising / uncertain) and has a *kind*:

- ``"surprise"``: a fitted SA estimator of `ESTIMATORS` (MDSA, LSA, DSA), scored per activation
  trace (`pixel_sa_map` for a whole frame);
- ``"baseline"``: a function ``(logits, dim) -> map`` of the logits alone, e.g. the softmax
  dispersions (`saseg.estimators.softmax`).

Scoring (`softmax_scores`, `saseg.scoring.score_columns`), the review heatmaps, the report and
the CLI ask this table which scores exist and of which kind; none spells a name list. Adding a
logit score is one function and one line::

    def energy(logits, dim=1):
        return -torch.logsumexp(logits, dim)   # free energy (Liu et al., NeurIPS 2020)

    register_score("energy", energy, description="-logsumexp of the logits")

A registered baseline joins the columns of runs scored from then on, after the built-in ones;
runs already written keep the columns their ``score.json`` lists.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..columns import RISK
from ..errors import DataError
from .base import SurpriseEstimator
from .registry import ESTIMATORS
from .softmax import check_logits, entropy, from_softmax, margin, max_softmax, softmax_stats

__all__ = ["SCORE_KINDS", "Score", "SCORES", "DEFAULT_BASELINES", "register_score", "unregister_score", "registered_score",
           "score_names", "score_kind", "softmax_scores", "baseline_map"]

SCORE_KINDS = ("surprise", "baseline")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_RESERVED = {RISK, "quality"}  # the learned scores a quality model adds


@dataclass(frozen=True)
class Score:
    """One per-pixel score.

    Attributes
    ----------
    name : str, its column name in runs
    kind : {"surprise", "baseline"}
    compute : the `SurpriseEstimator` class (surprise), or ``(logits, dim) -> Tensor`` (baseline):
        logits of shape (N, C) or (B, C, H, W) with classes along `dim`, finite float32 or float64;
        returns the shape without `dim`, higher = more uncertain
    description : str, one line for the report and the CLI help (e.g. ``1 - max p``)
    """

    name: str
    kind: str
    compute: Callable
    description: str = ""


SCORES: dict[str, Score] = {}
"""name -> `Score`: the surprise scores (`ESTIMATORS` order), then the baselines, in the order
runs list them."""


def register_score(name: str, compute: Callable, *, kind: str = "baseline", description: str = "") -> Score:
    """Add a score under `name` (lower case, digits and ``_``).

    A baseline's `compute` is ``(logits, dim) -> map``; a surprise score's is a `SurpriseEstimator`
    subclass whose ``name`` is `name`, and it joins `ESTIMATORS` too (`make_estimator`,
    `load_estimator`). A name already registered is refused: `unregister_score` it first.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in _RESERVED:
        raise DataError(f"Expected a score name of lower-case letters, digits and '_' (not {sorted(_RESERVED)}), "
                        f"but got {name!r}.")
    if name in SCORES:
        raise DataError(f"Expected a new score name, but {name!r} is registered ({SCORES[name].kind}).")
    if kind not in SCORE_KINDS:
        raise DataError(f"Expected a score kind in {list(SCORE_KINDS)}, but got {kind!r}.")
    if kind == "surprise":
        if not (isinstance(compute, type) and issubclass(compute, SurpriseEstimator)) or compute.name != name:
            raise DataError(f"Expected a surprise score {name!r} to be a SurpriseEstimator class named "
                            f"{name!r}, but got {compute!r}.")
        ESTIMATORS[name] = compute
    elif not callable(compute):
        raise DataError(f"Expected baseline {name!r} to be a function (logits, dim) -> map, but got {compute!r}.")
    SCORES[name] = score = Score(name, kind, compute, description)
    return score


def unregister_score(name: str) -> Score:
    """Remove a registered score (and its estimator); returns its entry."""
    if name not in SCORES:
        raise DataError(f"Expected a registered score from {list(SCORES)}, but got {name!r}.")
    score = SCORES.pop(name)
    if score.kind == "surprise":
        ESTIMATORS.pop(name, None)
    return score


@contextmanager
def registered_score(name: str, compute: Callable, **options) -> Iterator[Score]:
    """`register_score` for the length of a ``with`` block (tests, one-off scripts)."""
    score = register_score(name, compute, **options)
    try:
        yield score
    finally:
        unregister_score(name)


def score_names(kind: str | None = None) -> tuple[str, ...]:
    """The registered names of `kind` (None: every kind), in registry order."""
    if kind is not None and kind not in SCORE_KINDS:
        raise DataError(f"Expected a score kind in {list(SCORE_KINDS)}, but got {kind!r}.")
    return tuple(n for n, s in SCORES.items() if kind is None or s.kind == kind)


def score_kind(name: str) -> str | None:
    """"surprise" or "baseline"; None for a name not registered here (``risk``, or a score a
    run was written with in another session)."""
    score = SCORES.get(name)
    return None if score is None else score.kind


def softmax_scores(logits, dim: int = 1, names=None) -> dict[str, torch.Tensor]:
    """Every registered baseline of the logits, in registry order (by default ``max_softmax``,
    ``entropy``, ``margin``; `saseg.estimators.softmax` has the formulas).

    Parameters
    ----------
    logits : Tensor or ndarray of shape (N, C) or (B, C, H, W)
        Finite logits; C >= 2 along `dim`.
    dim : int, default 1
        The class dimension.
    names : sequence of str, optional
        Only these baselines, in this order (e.g. the columns a run started with, so a worker
        process that lacks one of them fails loudly instead of leaving a column out).

    Returns
    -------
    dict of str to Tensor, each of the logits' shape without `dim` ((N,) or (B, H, W)), float32
    (float64 for float64 logits), on the logits' device.
    """
    names = score_names("baseline") if names is None else tuple(names)
    unknown = [n for n in names if score_kind(n) != "baseline"]
    if unknown:
        raise DataError(f"softmax_scores: expected baselines from {list(score_names('baseline'))}, but got {unknown}.")
    logits = check_logits(logits, dim, "softmax_scores")
    computes = {name: SCORES[name].compute for name in names}
    shared = [name for name, compute in computes.items() if hasattr(compute, "formula")]
    stats = softmax_stats(logits, dim) if len(shared) > 1 else None  # one softmax for all of them
    return {name: compute.formula(stats) if stats is not None and name in shared else compute(logits, dim)
            for name, compute in computes.items()}


def baseline_map(name: str, logits, dim: int = 1) -> torch.Tensor:
    """One registered baseline of the logits (a heatmap needs only the score it shows)."""
    if score_kind(name) != "baseline":
        raise DataError(f"Expected a baseline score from {list(score_names('baseline'))}, but got {name!r}.")
    return SCORES[name].compute(check_logits(logits, dim, name), dim)


for _cls in tuple(ESTIMATORS.values()):
    register_score(_cls.name, _cls, kind="surprise", description=f"{_cls.__name__} surprise adequacy")
register_score("max_softmax", from_softmax(max_softmax), description="1 - max p")
register_score("entropy", from_softmax(entropy), description="entropy of p")
register_score("margin", from_softmax(margin), description="1 - margin of the top two p")

DEFAULT_BASELINES: tuple[str, ...] = score_names("baseline")
"""The built-in baselines (``max_softmax``, ``entropy``, ``margin``): the baseline columns of
every run scored while no other is registered."""
