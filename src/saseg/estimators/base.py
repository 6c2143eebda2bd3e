"""Shared machinery of the surprise estimators: input checks, grouping by class, device cache,
and save/load as safetensors (tensors) plus JSON (metadata), never pickle."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import DataError, DegenerateDataError, FormatError, NotFittedError, UnknownClassError
from ..io import atomic_path, read_json, write_json

FORMAT = "saseg-estimator"
FORMAT_VERSION = 1
BLOCK_BYTES = 8 * 2**20
"""Default memory bound of one (queries x references) block in LSA and DSA: small enough to
stay in cache between the matrix product and the reduction that follows it."""
UNKNOWN_OPTIONS = ("raise", "nan")
"""What `SurpriseEstimator.score` does with rows of a class never fitted."""


def as_tensor(x: Any, what: str, where: str) -> torch.Tensor:
    """`x` as a tensor (detached; numpy arrays without a copy where possible), or a DataError
    naming `what` and `where`."""
    if torch.is_tensor(x):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{where}: expected {what} as a tensor or array, but got {type(x).__name__} ({exc}).") from None


def check_ats(ats: Any, where: str, finite: bool = True) -> torch.Tensor:
    """Return `ats` as an (N, d) floating tensor, finite unless `finite` is False; raise
    naming how many rows are bad.

    Integer arrays become float32; numpy arrays are converted without a copy where possible.
    """
    ats = as_tensor(ats, "ATs", where)
    if ats.ndim != 2:
        raise DataError(f"{where}: expected ATs of shape (N, d), but got shape {tuple(ats.shape)}.")
    if ats.is_complex() or ats.dtype == torch.bool:
        raise DataError(f"{where}: expected real-valued ATs, but got dtype {ats.dtype}.")
    if not ats.is_floating_point():
        ats = ats.to(torch.float32)
    if not finite or bool(torch.isfinite(ats.sum())):  # one cheap pass; NaN and Inf propagate into the sum
        return ats
    bad = ~torch.isfinite(ats).all(dim=1)  # the sum may also have overflowed: check rows
    n_bad = int(bad.sum())
    if n_bad:
        first = int(bad.nonzero()[0, 0])
        raise DegenerateDataError(
            f"{where}: expected finite ATs, but got {n_bad} of {len(ats)} rows with NaN or Inf "
            f"(first at row {first})."
        )
    return ats


def check_inputs(ats: Any, classes: Any, where: str, finite: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ATs (N, d) and class ids (N,); class ids come back int64 on the ATs' device."""
    ats = check_ats(ats, where, finite)
    classes = as_tensor(classes, "class ids", where)
    if classes.ndim != 1 or len(classes) != len(ats):
        raise DataError(
            f"{where}: expected class ids of shape ({len(ats)},), one per AT, but got shape "
            f"{tuple(classes.shape)}."
        )
    if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
        raise DataError(f"{where}: expected integer class ids, but got dtype {classes.dtype}.")
    return ats, classes.to(device=ats.device, dtype=torch.int64)


def check_unknown(unknown: Any, where: str) -> str:
    """Validate the `unknown` option of scoring: "raise" or "nan"."""
    if not isinstance(unknown, str) or unknown not in UNKNOWN_OPTIONS:
        raise DataError(f"{where}: expected unknown to be 'raise' or 'nan', but got {unknown!r}.")
    return unknown


def _class_names(classes: Sequence[int], names: Sequence[str] | Mapping[int, str] | None, where: str):
    if names is None:
        return None
    if isinstance(names, Mapping):
        lookup = {int(k): str(v) for k, v in names.items()}
    else:
        lookup = {i: str(n) for i, n in enumerate(names)}
    missing = [c for c in classes if c not in lookup]
    if missing:
        raise UnknownClassError(
            f"{where}: expected class_names to name every fitted class, but class ids {missing} "
            f"have no name."
        )
    return {c: lookup[c] for c in classes}


