"""saseg: Surprise Adequacy for semantic segmentation.

Score unlabelled frames by how surprising they are to a segmentation model (Kim et al.,
ESEC/FSE 2020), label the surprising ones first, and know what skipping the rest costs.
Heavy submodules load lazily so ``import saseg`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "MDSA": "saseg.estimators",
    "LSA": "saseg.estimators",
    "DSA": "saseg.estimators",
    "load_estimator": "saseg.estimators",
    "softmax_scores": "saseg.estimators",
    "ActivationTracer": "saseg.tracing",
    "ClassInfo": "saseg.data.classes",
    "open_dataset": "saseg.data",
    "fit": "saseg.pipeline",
    "score": "saseg.pipeline",
    "evaluate": "saseg.evaluation",
    "plan": "saseg.analysis.plan",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'saseg' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
