"""The retraining experiment of RQ3 (paper section 5.3.3, Tables 4-5), resumable.

Per seed: train a base model on the base set, fit MDSA on it, score the labelled pool, then
for every target class x selection level x size add the selected pool frames to the base set
and train again from scratch with the same hyperparameters and seed. Every model is scored on
the held-out test split by the dataset-level IoU (one confusion matrix over all test frames).

Config (a dict or a JSON file; paths are relative to the current directory)::

    {"base": SET, "pool": SET or [SET, ...], "test": SET,
     "target_classes": ["Car", "Pedestrian"], "levels": ["high", "low", "random", "diverse"],
     "sizes": [0.1, 0.2, 0.3],            # float: fraction of the base set; int: frames
     "seeds": [0, 1, 2],
     "image_size": [H, W] or null,        # resize every frame once (labels: nearest)
     "selection": {"min_pixels": 1000 or {"Car": 250, ...}, "score": "mdsa",
                   "top_fraction": 0.3, "pixels": "label" | "pred"},  # label: the paper's rule
     "train": {train() keywords}, "fit": {fit() keywords}, "score": {score() keywords},
     "device": "cpu", "out": DIR,
     "quick": {overrides applied with quick=True; default: the first seed only}}

    SET := "SPEC" | {"spec": "SPEC", "subset": {"fraction": 0.5, "seed": 0, "part": 0}}

SETs are opened by `saseg.data.compose.open_set`: a subset is part 0 (the first
``round(fraction * n)`` positions of a seeded permutation) or part 1 (the rest), so part 0
as base and part 1 as pool split one set in two disjoint halves.

Output dir: ``runs/<name>/`` (checkpoint + ``result.json``; a run with both is not redone,
and `train` resumes a run killed mid-way), ``sa/<seed>/``, ``scores/<seed>/``,
``selections/<name>.csv``, ``table.csv``, ``summary.csv``, ``retrain.png``, ``experiment.json``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import pipeline
from .analysis.selection import LEVELS, select_frames, selection_spread
from .data import Dataset
from .data.compose import ConcatDataset, ResizedDataset, SubsetDataset, open_set
from .errors import DataError
from .estimators.sa_model import load_sa_model
from .io import check_settings, compare_settings, read_json, write_csv, write_json, write_parquet
from .models import train
from .models.train import dataset_confusion
from .layout import RunDir
from .viz.retrain import plot_retrain

log = logging.getLogger(__name__)

__all__ = ["run_retrain_experiment", "load_config", "SubsetDataset", "ConcatDataset",
           "ResizedDataset", "open_set", "summarise", "evaluate_iou"]

_KEYS = {"base", "pool", "test", "target_classes", "levels", "sizes", "seeds", "image_size",
         "selection", "train", "fit", "score", "device", "out", "quick"}
_DEFAULTS = {"levels": ["high", "low", "random"], "sizes": [0.1, 0.2, 0.3], "seeds": [0, 1, 2],
             "image_size": None, "selection": {}, "train": {}, "fit": {}, "score": {}, "device": "cpu"}


def load_config(config: dict | str | Path, quick: bool = False) -> dict:
    """Validated config with defaults filled in; `quick` applies its ``quick`` overrides."""
    cfg = copy.deepcopy(config) if isinstance(config, dict) else read_json(config)
    where = "config" if isinstance(config, dict) else str(config)
    unknown = sorted(set(cfg) - _KEYS)
    missing = sorted({"base", "pool", "test", "target_classes", "out"} - set(cfg))
    if unknown or missing:
        raise DataError(f"{where}: expected keys {sorted(_KEYS)} (required: base, pool, test, "
                        f"target_classes, out), but got unknown {unknown} and missing {missing}.")
    cfg = {**copy.deepcopy(_DEFAULTS), **cfg}
    if quick:
        for key, value in cfg.get("quick", {"seeds": cfg["seeds"][:1]}).items():
            cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    bad_levels = [lv for lv in cfg["levels"] if lv not in LEVELS]
    if bad_levels or not cfg["levels"] or not cfg["sizes"] or not cfg["seeds"] or not cfg["target_classes"]:
        raise DataError(f"{where}: expected non-empty levels from {list(LEVELS)}, sizes, seeds and "
                        f"target_classes, but got {cfg['levels']}, {cfg['sizes']}, {cfg['seeds']}, "
                        f"{cfg['target_classes']}.")
    if cfg["selection"].get("pixels", "label") not in ("label", "pred"):
        raise DataError(f"{where}: expected selection.pixels 'label' or 'pred', but got {cfg['selection']['pixels']!r}.")
    for key in ("image_size", "crop_size", "scale_range"):
        if cfg["train"].get(key) is not None:
            cfg["train"][key] = tuple(cfg["train"][key])
    return cfg


def _per_target(value, name: str):
    """A setting given once, or per target class as {name: value}."""
    if not isinstance(value, dict):
        return value
    if name not in value:
        raise DataError(f"retrain experiment: expected a selection setting for {name!r} in {value}, but it has none.")
    return value[name]


def run_retrain_experiment(config: dict | str | Path, *, quick: bool = False,
                           progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the RQ3 grid of `config` (module doc) and return the table.

    Returns
    -------
    DataFrame ``table.csv``: one row per (target, level, size, seed) with ``target_iou``,
    ``miou``, ``n_added`` and ``added_spread`` (mean pairwise distance of the added frames'
    AT means); ``level == "base"`` rows (size 0) are the base models.
    """
    cfg = load_config(config, quick)
    out = Path(cfg["out"])
    started = time.perf_counter()
    size = cfg["image_size"]
    base, pool, test = (open_set(cfg[k], size) for k in ("base", "pool", "test"))
    classes = base.classes
    targets = {name: classes.id(name) for name in cfg["target_classes"]}
    for what, data in (("base", base), ("pool", pool), ("test", test)):
        if not data.has_labels or data.classes.names != classes.names:
            raise DataError(f"retrain experiment: expected the {what} set labelled with the base "
                            f"classes {list(classes.names)}, but {data.spec} is not.")
    sel = {"min_pixels": 1000, "score": "mdsa", "top_fraction": 0.3, "pixels": "label", **cfg["selection"]}
    pixels = _pool_pixels(pool, list(targets.values()), out / "pool_pixels.parquet")
    rows = []
    for seed in cfg["seeds"]:
        base_dir = out / "runs" / f"base_{seed}"
        result = _run(base, test, base_dir, cfg, seed, {"level": "base", "size": 0, "n_added": 0}, progress)
        rows += [_row(name, "base", 0, seed, result, classes.names[cid]) for name, cid in targets.items()]
        scores = _score_pool(base_dir, base, pool, out, seed, cfg, progress)
        scores = scores.merge(pixels, on=["frame_id", "class_id"], how="left")
        scores["n_label"] = scores["n_label"].fillna(0).astype("int64")
        means = _class_means(out / "sa" / str(seed))
        chosen = {}  # every selection first: a pool too small fails before any retraining
        for (name, cid), level, sz in ((t, lv, s) for t in targets.items() for lv in cfg["levels"]
                                       for s in cfg["sizes"]):
            picked = select_frames(scores, target_class=cid, level=level, size=sz, seed=seed,
                                   min_pixels=_per_target(sel["min_pixels"], name), score=sel["score"],
                                   top_fraction=sel["top_fraction"], base_size=len(base),
                                   reference=means.get(cid),
                                   pixels_column="n_label" if sel["pixels"] == "label" else "n_pixels")
            run_name = f"{_slug(name)}_{level}_{sz}_{seed}"
            write_csv(out / "selections" / f"{run_name}.csv", picked.drop(columns="at_mean", errors="ignore"))
            chosen[run_name] = (name, level, sz, picked)
        position = {pool.frame_id(i): i for i in range(len(pool))}
        for run_name, (name, level, sz, picked) in chosen.items():
            added = SubsetDataset(pool, [position[f] for f in picked["frame_id"]])
            info = {"target": name, "level": level, "size": sz, "n_added": len(added),
                    "added_spread": _spread(scores, targets[name], picked["frame_id"]),
                    "added": list(picked["frame_id"])}
            result = _run(ConcatDataset([base, added]), test, out / "runs" / run_name, cfg, seed,
                          info, progress)
            rows.append(_row(name, level, sz, seed, result, classes.names[targets[name]]))
    table = pd.DataFrame(rows)
    write_csv(out / "table.csv", table)
    summary = summarise(table)
    write_csv(out / "summary.csv", summary)
    plot_retrain(summary, out / "retrain.png")
    write_json(out / "experiment.json", {
        "config": cfg, "n_base": len(base), "n_pool": len(pool), "n_test": len(test),
        "base": base.spec, "pool": pool.spec, "test": test.spec, "targets": targets,
        "selection": sel, "seconds_this_session": round(time.perf_counter() - started, 1)})
    return table


