"""The HTML report: sections, exact numbers, escaping, graceful gaps, size bound, bad inputs.

`make_run` writes a fake run dir with pandas, json and PIL only (no saseg code), so the report
is checked against files it did not produce. test_browser.py reuses it.
"""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saseg.errors import DataError, FormatError
from saseg.report import write_report

CLASSES = ["road", "<b>&x", "car"]
SCORES = ["mdsa", "lsa", "max_softmax", "entropy", "margin"]
SECTIONS = ["provenance", "correlation", "agreement", "figures", "maxskip", "plan", "gallery",
            "frames", "classes"]


def _png(path: Path, w: int, h: int, colour=(200, 40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path)


def make_run(root: Path, n_frames: int = 12, *, eval_=True, plan=True, gallery=True) -> Path:
    """A run dir as `saseg score/evaluate/plan` and the gallery step lay it out."""
    rng = np.random.default_rng(0)
    run = root / "run"
    run.mkdir(parents=True)
    ids = [f"seq/<i>{i:05d}" for i in range(n_frames)]
    meta = {"saseg_version": "0.1.0", "model_sha256": "ab" * 32, "sa_dir": "/runs/sa",
            "estimators": ["mdsa", "lsa"], "data": "synthetic:n=12", "n_frames": n_frames,
            "pixels_per_class": 1000, "seed": 0, "batch_size": 8, "model_path": "/m/model.pt",
            "classes": {"names": CLASSES, "groups": {"lanes": [0]}}, "score_columns": SCORES,
            "reference": "self", "skipped": [],
            "timing_this_session": {"forward_s": 1.5, "sa_s": 0.5, "frames": n_frames},
            "sa_provenance": {"model": {"layer": "head.features", "capture": "output",
                                        "align_corners": False, "sha256": "ab" * 32},
                              "data": {"spec": "synthetic:train", "n_frames": 40, "n_used": 40},
                              "sampler": {"pixels_per_class": 100, "max_images": 10000,
                                          "max_ats_per_class": 10000, "seed": 0},
                              "sampled_per_class": {c: 4000 + i for i, c in enumerate(CLASSES)},
                              "fitted_per_class": {c: 3000 + i for i, c in enumerate(CLASSES)},
                              "seconds": 3.25}}
    (run / "score.json").write_text(json.dumps(meta))
    rows = [{"frame_id": f, "frame_index": i, "source": f"/d/{i}.png", "class_id": c,
             "class_name": CLASSES[c], "n_pixels": 500 + c, "n_sampled": 100,
             **{s: float(rng.normal()) for s in SCORES}} for i, f in enumerate(ids) for c in range(3)]
    pd.DataFrame(rows).to_parquet(run / "scores.parquet", index=False)
    frames = pd.DataFrame({"frame_id": ids, "frame_index": range(n_frames), "source": "/d",
                           "n_segments": 3, **{f"group_lanes_{s}": rng.normal(size=n_frames) for s in SCORES},
                           **{f"frame_{s}": rng.normal(size=n_frames) for s in SCORES}})
    frames.to_parquet(run / "frames.parquet", index=False)
    if eval_:
        ev = run / "eval"
        ev.mkdir()
        corr = [(t, k, s, n_frames, float(rng.uniform(-0.9, 0.9)), float(10 ** rng.uniform(-8, 0)), "")
                for t, k in [(c, "class") for c in CLASSES] + [("lanes", "group"), ("frame", "frame")]
                for s in SCORES]
        corr[0] = ("road", "class", "mdsa", n_frames, -0.5731234567891234, 3.4e-07, "")
        corr[1] = ("road", "class", "lsa", 2, math.nan, math.nan, "fewer than 3 frames (2)")
        corr[2] = ("road", "class", "max_softmax", n_frames, 0.1, 0.5, "")  # not significant
        pd.DataFrame(corr, columns=["target", "kind", "score", "n_frames", "rho", "p", "reason"]
                     ).to_csv(ev / "correlation.csv", index=False)
        pd.DataFrame([(c, "class", "mdsa~lsa", n_frames, 0.99, 1e-9, "") for c in CLASSES],
                     columns=["target", "kind", "score", "n_frames", "rho", "p", "reason"]
                     ).to_csv(ev / "agreement.csv", index=False)
        curve = [("frame", "frame", s, o, n_frames, r, int(r * n_frames), m, t, v)
                 for s in SCORES for o in ("sa", "random", "oracle") for r in np.linspace(0, 1, 5)
                 for m, t in (("below_t", 0.5), ("mean_1_minus_iou", math.nan))
                 for v in [{"sa": 0.1, "random": 0.3, "oracle": 0.0}[o] * r]]
        pd.DataFrame(curve, columns=["target", "kind", "score", "order", "n_frames", "skip_ratio",
                                     "n_skipped", "metric", "threshold", "value"]
                     ).to_csv(ev / "tradeoff.csv", index=False)
        pd.DataFrame([("frame", "frame", s, n_frames, 0.5, 0.05, 0.4 + i / 100) for i, s in enumerate(SCORES)],
                     columns=["target", "kind", "score", "n_frames", "threshold", "risk", "max_skip_ratio"]
                     ).to_csv(ev / "max_skip.csv", index=False)
        (ev / "eval.json").write_text(json.dumps({"n_frames": n_frames, "mean_iou": 0.625, "table": "x"}))
        for s in SCORES:
            _png(ev / f"iou_vs_{s}.png", 120, 80)
        _png(ev / "tradeoff_mdsa.png", 120, 80, (40, 40, 200))
    if plan:
        (run / "plan").mkdir()
        order = np.argsort(-frames["frame_mdsa"].to_numpy(), kind="stable")
        queue = pd.DataFrame({"rank": np.arange(1, n_frames + 1), "frame_id": np.array(ids)[order],
                              "frame_index": order, "source": "/d", "frame_mdsa": frames["frame_mdsa"].to_numpy()[order],
                              "action": ["label"] * (n_frames // 2) + ["skip"] * (n_frames - n_frames // 2),
                              "n_segments": 3, "units": 9})
        queue.to_csv(run / "plan" / "plan.csv", index=False)
        (run / "plan" / "plan.json").write_text(json.dumps({
            "n_frames": n_frames, "n_label": n_frames // 2, "n_skip": n_frames - n_frames // 2,
            "skip_ratio": 0.5, "score": "frame_mdsa", "cost_all_usd": 1234.5, "cost_plan_usd": 617.25,
            "saved_usd": 617.25, "units_plan": 54, "nan_frames": 0,
            "expected_inaccuracy": {"below_0.5": 0.125, "mean_1_minus_iou": 0.2}}))
    if gallery:
        index = []
        for which in ("top", "bottom"):
            for k in range(2):
                rel = f"gallery/{which}/{k}_frame.png"
                _png(run / rel, 1500, 500, (10 * k, 100, 50))
                index.append({"frame_id": ids[k], "rank": k + 1, "which": which, "frame_sa": 1.5 - k, "path": rel})
        (run / "gallery" / "index.json").write_text(json.dumps(index))
    return run


class Cells(HTMLParser):
    """Every <td>/<img>/<a> of a page with its attributes (and the text of <td>s)."""

    def __init__(self):
        super().__init__()
        self.tds, self.imgs, self.links, self._td = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self._td = dict(attrs, text="")
            self.tds.append(self._td)
        elif tag == "img":
            self.imgs.append(dict(attrs))
        elif tag == "a":
            self.links.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag == "td":
            self._td = None

    def handle_data(self, data):
        if self._td is not None:
            self._td["text"] += data


def parse(path: Path) -> Cells:
    cells = Cells()
    cells.feed(path.read_text("utf-8"))
    return cells


def test_sections_and_self_contained(tmp_path):
    run = make_run(tmp_path)
    index = write_report(run)
    assert index == run / "report" / "index.html"
    page = index.read_text("utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert "http://" not in page and "https://" not in page
    assert "<script src" not in page and 'rel="stylesheet"' not in page
    cells = parse(index)
    assert len(cells.imgs) == 6 + 4  # 6 plots, 4 thumbnails
    for ref in [i["src"] for i in cells.imgs] + [a["href"] for a in cells.links if not a["href"].startswith("#")]:
        assert (index.parent / ref).is_file(), ref
    assert not [p for p in index.parent.rglob(".*")]  # no temporary files left behind


def test_correlation_numbers_equal_csv(tmp_path):
    run = make_run(tmp_path)
    cells = parse(write_report(run, tmp_path / "out"))
    corr = pd.read_csv(run / "eval" / "correlation.csv")
    got = {(c["data-target"], c["data-kind"], c["data-score"], c["class"].split()[0]): c
           for c in cells.tds if "data-score" in c and "data-kind" in c}
    assert len(got) == 2 * len(corr)
    for row in corr.itertuples():
        rho, p = (got[(row.target, row.kind, row.score, k)] for k in ("rho", "p"))
        for cell, want in ((rho, row.rho), (p, row.p)):
            value = float(cell["data-value"])
            assert (math.isnan(value) and math.isnan(want)) or value == want
    road = {k[2:]: v for k, v in got.items() if k[0] == "road"}
    assert road[("mdsa", "rho")]["text"] == "-0.573" and road[("mdsa", "p")]["text"] == "3.4e-07"
    assert "neg r3" in road[("mdsa", "rho")]["class"] and "ns" not in road[("mdsa", "p")]["class"].split()
    assert road[("lsa", "rho")]["text"] == "-" and road[("lsa", "rho")]["title"] == "fewer than 3 frames (2)"
    assert road[("max_softmax", "p")]["text"] == "0.5" and "ns" in road[("max_softmax", "p")]["class"].split()


def test_other_numbers_come_from_files(tmp_path):
    run = make_run(tmp_path)
    page = write_report(run).read_text("utf-8")
    cells = parse(run / "report" / "index.html")
    skip = {c["data-score"]: float(c["data-value"]) for c in cells.tds
            if "data-score" in c and "data-kind" not in c}
    ms = pd.read_csv(run / "eval" / "max_skip.csv")
    assert skip == dict(zip(ms["score"], ms["max_skip_ratio"]))
    assert "617.25" in page and "1,234.50" in page and "0.625" in page and "12.5%" in page
    assert "3,002" in page  # fitted ATs of the third class
    queue = pd.read_csv(run / "plan" / "plan.csv")
    assert (run / "report" / "plan.csv").read_bytes() == (run / "plan" / "plan.csv").read_bytes()
    first = [c for c in cells.tds if c["text"] == queue["frame_id"].iloc[0]]
    assert first  # the most surprising frame heads the queue table
    scores = pd.read_parquet(run / "scores.parquet")
    medians = scores.groupby("class_name")["mdsa"].median()
    shown = {float(c["data-value"]) for c in cells.tds if "data-value" in c}
    assert all(m in shown for m in medians)


def test_escaping(tmp_path):
    run = make_run(tmp_path)
    page = write_report(run).read_text("utf-8")
    assert "<b>&x" not in page and "<i>0" not in page
    assert "&lt;b&gt;&amp;x" in page and "seq/&lt;i&gt;00000" in page


def test_missing_inputs_degrade(tmp_path):
    run = make_run(tmp_path, eval_=False, plan=False, gallery=False)
    page = write_report(run).read_text("utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in page
    for hint in ("No eval/correlation.csv", "No eval/agreement.csv", "No eval/ folder",
                 "No eval/max_skip.csv", "No plan", "No gallery/"):
        assert hint in page
    (run / "score.json").unlink()
    (run / "scores.parquet").unlink()
    page = write_report(run).read_text("utf-8")
    assert "provenance unknown" in page and "No scores.parquet" in page
    assert "frame_mdsa" in page  # score columns recovered from frames.parquet


def test_images_thumbnailed_and_unreadable_ones_noted(tmp_path):
    run = make_run(tmp_path)
    (run / "eval" / "iou_vs_lsa.png").write_bytes(b"not a png")
    (run / "gallery" / "top" / "1_frame.png").unlink()
    index = write_report(run)
    page = index.read_text("utf-8")
    assert "Could not read iou_vs_lsa.png" in page and "Missing or unreadable review frame" in page
    cells = parse(index)
    thumbs = [i for i in cells.imgs if "gallery" in i["src"]]
    assert len(thumbs) == 3
    for t in thumbs:
        with Image.open(index.parent / t["src"]) as im:
            assert im.size == (640, 213) and im.format == "JPEG"
            assert (int(t["width"]), int(t["height"])) == im.size
    plot = next(i for i in cells.imgs if i["src"].endswith("iou_vs_mdsa.png"))
    assert (index.parent / plot["src"]).read_bytes() == (run / "eval" / "iou_vs_mdsa.png").read_bytes()


def test_size_bound_for_10000_frames(tmp_path):
    run = make_run(tmp_path, n_frames=10_000, gallery=False)
    index = write_report(run)
    assert index.stat().st_size < 2_000_000
    n_rows = index.read_text("utf-8").count("<tr>")
    assert n_rows < 400  # top-N tables only, never one row per frame


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="Expected a run directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds none of them"):
        write_report(tmp_path / "empty")
    run = make_run(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        write_report(run, tmp_path / "afile")
    corr = run / "eval" / "correlation.csv"
    good = corr.read_bytes()
    pd.DataFrame({"target": ["a"], "rho": [0.1]}).to_csv(corr, index=False)
    with pytest.raises(FormatError, match=r"expected columns \['kind', 'score', 'n_frames', 'p'\]"):
        write_report(run)
    corr.write_text("")
    with pytest.raises(FormatError, match="cannot be read"):
        write_report(run)
    corr.write_bytes(good)
    (run / "gallery" / "index.json").write_text('{"top": []}')
    with pytest.raises(FormatError, match="Expected a list of frames"):
        write_report(run)
    (run / "gallery" / "index.json").write_text("[")
    with pytest.raises(FormatError, match="valid JSON"):
        write_report(run)
    (run / "gallery" / "index.json").unlink()
    (run / "frames.parquet").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="Parquet"):
        write_report(run)


def test_gallery_without_index_uses_folders(tmp_path):
    run = make_run(tmp_path)
    (run / "gallery" / "index.json").unlink()
    cells = parse(write_report(run))
    assert len([i for i in cells.imgs if "gallery" in i["src"]]) == 4


def test_review_video_copied_and_linked(tmp_path):
    run = make_run(tmp_path, gallery=False)
    (run / "review.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    index = write_report(run)
    assert (index.parent / "review.mp4").read_bytes() == (run / "review.mp4").read_bytes()
    page = index.read_text("utf-8")
    assert '<video controls preload="none" src="review.mp4"' in page and "No gallery/" in page


def test_retraining_section_shows_the_experiment_summary(tmp_path):
    run = make_run(tmp_path)
    exp = tmp_path / "exp"
    exp.mkdir()
    pd.DataFrame({"target": ["Car", "Car"], "level": ["high", "random"], "size": [0.1, 0.1],
                  "target_iou_mean": [0.61234, 0.5987], "target_iou_std": [0.011, 0.02],
                  "miou_mean": [0.4, 0.41], "n_seeds": [3, 3]}).to_csv(exp / "summary.csv", index=False)
    _png(exp / "retrain.png", 60, 40)
    page = write_report(run, experiment=exp).read_text("utf-8")
    assert '<section id="retrain">' in page and "0.612" in page and "0.599" in page
    assert "retrain.png" in page
    assert "No retraining experiment" in write_report(run, tmp_path / "r2").read_text("utf-8")


def test_headline_shows_guaranteed_saving_and_hindsight_best(tmp_path):
    run = make_run(tmp_path)
    summary = json.loads((run / "plan" / "plan.json").read_text())
    summary.update(unit="segment", saved_usd=1234.5, n_segments=40, n_accepted=22, accepted_share=0.55,
                   guarantee={"unit": "segment", "threshold": 0.3, "alpha": 0.05, "confidence": 0.9,
                              "in_expectation": False, "statement": "Promise: at most 5 %."},
                   hindsight={"best_score": "risk", "best_saved_usd": 2000.0})
    (run / "plan" / "plan.json").write_text(json.dumps(summary))
    page = write_report(run).read_text("utf-8")
    assert "guaranteed saving (5% at 90% confidence)" in page and "1,234.50 USD" in page
    assert "hindsight best (risk; no guarantee)" in page and "2,000.00 USD" in page
    assert "segments accepted (model mask kept)" in page and "55.0%" in page
    plain = make_run(tmp_path / "plain")
    assert "saved by the plan" in write_report(plain).read_text("utf-8")
