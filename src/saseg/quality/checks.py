"""Checks of a saved quality model at load, as the SA models get (keys, types, finiteness).

A quality model decides which frames are skipped: a NaN coefficient would make every risk
NaN, an infinite one every frame skippable. So nothing in ``quality.json`` is used before it
is checked here, and every failure is one `FormatError` naming the file.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import FormatError

__all__ = ["check_model_meta", "check_params", "check_sha256", "finite_vector", "sha256_bytes", "check_keys"]

_BASE_KEYS = {"format", "format_version", "kind", "features", "settings", "cv", "importances", "state"}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_keys(meta: Any, required: set[str], where: Path, what: str, optional: set[str] = frozenset()) -> dict:
    """`meta` as a dict holding every `required` key and no key outside `required | optional`."""
    if not isinstance(meta, dict):
        raise FormatError(f"{where}: expected {what} as a JSON object, but got {type(meta).__name__}.")
    missing = sorted(required - set(meta))
    unknown = sorted(set(meta) - required - set(optional))
    if missing or unknown:
        raise FormatError(f"{where}: expected {what} with the keys {sorted(required)}, but "
                          + (f"{missing} are missing" if missing else f"got unknown keys {unknown}") + ".")
    return meta


def check_model_meta(meta: Any, where: Path, fmt: str, version: int, params: Mapping[str, Any],
                     kinds: Mapping[str, Sequence[str]]) -> dict:
    """``quality.json`` of one `QualityModel`, checked; `params` are the default settings (names
    and types), `kinds` the registered backends and the files each writes (whose hashes format 2
    must list). Format 1 (before content hashes) is read with ``files`` empty."""
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise FormatError(f"{where}: expected a saseg quality model (format {fmt!r}), but got something else.")
    if meta.get("format_version") not in (1, version):
        raise FormatError(f"{where}: expected format_version 1 or {version}, but got "
                          f"{meta.get('format_version')!r}; refit with `saseg quality fit`.")
    meta = dict(check_keys(meta, _BASE_KEYS | ({"files"} if meta["format_version"] >= 2 else set()),
                           where, "a quality model"))
    if not isinstance(meta["kind"], str) or meta["kind"] not in kinds:
        raise FormatError(f"{where}: expected kind in {list(kinds)} (the registered regressors), but got "
                          f"{meta['kind']!r}.")
    features = meta["features"]
    if (not isinstance(features, list) or not features or not all(isinstance(f, str) and f for f in features)
            or len(set(features)) != len(features)):
        raise FormatError(f"{where}: expected 'features' as a list of distinct feature names, but got "
                          f"{str(features)[:80]}.")
    meta["settings"] = check_params(meta["settings"], params, where)
    meta["cv"] = _cv(meta["cv"], where)
    importances = meta["importances"]
    if not isinstance(importances, dict) or set(importances) != set(features):
        raise FormatError(f"{where}: expected 'importances' for exactly the model's features.")
    finite_vector(list(importances.values()), len(features), where, "importances")
    files = meta.get("files", {})
    if (not isinstance(files, dict) or not all(isinstance(v, str) and _HEX64.fullmatch(v) for v in files.values())
            or (meta["format_version"] >= 2 and any(f not in files for f in kinds[meta["kind"]]))):
        raise FormatError(f"{where}: expected 'files' to map each model file to its sha256, but got {str(files)[:80]}.")
    meta["files"] = files
    return meta


def check_params(settings: Any, params: Mapping[str, Any], where: Path) -> dict:
    """Model settings: names among `params` (the defaults), each of its default's type, >= 0;
    a name setting (default None or a string, e.g. ``regressor``) is null or a short name."""
    if not isinstance(settings, dict) or set(settings) - set(params):
        raise FormatError(f"{where}: expected settings from {sorted(params)}, but got "
                          f"{sorted(settings) if isinstance(settings, dict) else type(settings).__name__}.")
    for key, value in settings.items():
        if params[key] is None or isinstance(params[key], str):
            if value is not None and not (isinstance(value, str) and _NAME.fullmatch(value)):
                raise FormatError(f"{where}: expected setting {key!r} to be null or a name, but got {value!r}.")
            continue
        integer = isinstance(params[key], int)
        ok = (isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value))
        if not ok or isinstance(value, bool) or value < 0:
            raise FormatError(f"{where}: expected setting {key!r} to be a non-negative "
                              f"{'integer' if integer else 'finite number'}, but got {value!r}.")
    return settings


def _cv(cv: Any, where: Path) -> dict:
    """The cross-validation report; null (written for NaN: no value) read back as NaN."""
    cv = dict(check_keys(cv, {"rho", "rho_p", "r2", "n_rows", "n_groups", "n_folds", "single"}, where,
                         "a 'cv' report"))
    for key in ("rho", "rho_p", "r2"):
        cv[key] = _number_or_nan(cv[key], where, f"cv {key}")
    for key in ("n_rows", "n_groups", "n_folds"):
        if not isinstance(cv[key], int) or isinstance(cv[key], bool) or cv[key] < 0:
            raise FormatError(f"{where}: expected cv {key} to be a count, but got {cv[key]!r}.")
    if not isinstance(cv["single"], dict):
        raise FormatError(f"{where}: expected cv 'single' as a JSON object.")
    cv["single"] = {str(k): _number_or_nan(v, where, f"cv single {k}") for k, v in cv["single"].items()}
    return cv


def _number_or_nan(value: Any, where: Path, what: str) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FormatError(f"{where}: expected {what} to be a number or null, but got {value!r}.")
    return float(value)


def finite_vector(values: Any, n: int, where: Path, what: str) -> np.ndarray:
    """`values` as a float64 array of `n` finite numbers, else one line naming `where`."""
    if (not isinstance(values, list) or len(values) != n
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise FormatError(f"{where}: expected {what}: {n} numbers, but got {str(values)[:80]}.")
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise FormatError(f"{where}: expected finite {what}, but it holds NaN or Inf; the file is corrupt: "
                          "refit it (`saseg quality fit`).")
    return array


def check_sha256(data: bytes, expected: str | None, where: Path) -> None:
    """Compare a file's content with the hash its manifest recorded (None: format 1, no hash)."""
    if expected is not None and sha256_bytes(data) != expected:
        raise FormatError(f"{where}: expected the content `saseg quality fit` wrote (sha256 {expected[:12]}...), "
                          "but the file has changed since; refit it (`saseg quality fit`).")
