"""The run as the report reads it: tables checked for their columns, images copied into ``img/``.

A missing file gives None (its section then says so); an unreadable or malformed one raises
`FormatError` naming the file.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from PIL import Image, UnidentifiedImageError

from ..columns import frame_score_names, require_columns as require
from ..errors import FormatError
from ..estimators import SCORES, score_kind
from ..io import atomic_path
from ..layout import EvalDir, PlanDir, RunDir

log = logging.getLogger(__name__)

THUMB_WIDTH = 640
PLOT_WIDTH = 1600


class Run:
    """Paths and shared inputs of one run, plus the copy-into-report helper."""

    def __init__(self, run: Path, out: Path):
        self.run, self.out = run, out
        self.dir = RunDir(run)
        self.evaluation = EvalDir(self.dir.eval_dir)
        self.meta = self.dir.meta() if self.dir.is_scored else {}
        self.sa = self.meta.get("sa_provenance") or {}
        self.frames = read_parquet(self.dir.frames_path)
        self.planning = PlanDir(self.dir.plan_dir if self.dir.plan_dir.is_dir() else run)
        cols = list(self.meta.get("score_columns") or [])
        if not cols and self.frames is not None:  # no score.json: the frame SA columns tell
            cols = frame_score_names(self.frames.columns)
        self.scores = [c for c in cols if not is_baseline(c)] + [c for c in cols if is_baseline(c)]

    def eval_csv(self, path: Path, required: list[str]) -> pd.DataFrame | None:
        """A CSV of the eval folder (`EvalDir` names it), or None when absent."""
        return read_csv(path, required)

    def image(self, src: Path, name: str, max_width: int, fmt: str = "PNG"):
        """Copy (or shrink to `max_width`) an image into ``img/``: (href, width, height) or None."""
        dst = self.out / "img" / re.sub(r"[^A-Za-z0-9._-]", "_", name)
        try:
            with Image.open(src) as im:
                im.load()  # a truncated file fails here, not later in the browser
                w, h = im.size
                if w <= max_width and fmt == "PNG" and im.format == "PNG":
                    copy_file(src, dst)
                else:
                    im = im.convert("RGB")
                    im.thumbnail((max_width, h))
                    w, h = im.size
                    with atomic_path(dst) as tmp:
                        im.save(tmp, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        except (OSError, UnidentifiedImageError) as exc:
            log.warning("report: skipping unreadable image %s (%s)", src, exc)
            return None
        return quote(f"img/{dst.name}"), w, h


def is_baseline(score: str) -> bool:
    """A logit baseline (kind "baseline" in `saseg.estimators.SCORES`): shown after the SA scores
    and apart from them. A name not registered (``risk``) is not one."""
    return score_kind(score) == "baseline"


def baseline_legend(scores) -> str:
    """The baselines among `scores` as the legend lists them, e.g. ``"1 - max p, entropy of p"``."""
    return ", ".join(SCORES[s].description or s for s in scores if is_baseline(s))


def copy_file(src: Path, dst: Path) -> None:
    """Atomic, so an interrupted report never leaves a half-written file behind."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def read_csv(path: Path, required: list[str], nrows: int | None = None) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path, nrows=nrows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise FormatError(f"Expected a CSV table in {path}, but it cannot be read: {exc}") from None
    require_columns(df, required, path)
    return df


def read_parquet(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise FormatError(f"Expected a Parquet table in {path}, but it cannot be read: {exc}"
                          ) from None


def require_columns(df: pd.DataFrame, columns: list[str], path) -> None:
    """`saseg.columns.require_columns` for a file the report reads (a `FormatError`)."""
    require(df, columns, path, error=FormatError)