def _run(train_set: Dataset, test: Dataset, run_dir: Path, cfg: dict, seed: int, info: dict,
         progress: bool) -> dict:
    """Train + evaluate one run, or read its result when it already finished with these settings."""
    settings = {"train": cfg["train"], "seed": seed, "n_train": len(train_set),
                "frames": _digest([train_set.frame_id(i) for i in range(len(train_set))]),
                "test": test.spec}
    result_path = run_dir / "result.json"
    if result_path.is_file() and (run_dir / "model.pt").is_file():
        result = read_json(result_path)
        compare_settings(result.get("settings"), settings, result_path,
                         fresh=f"use another out dir or delete {run_dir}")
        log.info("retrain: %s already done, skipped.", run_dir.name)
        return result
    log.info("retrain: training %s on %d frames.", run_dir.name, len(train_set))
    trained = train(train_set, run_dir, seed=seed, device=cfg["device"], progress=progress,
                    **cfg["train"])
    cm = dataset_confusion(run_dir, test, device=cfg["device"])
    iou, miou = zip(train_set.classes.names, cm.compute().tolist()), cm.miou()
    result = {**info, "seed": seed, "settings": settings, "seconds": trained.seconds,
              "iou": {n: (None if math.isnan(v) else v) for n, v in iou},
              "miou": None if math.isnan(miou) else miou}
    write_json(result_path, result)
    return result


