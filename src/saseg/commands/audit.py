"""``saseg audit sample`` and ``estimate`` over folders: the pool run's tables and saved masks
in, the audit folder (sample, queue) and the estimate folder out. The statistics are
`saseg.analysis.audit` and `saseg.analysis.audit_math`; the folders' files are named in
`saseg.layout.audit`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.audit import UNCERTAINTIES, AuditResult, PoolPredictions, estimate, frame_truth, predict_pool
from ..analysis.audit_math import UNIFORM_SHARE, inclusion_probabilities, systematic_sample
from ..analysis.plan import PriceModel
from ..data import open_dataset
from ..errors import DataError, FormatError
from ..io import read_json, write_csv, write_json
from ..layout import PlanDir, RunDir
from ..layout.audit import AUDIT_DIR, ESTIMATE_JSON, SAMPLE_CSV, SAMPLE_JSON

__all__ = ["pool_predictions", "design_probabilities", "sample_audit", "estimate_audit", "read_audit", "find_estimate"]


def pool_predictions(run: RunDir, predictor: str = "plugin") -> PoolPredictions:
    """The run's predicted intersections and unions per frame and class
    (`saseg.analysis.audit.predict_pool` on its tables)."""
    return predict_pool(run.scores(), run.frames(["frame_id", "frame_index"]), run.classes().num_classes,
                        run.frame_sources(), predictor, where=run.scores_path)


def sample_audit(run: RunDir | str | os.PathLike, n: int, out: str | os.PathLike, *, seed: int = 0,
                 uniform_share: float = UNIFORM_SHARE, predictor: str = "plugin",
                 annotators: int = 3) -> pd.DataFrame:
    """Draw an audit sample of `n` frames of `run` and write the audit folder (module doc)."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    pool = pool_predictions(run, predictor)
    design = {"n": int(n), "uniform_share": float(uniform_share), "uncertainty": UNCERTAINTIES[0]}
    u = pool.uncertainty(design["uncertainty"])
    pi = design_probabilities(pool, design)
    rows = systematic_sample(pi, seed=seed)
    table = pd.DataFrame({"frame_id": pool.frame_ids[rows], "frame_index": pool.frame_index[rows],
                          "source": pool.sources[rows], "pi": pi[rows], "uncertainty": u[rows]})
    segments = run.frames(["frame_id", "n_segments"]) if "n_segments" in run.frames().columns else None
    n_segments = (table["frame_id"].map(dict(zip(segments["frame_id"].astype(str), segments["n_segments"])))
                  .fillna(0).astype(np.int64) if segments is not None else pd.Series(np.zeros(len(table), np.int64)))
    units = PriceModel(annotators=annotators).units(n_segments.to_numpy())
    queue = table.sort_values(["pi", "frame_index"], ascending=[False, True], kind="stable").reset_index(drop=True)
    order = queue["frame_id"].map({f: k for k, f in enumerate(table["frame_id"])}).to_numpy()
    plan = pd.DataFrame({"rank": np.arange(1, len(queue) + 1), "frame_id": queue["frame_id"],
                         "frame_index": queue["frame_index"], "source": queue["source"], "score": queue["pi"],
                         "action": "label", "n_segments": n_segments.to_numpy()[order], "units": units[order]})
    out = Path(out)
    write_csv(out / SAMPLE_CSV, table)
    write_csv(PlanDir(out).queue_path, plan)
    write_json(out / SAMPLE_JSON, {**design, "n_pool": len(pool.frame_ids), "seed": int(seed), "predictor": predictor,
                                   "design": "randomised systematic pi-ps (saseg.analysis.audit_math)",
                                   "run": str(run.root), "pool_fingerprint": pool.fingerprint()})
    return table


def design_probabilities(pool: PoolPredictions, meta: dict) -> np.ndarray:
    """(M,) every pool frame's inclusion probability under an audit sample's design (its ``n``,
    uniform share and uncertainty), as `sample_audit` drew it."""
    return inclusion_probabilities(pool.uncertainty(_uncertainty_of(meta)), int(meta["n"]),
                                   uniform_share=float(meta.get("uniform_share", UNIFORM_SHARE)))


def _uncertainty_of(meta: dict) -> str:
    """The uncertainty a sample's design used: a ``sample.json`` naming none was drawn by the
    first design, ``error_mass``."""
    return meta.get("uncertainty", "error_mass")


