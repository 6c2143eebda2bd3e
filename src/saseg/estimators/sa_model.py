"""An SA model directory: one file pair per fitted estimator plus ``sa.json`` (provenance).

::

    SA_DIR/sa.json                  estimators, model sha256 and layer, data spec, sampler
                                    settings, ATs per class, classes left out and why
    SA_DIR/<name>.safetensors/.json one fitted estimator (`SurpriseEstimator.save`)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import FormatError, ModelError
from ..io import read_json, write_json
from .base import SurpriseEstimator
from .registry import load_estimator

log = logging.getLogger(__name__)

SA_META = "sa.json"

def save_sa_model(sa_dir: str | os.PathLike, fitted: Mapping[str, SurpriseEstimator],
                  provenance: dict) -> Path:
    """Write every estimator, then ``sa.json`` last: a readable ``sa.json`` means a whole model.

    An old ``sa.json`` is removed first, so a refit killed halfway never leaves it naming a
    mix of old and new estimator files.
    """
    sa_dir = Path(sa_dir)
    sa_dir.mkdir(parents=True, exist_ok=True)
    (sa_dir / SA_META).unlink(missing_ok=True)
    for est in fitted.values():
        est.save(sa_dir)
    write_json(sa_dir / SA_META, provenance)
    return sa_dir


def sa_model_sha256(sa_dir: str | os.PathLike) -> str:
    """Hash of an SA model's content (``sa.json`` and every estimator file it lists).

    A resumed ``score`` compares it, so refitting the SA model in place between a crash and
    the rerun is noticed, not silently mixed into one table.
    """
    sa_dir = Path(sa_dir)
    names = [SA_META] + [f"{n}{ext}" for n in sorted(read_sa_provenance(sa_dir)["estimators"])
                         for ext in (".json", ".safetensors")]
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256((sa_dir / name).read_bytes()).digest())
        except FileNotFoundError:
            raise FormatError(f"Expected {sa_dir / name} (listed in {sa_dir / SA_META}), but it "
                              "does not exist.") from None
    return digest.hexdigest()


def read_sa_provenance(sa_dir: str | os.PathLike) -> dict:
    """The ``sa.json`` of an SA model dir."""
    meta = read_json(Path(sa_dir) / SA_META)
    classes = (meta.get("classes") or {}) if isinstance(meta, dict) else None
    names = classes.get("names", []) if isinstance(classes, dict) else None
    if (not isinstance(meta, dict) or not isinstance(meta.get("estimators"), list)
            or not all(isinstance(n, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) for n in meta["estimators"])
            or not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise FormatError(f"{Path(sa_dir) / SA_META}: expected saseg SA provenance with a list of "
                          "'estimators' (names such as mdsa) and of class names, but got something else.")
    return meta


def load_sa_model(sa_dir: str | os.PathLike, names: Sequence[str] | None = None
                  ) -> tuple[dict[str, SurpriseEstimator], dict]:
    """The estimators of an SA model dir (all, or `names`) and its provenance."""
    meta = read_sa_provenance(sa_dir)
    wanted = list(names) if names else meta["estimators"]
    missing = sorted(set(wanted) - set(meta["estimators"]))
    if missing:
        raise FormatError(f"Expected estimators {missing} in {sa_dir}, but it holds {meta['estimators']}.")
    return {n: load_estimator(sa_dir, n) for n in wanted}, meta


def check_fitted_on(provenance: dict, *, sha256: str | None, layer: str, classes: dict,
                    sa_dir: str | os.PathLike, allow_mismatch: bool = False) -> list[str]:
    """Check that an SA model was fitted on this network, layer and class list.

    SA of another model's features is meaningless yet looks like numbers, so a mismatch is an
    error; with `allow_mismatch` it is logged instead (e.g. a fine-tuned copy of the same
    network, scored on purpose). Returns the mismatches found.
    """
    fitted = provenance.get("model") or {}
    problems = []
    if sha256 and fitted.get("sha256") and fitted["sha256"] != sha256:
        problems.append(f"model sha256 {str(fitted['sha256'])[:12]}... (this model: {sha256[:12]}...)")
    if fitted.get("layer") not in (None, layer):
        problems.append(f"layer {fitted['layer']!r} (this model traces {layer!r})")
    names = (provenance.get("classes") or {}).get("names")
    if names is not None and list(names) != list(classes.get("names", [])):
        problems.append(f"classes {list(names)} (this model: {list(classes.get('names', []))})")
    if problems:
        message = (f"{Path(sa_dir) / SA_META}: expected an SA model fitted on this model, but it "
                   f"was fitted with " + "; ".join(problems) + ". Refit it with `saseg fit`, or pass "
                   "--allow-mismatch to score anyway.")
        if not allow_mismatch:
            raise ModelError(message)
        log.warning("%s", message)
    return problems