def block_shape(n_queries: int, n_refs: int, itemsize: int, block_bytes: int) -> tuple[int, int]:
    """(reference chunk, query chunk) so that a (query chunk, reference chunk) block fits in
    `block_bytes`; references are chunked at 2048 rows, queries fill the rest."""
    ref_chunk = max(1, min(n_refs, 2048, block_bytes // itemsize))
    return ref_chunk, max(1, min(n_queries, block_bytes // (ref_chunk * itemsize)))


def nearest(queries: torch.Tensor, refs: torch.Tensor, block_bytes: int = BLOCK_BYTES):
    """Index of and exact Euclidean distance to the nearest row of `refs` for each query.

    Candidates come from blocked matrix products (``||r||^2 - 2 q.r``, never an (N, M) matrix);
    the winning distance is then recomputed directly, so it has no cancellation error.

    Parameters
    ----------
    queries : Tensor of shape (N, d)
    refs : Tensor of shape (M, d), M >= 1, same dtype and device

    Returns
    -------
    index : int64 Tensor of shape (N,)
    dist : Tensor of shape (N,)
    """
    m = len(refs)
    ref_chunk, q_chunk = block_shape(len(queries), m, queries.element_size(), block_bytes)
    r2 = (refs * refs).sum(dim=1)
    index = torch.empty(len(queries), dtype=torch.int64, device=queries.device)
    for qs in range(0, len(queries), q_chunk):
        q = queries[qs:qs + q_chunk]
        best = torch.full((len(q),), math.inf, dtype=q.dtype, device=q.device)
        arg = torch.zeros(len(q), dtype=torch.int64, device=q.device)
        for rs in range(0, m, ref_chunk):
            g = torch.addmm(r2[rs:rs + ref_chunk], q, refs[rs:rs + ref_chunk].T, alpha=-2.0)
            val, idx = g.min(dim=1)
            better = val < best
            best = torch.where(better, val, best)
            arg = torch.where(better, idx + rs, arg)
        index[qs:qs + q_chunk] = arg
    dist = torch.linalg.vector_norm(queries - refs[index], dim=1)
    return index, dist


class SurpriseEstimator:
    """Base of the class-conditional surprise estimators (scikit-learn style).

    Subclasses set `name`, `_params` (the keyword-only hyperparameters) and
    `independent_classes`, and implement `_fit(ats, classes)` (setting `classes_` sorted,
    `counts_`), `_prepare(device, dtype)` (scoring state on a device, cached),
    `_score_class(k, x, state)`, `_score_dtype`, `_state_tensors()` and `_load_state(tensors)`.
    """

    name: ClassVar[str] = "estimator"
    _params: ClassVar[tuple[str, ...]] = ()
    _propagates_nonfinite: ClassVar[bool] = False
    """True when any NaN/Inf in an AT makes its score non-finite, so `score` can skip the
    input pass and check only the (N,) output."""
    independent_classes: ClassVar[bool] = False
    """True when a class's model and scores use only that class's ATs (MDSA, LSA), so a class
    that cannot be fitted can be left out without changing the others (`fit_per_class`)."""

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, ats, classes, *, class_names=None):
        """Fit one model per class.

        Parameters
        ----------
        ats : Tensor or ndarray of shape (N, d)
            Activation traces of reference (training) pixels.
        classes : Tensor or ndarray of shape (N,), integer
            Class id of each AT (the label of the pixel).
        class_names : sequence of str (indexed by class id) or mapping id -> name, optional
            Recorded in the saved metadata.

        Returns
        -------
        self
        """
        where = f"{type(self).__name__}.fit"
        ats, classes = check_inputs(ats, classes, where)
        if len(ats) == 0:
            raise DegenerateDataError(f"{where}: expected at least one AT, but got none.")
        self._fit(ats, classes)
        self._after_fit(ats.shape[1], class_names, where)
        return self

    def _after_fit(self, d: int, class_names, where: str) -> None:
        self.n_features_in_ = int(d)
        ids = self.classes_.tolist()
        names = _class_names(ids, class_names, where)
        if names is not None or "class_names_" not in self.__dict__:
            self.class_names_ = names
        elif self.class_names_ is not None:  # partial_fit without names keeps the known ones
            self.class_names_ = {c: self.class_names_.get(c, str(c)) for c in ids}
        self._device_cache = {}

    def __getstate__(self) -> dict:
        """Pickled without the per-device scoring cache (rebuilt on first use; may hold
        oneDNN tensors, which do not pickle)."""
        state = dict(self.__dict__)
        state.pop("_device_cache", None)
        return state

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(type(self).__name__)

    # ---- scoring -------------------------------------------------------------------------
    def score(self, ats, classes, *, unknown: str = "raise") -> torch.Tensor:
        """Surprise of each AT with respect to the model of its class (higher = more surprising).

        Parameters
        ----------
        ats : Tensor or ndarray of shape (N, d)
        classes : Tensor or ndarray of shape (N,), integer
            Class of each AT (for new inputs: the predicted class).
        unknown : {"raise", "nan"}, default "raise"
            Rows whose class was never fitted: raise `UnknownClassError`, or score NaN (a class
            too rare to model then gets no SA instead of stopping a whole run).

        Returns
        -------
        Tensor of shape (N,), on the ATs' device; finite except for the NaN of ``unknown="nan"``.
        """
        where = f"{type(self).__name__}.score"
        check_unknown(unknown, where)
        self._check_fitted()
        # with unknown="nan", only the scored (known) rows must be finite: checked on the subset
        finite = unknown == "raise" and not self._propagates_nonfinite
        ats, classes = check_inputs(ats, classes, where, finite=finite)
        if ats.shape[1] != self.n_features_in_:
            raise DataError(
                f"{where}: expected ATs with d={self.n_features_in_} features (as in fit), but got "
                f"{ats.shape[1]}."
            )
        if unknown == "nan" and len(ats):
            dtype = self._score_dtype(ats.dtype)
            known = torch.isin(classes, self._state_on(ats.device, dtype)["classes"])
            if not bool(known.all()):
                out = torch.full((len(ats),), float("nan"), dtype=dtype, device=ats.device)
                if bool(known.any()):
                    out[known] = self._score_rows(ats[known], classes[known], where, check=True)
                return out
        return self._score_rows(ats, classes, where, check=unknown == "nan")

    def _score_rows(self, ats: torch.Tensor, classes: torch.Tensor, where: str, check: bool) -> torch.Tensor:
        """Scores of validated ATs; `check` runs the input finiteness check `score` skipped."""
        if check and not self._propagates_nonfinite:
            check_ats(ats, where)
        dtype = self._score_dtype(ats.dtype)
        ats = ats.to(dtype)
        if len(ats) == 0:
            return torch.empty(0, dtype=dtype, device=ats.device)
        state = self._state_on(ats.device, dtype)
        out = None  # allocated only for several classes: the one-class output is the class's scores
        for k, rows in self._groups(classes, state["classes"], where):
            if rows is None:
                out = self._score_class(k, ats, state)
            else:
                if out is None:
                    out = torch.empty(len(ats), dtype=dtype, device=ats.device)
                out[rows] = self._score_class(k, ats[rows], state)
        if not math.isfinite(out.sum().item()):  # NaN/Inf propagate into the sum (or it overflowed)
            check_ats(ats, where)  # names the rows when the input is to blame
            bad = ~torch.isfinite(out)
            if not bool(bad.any()):
                return out
            raise DegenerateDataError(
                f"{where}: expected finite scores, but {int(bad.sum())} of {len(out)} overflowed "
                f"in {dtype}; the ATs are extremely far from their class."
            )
        return out

    def _score_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return dtype if dtype in (torch.float32, torch.float64) else torch.float32

    def _state_on(self, device: torch.device, dtype: torch.dtype) -> dict:
        key = (str(device), dtype)
        cache = self.__dict__.setdefault("_device_cache", {})
        if key not in cache:
            state = self._prepare(device, dtype)
            state["classes"] = self.classes_.to(device)
            cache[key] = state
            self._class_index = {c: k for k, c in enumerate(self.classes_.tolist())}
        return cache[key]

    def _groups(self, classes: torch.Tensor, known: torch.Tensor, where: str
                ) -> Iterator[tuple[int, torch.Tensor | None]]:
        """Yield (class index k, rows of that class) — rows None when every row is class k."""
        lo, hi = (int(v) for v in torch.aminmax(classes))
        if lo == hi and lo in self._class_index:  # one known class: no per-row lookup
            yield self._class_index[lo], None
            return
        idx = torch.searchsorted(known, classes.contiguous()).clamp_max(len(known) - 1)
        ok = known[idx] == classes
        if not bool(ok.all()):
            unknown = torch.unique(classes[~ok]).tolist()
            raise UnknownClassError(
                f"{where}: expected class ids among the fitted classes {self.classes_.tolist()}, "
                f"but got {unknown}, never seen in fit."
            )
        order = torch.argsort(idx, stable=True)
        ks, counts = torch.unique_consecutive(idx[order], return_counts=True)
        for k, rows in zip(ks.tolist(), torch.split(order, counts.tolist())):
            yield k, rows

    # ---- persistence ---------------------------------------------------------------------
    def _check_loaded(self, d: int, where: Path) -> None:
        """Refuse a loaded state whose tensors disagree with each other (shapes and dtypes
        alone cannot say); a FormatError naming `where`. None to check by default."""

    def _expected_shapes(self, n_classes: int, d: int) -> dict[str, tuple]:
        """Shapes a loaded state must have (``None``: free); subclasses add their tensors."""
        return {"classes": (n_classes,), "counts": (n_classes,)}

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in self._params}

    def save(self, path_dir: str | os.PathLike, name: str | None = None, *,
             provenance: Mapping[str, Any] | None = None) -> Path:
        """Write ``<name>.safetensors`` (tensors) and ``<name>.json`` (metadata) into `path_dir`.

        Each file is written atomically; the JSON goes last, so a readable JSON means a
        complete model. `provenance` (e.g. ``{"layer": "head.features"}``) is stored as given.
        Returns the JSON path.
        """
        self._check_fitted()
        name = name or self.name
        path_dir = Path(path_dir)
        tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self._state_tensors().items()}
        if provenance is not None:
            self.provenance_ = dict(provenance)
        ids = self.classes_.tolist()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "estimator": self.name,
            "saseg_version": __version__,
            "n_features": self.n_features_in_,
            "classes": ids,
            "class_names": None if self.class_names_ is None else {str(c): n for c, n in self.class_names_.items()},
            "n_per_class": {str(c): int(n) for c, n in zip(ids, self.counts_.tolist())},
            "settings": self.get_params(),
            "provenance": getattr(self, "provenance_", None),
        }
        with atomic_path(path_dir / f"{name}.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT})
        json_path = path_dir / f"{name}.json"
        write_json(json_path, meta)
        return json_path

    @classmethod
    def load(cls, path_dir: str | os.PathLike, name: str | None = None):
        """Read a model written by `save` (safetensors + JSON only, no pickle)."""
        name = name or cls.name
        path_dir = Path(path_dir)
        meta = read_metadata(path_dir, name)
        if meta["estimator"] != cls.name:
            raise FormatError(
                f"{path_dir / (name + '.json')}: expected a {cls.name!r} model, but got "
                f"{meta['estimator']!r}; use saseg.estimators.load_estimator."
            )
        st_path = path_dir / f"{name}.safetensors"
        try:
            tensors = load_file(str(st_path))
        except (FileNotFoundError, SafetensorError, OSError) as exc:
            raise FormatError(f"Expected a readable safetensors file at {st_path}, but got: {exc}") from None
        json_path = path_dir / f"{name}.json"
        settings, d, classes = meta.get("settings", {}), meta.get("n_features"), meta.get("classes")
        if not isinstance(settings, dict) or set(settings) - set(cls._params):
            raise FormatError(f"{json_path}: expected settings from {list(cls._params)}, but got {settings!r}.")
        if not isinstance(d, int) or d < 1 or not isinstance(classes, list) or not classes:
            raise FormatError(f"{json_path}: expected 'n_features' (a positive int) and 'classes' (a "
                              f"non-empty list), but got {d!r} and {classes!r}.")
        est = cls(**settings)
        try:
            est._load_state(tensors)
        except KeyError as exc:
            raise FormatError(f"{st_path}: expected tensor {exc}, but it is missing.") from None
        check_state(tensors, est._expected_shapes(len(classes), d), classes, st_path)
        est._check_loaded(d, st_path)
        est.n_features_in_ = d
        names = meta.get("class_names")
        est.class_names_ = None if names is None else {int(k): v for k, v in names.items()}
        est.provenance_ = meta.get("provenance")
        est._device_cache = {}
        return est

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def check_state(tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple], classes: list,
                where: Path) -> None:
    """Refuse a tampered or corrupt state: wrong dtypes or shapes, NaN/Inf, or other classes.

    `shapes` maps tensor names to expected shapes, ``None`` for a free dimension. Every
    floating tensor must be float32/float64 and finite, so a damaged file is named here
    rather than surfacing later as a misleading scoring error.
    """
    for key, value in tensors.items():
        if value.is_floating_point():
            if value.dtype not in (torch.float32, torch.float64):
                raise FormatError(f"{where}: expected tensor {key!r} as float32 or float64, but got {value.dtype}.")
            if not bool(torch.isfinite(value).all()):
                raise FormatError(f"{where}: expected finite values in tensor {key!r}, but it holds NaN or "
                                  "Inf; the file is corrupt.")
        elif key in ("classes", "counts", "offsets") and value.dtype != torch.int64:
            raise FormatError(f"{where}: expected tensor {key!r} as int64, but got {value.dtype}.")
    for key, shape in shapes.items():
        got = tuple(tensors[key].shape)
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            want = tuple("*" if e is None else e for e in shape)
            raise FormatError(f"{where}: expected tensor {key!r} of shape {want}, but got {got}.")
    if tensors["classes"].tolist() != list(classes):
        raise FormatError(f"{where}: expected the classes {classes} listed in its JSON, but the tensors "
                          f"hold {tensors['classes'].tolist()}.")


def read_metadata(path_dir: str | os.PathLike, name: str) -> dict:
    """The JSON metadata of a saved estimator, checked for format and version."""
    path = Path(path_dir) / f"{name}.json"
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "estimator" not in meta:
        raise FormatError(f"{path}: expected saseg estimator metadata (format {FORMAT!r}), but got something else.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: expected format_version {FORMAT_VERSION}, but got {meta.get('format_version')!r}."
        )
    return meta
