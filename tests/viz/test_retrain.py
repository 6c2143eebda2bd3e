import subprocess
import sys

import numpy as np
import pandas as pd
from PIL import Image

from saseg.viz.retrain import plot_retrain


def _summary():
    rows = []
    for target in ("Car", "Pedestrian"):
        rows.append((target, "base", 0, 0.4, 0.05, 0))
        for j, level in enumerate(("high", "low", "random")):
            for n in (4, 8):
                rows.append((target, level, n / 40, 0.4 + 0.05 * j, np.nan if n == 8 else 0.02, n))
    return pd.DataFrame(rows, columns=["target", "level", "size", "target_iou_mean", "target_iou_std",
                                       "n_added"])


def test_plot_retrain_writes_one_panel_per_target(tmp_path):
    summary = _summary()
    path = plot_retrain(summary, tmp_path / "retrain.png")
    assert path == tmp_path / "retrain.png" and [p.name for p in tmp_path.iterdir()] == ["retrain.png"]
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (1000, 400)  # 5 x 4 inches per panel at 100 dpi
    one = plot_retrain(summary[summary.target == "Car"], tmp_path / "car.png")
    with Image.open(one) as img:
        assert img.size == (500, 400)
    plot_retrain(summary[summary.level != "base"], tmp_path / "nobase.png")  # no base line: still drawn
    assert (tmp_path / "nobase.png").stat().st_size > 0
    assert plot_retrain(summary, tmp_path / "again.png").read_bytes() == path.read_bytes()


def test_plot_retrain_leaves_pyplot_alone(tmp_path):
    """No pyplot, no global backend switch: safe inside a notebook or another app."""
    code = ("import sys, pandas as pd; from saseg.viz.retrain import plot_retrain; "
            "s = pd.DataFrame({'target': ['a'], 'level': ['high'], 'size': [0.1], 'n_added': [2], "
            "'target_iou_mean': [0.5], 'target_iou_std': [0.1]}); "
            f"plot_retrain(s, {str(tmp_path / 'p.png')!r}); print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False" and (tmp_path / "p.png").is_file()