def find_estimate(run_root: str | os.PathLike) -> Path | None:
    """The newest estimate folder (holding ``audit.json``) under ``RUN/audit``, or None."""
    found = sorted(Path(run_root, AUDIT_DIR).glob(f"**/{ESTIMATE_JSON}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def read_audit(sample_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """An audit folder's settings and sample table."""
    sample_dir = Path(sample_dir)
    meta = read_json(sample_dir / SAMPLE_JSON)
    if (not isinstance(meta, dict) or not {"pool_fingerprint", "n"} <= meta.keys()
            or isinstance(meta["n"], bool) or not isinstance(meta["n"], int) or meta["n"] < 1
            or _uncertainty_of(meta) not in UNCERTAINTIES):
        raise FormatError(f"{sample_dir / SAMPLE_JSON}: expected an audit sample from `saseg audit sample`.")
    try:
        table = pd.read_csv(sample_dir / SAMPLE_CSV, dtype={"frame_id": str, "source": str}, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"Expected an audit sample at {sample_dir / SAMPLE_CSV}, but it does not exist.") from None
    if not {"frame_id", "pi"} <= set(table.columns) or not pd.api.types.is_numeric_dtype(table["pi"]):
        raise FormatError(f"{sample_dir / SAMPLE_CSV}: expected the sample table of `saseg audit sample` "
                          "(frame_id, numeric pi), but it is not.")
    return meta, table


def estimate_audit(run: RunDir | str | os.PathLike, sample_dir: str | os.PathLike, labels: str,
                   out: str | os.PathLike, *, level: float = 0.9, iou_below: float = 0.5) -> AuditResult:
    """Estimate from an audit folder and a labels spec; write `out` only when every check passes.

    The labels' frame ids must include every sampled frame (extra frames are ignored).
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    sample_dir = Path(sample_dir)
    meta, table = read_audit(sample_dir)
    pool = pool_predictions(run, meta.get("predictor", "plugin"))
    if pool.fingerprint() != meta["pool_fingerprint"]:
        raise DataError(f"audit estimate: expected the pool the sample was drawn from ({meta.get('run')}), but "
                        f"{run.root} holds other frames.")
    pi_pool = design_probabilities(pool, meta)
    ids = table["frame_id"].astype(str).tolist()
    row_of = {f: k for k, f in enumerate(pool.frame_ids)}
    unknown = [f for f in ids if f not in row_of]
    drawn = pi_pool[[row_of[f] for f in ids if f in row_of]]
    if unknown or len(ids) != meta["n"] or len(set(ids)) != len(ids):
        raise DataError(f"audit estimate: expected {sample_dir / SAMPLE_CSV} to hold {meta['n']} distinct frames "
                        f"of {run.root}, but it holds {len(ids)} rows, {len(set(ids))} distinct, {len(unknown)} not "
                        "in the pool (edited?); draw the sample again with `saseg audit sample`.")
    if not np.allclose(drawn, table["pi"].to_numpy(np.float64), rtol=1e-9, atol=0.0):
        raise DataError(f"audit estimate: expected the inclusion probabilities in {sample_dir / SAMPLE_CSV} to be "
                        f"those its design gives on {run.root}, but they differ: the pool's predictions changed "
                        "since the sample was drawn (scored again, or `quality apply` again), or the table was "
                        "edited. Estimate on the run as it was sampled, or draw the sample again.")
    dataset = open_dataset(labels)
    index_of = {dataset.frame_id(i): i for i in range(len(dataset))}
    missing = [f for f in ids if f not in index_of]
    if missing:
        raise DataError(f"audit estimate: expected labels for every sampled frame, but {len(missing)} of {len(ids)} "
                        f"are not in {labels}, e.g. {missing[:3]}; nothing written.")
    classes = run.classes()
    inter, union, frame_iou = [], [], []
    for fid in ids:
        label = dataset[index_of[fid]].label
        if label is None:
            raise DataError(f"audit estimate: expected a label for frame {fid!r} in {labels}, but it has none.")
        pred = run.prediction(fid)
        if label.shape != pred.shape:
            raise DataError(f"audit estimate: expected the label of {fid!r} to be {pred.shape} like its prediction, "
                            f"but got {label.shape}.")
        i, u, f = frame_truth(pred, label, classes)
        inter.append(i), union.append(u), frame_iou.append(f)
    rows = np.array([row_of[f] for f in ids], dtype=np.int64)
    result = estimate(pool, rows, pi_pool, np.array(inter), np.array(union),
                      np.array(frame_iou), classes, level=level, iou_below=iou_below)
    result.summary.update({"labels": labels, "sample": str(sample_dir), "run": str(run.root)})
    result.save(out)
    return result
