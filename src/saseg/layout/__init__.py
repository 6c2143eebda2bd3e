"""Where saseg's outputs live: each folder's file names are spelled in exactly one class here.

- `RunDir` (`run.py`): a scored run (``scores.parquet``, ``frames.parquet``, ``score.json``, ...).
- `EvalDir` (`eval.py`): what ``saseg evaluate`` writes (``iou.parquet``, ``eval.json``, ...).
- `PlanDir` (`plan.py`): what ``saseg plan`` writes (``plan.csv``, ``plan.json``, ...).
- `QualityDir` (`quality.py`): what ``saseg quality fit`` writes (``run_quality.json``, ...).

Column names follow one grammar too, in `saseg.columns`.
"""

from .eval import EvalDir
from .plan import PlanDir
from .quality import QualityDir
from .run import SCORES, RunDir, encode_prediction, frame_relpath, frame_stem

__all__ = ["RunDir", "EvalDir", "PlanDir", "QualityDir", "SCORES", "encode_prediction",
           "frame_relpath", "frame_stem"]
