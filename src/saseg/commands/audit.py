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
from ..io import check_not_unfinished, read_json, write_csv, write_json
from ..layout import PlanDir, RunDir
from ..layout.audit import AUDIT_DIR, ESTIMATE_JSON, SAMPLE_CSV, SAMPLE_JSON

__all__ = ["pool_predictions", "design_probabilities", "sample_audit", "estimate_audit", "read_audit", "find_estimate",
           "read_estimate"]


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
    out = Path(out)
    if n < 2:
        raise DataError(f"audit sample: expected n >= 2 (an interval needs the spread of at least two "
                        f"labelled frames), but got n = {n}.")
    taken = [p for p in (PlanDir(out).summary_path, RunDir(out).meta_path) if p.exists()]
    if taken:
        raise DataError(f"audit sample: expected an audit folder, but {out} holds {taken[0].name} of another "
                        "command (a plan or a run); write the sample to its own folder.")
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
    (out / SAMPLE_JSON).unlink(missing_ok=True)  # first out, last in: a half-written folder is no sample
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


def read_estimate(folder: str | os.PathLike) -> dict:
    """An estimate folder's ``audit.json``, checked for what readers use (numbers may be null:
    NaN is written as null); a folder a writer left halfway is refused (`check_not_unfinished`)."""
    path = Path(folder) / ESTIMATE_JSON
    check_not_unfinished(folder)
    s = read_json(path)
    real = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    ok = (isinstance(s, dict) and real(s.get("level")) and 0 < s["level"] < 1 and real(s.get("iou_below"))
          and isinstance(s.get("sentence"), str) and isinstance(s.get("method"), str)
          and isinstance(s.get("miou"), dict) and isinstance(s["miou"].get("labels_only"), dict)
          and isinstance(s.get("share_below"), dict))
    if not ok:
        raise FormatError(f"{path}: expected the summary `saseg audit estimate` writes (level, iou_below, "
                          "sentence, method, miou, share_below), but it is not; estimate again.")
    return s


def read_audit(sample_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """An audit folder's settings and sample table."""
    sample_dir = Path(sample_dir)
    check_not_unfinished(sample_dir)
    if not (sample_dir / SAMPLE_JSON).is_file():
        raise DataError(f"Expected an audit sample (from `saseg audit sample`) in {sample_dir}, but it has no "
                        f"{SAMPLE_JSON} (not an audit folder, or one whose writing stopped partway).")
    meta = read_json(sample_dir / SAMPLE_JSON)
    share = meta.get("uniform_share", UNIFORM_SHARE) if isinstance(meta, dict) else None
    if (not isinstance(meta, dict) or not {"pool_fingerprint", "n"} <= meta.keys()
            or isinstance(meta["n"], bool) or not isinstance(meta["n"], int) or meta["n"] < 1
            or not isinstance(meta["pool_fingerprint"], str) or _uncertainty_of(meta) not in UNCERTAINTIES
            or isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1):
        raise FormatError(f"{sample_dir / SAMPLE_JSON}: expected an audit sample from `saseg audit sample`.")
    try:
        table = pd.read_csv(sample_dir / SAMPLE_CSV, dtype={"frame_id": str, "source": str}, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"Expected an audit sample at {sample_dir / SAMPLE_CSV}, but it does not exist.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise FormatError(f"{sample_dir / SAMPLE_CSV}: expected the sample table of `saseg audit sample`, but it "
                          f"cannot be read: {' '.join(str(exc).split())}") from None
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
    if meta["n"] > len(pool.frame_ids):
        raise FormatError(f"{sample_dir / SAMPLE_JSON}: expected n <= {len(pool.frame_ids)} (the pool's frames), "
                          f"but it says n = {meta['n']} (edited?); draw the sample again.")
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
    classes = run.classes()
    if dataset.classes.names != classes.names:
        raise DataError(f"audit estimate: expected labels with the run's classes {list(classes.names)}, but "
                        f"{labels} has {list(dataset.classes.names)}; nothing written.")
    index_of = {dataset.frame_id(i): i for i in range(len(dataset))}
    missing = [f for f in ids if f not in index_of]
    if missing:
        raise DataError(f"audit estimate: expected labels for every sampled frame, but {len(missing)} of {len(ids)} "
                        f"are not in {labels}, e.g. {missing[:3]}; nothing written.")
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