def evaluate_iou(model_dir: str | Path, data: Dataset, device: str = "cpu", batch_size: int = 8) -> np.ndarray:
    """(C,) dataset-level IoU per class over all frames of `data` (NaN: class absent)."""
    return dataset_confusion(model_dir, data, device=device, batch_size=batch_size).compute().numpy()


def _row(target: str, level: str, size, seed: int, result: dict, class_name: str) -> dict:
    iou = result["iou"].get(class_name)
    return {"target": target, "level": level, "size": size, "seed": seed,
            "target_iou": np.nan if iou is None else iou,
            "miou": np.nan if result["miou"] is None else result["miou"],
            "n_added": result.get("n_added", 0),
            "added_spread": np.nan if result.get("added_spread") is None else result["added_spread"]}


def _pool_pixels(pool: Dataset, class_ids: list[int], path: Path) -> pd.DataFrame:
    """Labelled pixels per (pool frame, target class), cached in `path`."""
    if path.is_file():
        cached = pd.read_parquet(path)
        if (set(cached["class_id"]) >= set(class_ids)
                and set(cached["frame_id"]) == {pool.frame_id(i) for i in range(len(pool))}):
            return cached
    rows = [(f.frame_id, c, int((f.label == c).sum())) for f in pool for c in class_ids]
    table = pd.DataFrame(rows, columns=["frame_id", "class_id", "n_label"])
    write_parquet(path, table)
    return table


def _class_means(sa_dir: Path) -> dict[int, np.ndarray]:
    """Training AT mean per class from the MDSA model: the reference for ``diverse``."""
    mdsa = load_sa_model(sa_dir, ["mdsa"])[0]["mdsa"]
    return {int(c): mdsa.means_[k].double().numpy() for k, c in enumerate(mdsa.classes_.tolist())}


def _score_pool(base_dir: Path, base: Dataset, pool: Dataset, out: Path, seed: int, cfg: dict,
                progress: bool) -> pd.DataFrame:
    """Fit MDSA on the base set and score the pool, or read them back (same fit/score settings)."""
    sa_dir, scores_path = out / "sa" / str(seed), RunDir(out / "scores" / str(seed)).scores_path
    stage, stage_path = {"fit": cfg["fit"], "score": cfg["score"]}, scores_path.with_name("stage.json")
    if scores_path.is_file() and stage_path.is_file():  # only finished scores are checked
        check_settings(stage_path, stage, what="fit/score settings",
                       fresh=f"use another out dir or delete {sa_dir} and {scores_path.parent}")
    if not (sa_dir / "sa.json").is_file():
        pipeline.fit(base_dir, base, sa_dir, seed=seed, device=cfg["device"], progress=progress,
                     **{"estimators": ("mdsa",), **cfg["fit"]})
    if not scores_path.is_file():
        pipeline.score(base_dir, sa_dir, pool, scores_path, seed=seed, device=cfg["device"],
                       progress=progress, **{"estimators": ["mdsa"], "softmax": False,
                                             "save_predictions": False, **cfg["score"]})
        write_json(stage_path, stage)
    return pd.read_parquet(scores_path)


def _spread(scores: pd.DataFrame, class_id: int, frame_ids) -> float | None:
    """Mean pairwise distance of the added frames' class embeddings (None without at_mean)."""
    if "at_mean" not in scores.columns:
        return None
    rows = scores[(scores["class_id"] == class_id)].set_index("frame_id")
    spread = selection_spread(np.stack([np.asarray(rows.at[f, "at_mean"], float) for f in frame_ids]))
    return None if np.isnan(spread["mean_pairwise"]) else spread["mean_pairwise"]


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(name).lower())


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Tables 4-5 style: mean and sample std (ddof=1) over seeds per target x level x size."""
    grouped = table.groupby(["target", "level", "size"], sort=False)
    summary = grouped.agg(target_iou_mean=("target_iou", "mean"), target_iou_std=("target_iou", "std"),
                          miou_mean=("miou", "mean"), miou_std=("miou", "std"),
                          n_added=("n_added", "mean"), n_seeds=("seed", "nunique"),
                          **({"added_spread": ("added_spread", "mean")} if "added_spread" in table else {}))
    return summary.reset_index()
