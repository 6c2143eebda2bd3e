import numpy as np
import pandas as pd
import pytest

from saseg.analysis.correlation import correlation_table, paired_table
from saseg.analysis.tradeoff import curves_from_pairs
from saseg.data.classes import from_names
from saseg.errors import DataError
from saseg.viz.plots import plot_iou_vs_sa, plot_tradeoff

CLASSES = from_names(["road", "car", "bike"], groups={"vehicles": [1, 2]})


def _pairs(n=40):
    rng = np.random.default_rng(0)
    scores, ious, frames = [], [], []
    for f in range(n):
        for c in (0, 1, 2):
            sa = rng.random()
            scores.append((f"f{f}", f, c, sa, sa + 0.1 * rng.random()))
            ious.append((f"f{f}", CLASSES.names[c], "class", c, float(np.clip(1 - sa + 0.2 * rng.normal(), 0, 1))))
        g = rng.normal()
        frames.append((f"f{f}", f, g, g))
        ious.append((f"f{f}", "vehicles", "group", -1, float(1 / (1 + np.exp(g)))))
    s = pd.DataFrame(scores, columns=["frame_id", "frame_index", "class_id", "mdsa", "lsa"])
    fr = pd.DataFrame(frames, columns=["frame_id", "frame_index", "group_vehicles_mdsa", "group_vehicles_lsa"])
    i = pd.DataFrame(ious, columns=["frame_id", "target", "kind", "class_id", "iou"])
    return s, fr, i


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_iou_vs_sa_writes_png(tmp_path):
    s, fr, i = _pairs()
    pairs = paired_table(s, fr, i, ["mdsa", "lsa"], CLASSES)
    out = plot_iou_vs_sa(pairs, tmp_path / "fig7.png", score="mdsa", dpi=50,
                         correlations=correlation_table(s, fr, i, ["mdsa", "lsa"], CLASSES))
    assert _is_png(out)
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(DataError, match="score 'dsa'"):
        plot_iou_vs_sa(pairs, tmp_path / "x.png", score="dsa")
    with pytest.raises(DataError, match="pairs table"):
        plot_iou_vs_sa(pairs.drop(columns="iou"), tmp_path / "x.png")


def test_plot_tradeoff_writes_png(tmp_path):
    s, fr, i = _pairs()
    table = curves_from_pairs(paired_table(s, fr, i, ["mdsa"], CLASSES))
    assert _is_png(plot_tradeoff(table, tmp_path / "fig9.png", score="mdsa", dpi=50))
    assert _is_png(plot_tradeoff(table, tmp_path / "car.png", targets=["car"], references=False, dpi=40))
    with pytest.raises(DataError, match="expected curves"):
        plot_tradeoff(table, tmp_path / "x.png", score="lsa")
    with pytest.raises(DataError, match="trade-off table"):
        plot_tradeoff(table.drop(columns="order"), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
