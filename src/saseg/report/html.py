"""The static HTML report of a run: one ``index.html`` plus images, readable from disk.

Everything shown is read from the run's files (``score.json``, ``scores.parquet``,
``frames.parquet``, ``eval/``, ``plan/``, ``gallery/``), so the report never disagrees with
them; exact values sit in ``data-value`` attributes next to the rounded text. Each section
says what is missing instead of failing, because a run without labels has no ``eval/``.
Only top-N frames are listed, so a 10,000-frame run still opens in a blink.

This module assembles the page and renders the run's own sections; the ``eval/`` sections are
in `eval_sections`, the cells and tables in `markup`, and reading the run in `inputs`.
"""

from __future__ import annotations

import logging
import math
from importlib import resources
from os import PathLike
from pathlib import Path
from string import Template

import numpy as np

from .. import __version__
from ..columns import default_ranking_score
from ..errors import DataError, FormatError
from ..io import read_json, write_text
from ..layout import RunDir
from . import audit_section, eval_sections
from .inputs import PLOT_WIDTH, THUMB_WIDTH, Run, copy_file, is_baseline, read_csv, read_parquet, require_columns
from .markup import amount, esc, histogram, note, number, table, td

log = logging.getLogger(__name__)

__all__ = ["write_report"]

QUEUE_ROWS = 50
TOP_FRAMES = 20


def write_report(run_dir: str | PathLike, out_dir: str | PathLike | None = None, *,
                 experiment: str | PathLike | None = None) -> Path:
    """Write the report of a scored run to `out_dir` (default ``RUN/report``).

    Parameters
    ----------
    run_dir : path of a run written by ``saseg score`` (and optionally evaluate, plan, gallery)
    out_dir : path of the report folder; created if needed
    experiment : path of a ``saseg experiment retrain`` output dir (RQ3), optional

    Returns
    -------
    Path of ``index.html``. The folder holds it, ``img/`` (plots, gallery thumbnails and the
    full-size review frames) and ``plan.csv``; nothing refers outside it.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError(f"Expected a run directory at {run}, but it does not exist.")
    if not RunDir(run).has_any_output():
        raise DataError(f"Expected a run directory written by `saseg score` (score.json, "
                        f"scores.parquet, frames.parquet) at {run}, but it holds none of them.")
    out = Path(out_dir) if out_dir is not None else run / "report"
    if out.exists() and not out.is_dir():
        raise DataError(f"Expected {out} to be a folder for the report, but it is a file.")
    r = Run(run, out)
    sections = [  # (anchor, nav label, heading, html)
        ("provenance", "Provenance", "Run provenance", _provenance(r)),
        ("correlation", "Table 3", "SA against IoU (Table 3)", eval_sections.correlation(r)),
        ("agreement", "MDSA vs LSA", "MDSA against LSA", eval_sections.agreement(r)),
        ("figures", "Figures", "IoU vs SA and trade-off (Figures 7, 9)", eval_sections.figures(r)),
        ("maxskip", "Max skip", "How much can be skipped", eval_sections.max_skip(r)),
        ("plan", "Plan", "Labelling plan and cost", _plan(r)),
        ("gallery", "Gallery", "Most and least surprising frames (Figure 8)", _gallery(r)),
        ("frames", "Frame SA", "Frame SA", _frames(r)),
        ("classes", "Per class", "SA per class", _classes(r)),
        ("retrain", "Retraining", "Which frames to add for retraining (RQ3, Tables 4-5)",
         _retraining(r, experiment)),
    ]
    if audit_section.has_audit(r):
        sections.insert(1, ("audit", "Audit", "Audit: the pool's IoU from a few labelled frames",
                            audit_section.audit(r)))
    body = _cards(r) + "".join(f'<section id="{k}"><h2>{esc(t)}</h2>{h}</section>\n'
                               for k, _, t, h in sections)
    nav = "".join(f'<a href="#{k}">{esc(n)}</a>' for k, n, _, _ in sections)

    page = Template((resources.files(__package__) / "templates" / "report.html").read_text("utf-8"))
    index = out / "index.html"
    write_text(index, page.substitute(
        title=esc(f"saseg report: {run.resolve().name}"), nav=nav, body=body,
        subtitle=esc(f"{run.resolve()} · {r.meta.get('data', 'unknown data')}"),
        footer=esc(f"Written by saseg {__version__} from the files in {run.resolve()}; "
                 "scores follow Kim et al., ESEC/FSE 2020.")))
    log.info("report written to %s", index)
    return index


# ------------------------------------------------------------------------------ sections
def _cards(r: Run) -> str:
    cards = []
    if r.frames is not None:
        cards.append(("frames scored", f"{len(r.frames):,}"))
    if r.evaluation.summary_path.exists():
        miou = read_json(r.evaluation.summary_path).get("mean_iou")
        if isinstance(miou, (int, float)) and math.isfinite(miou):
            cards.append(("mean class IoU", f"{miou:.3f}"))
    corr = r.eval_csv(r.evaluation.correlation_path, ["target", "score", "rho"])
    if corr is not None and r.scores:
        hit = corr[(corr["target"] == "frame") & (corr["score"] == r.scores[0])]
        if len(hit) and np.isfinite(hit["rho"].iloc[0]):
            cards.append((f"rho(frame {r.scores[0]}, mIoU)", f"{hit['rho'].iloc[0]:.3f}"))
    if r.planning.summary_path.exists():
        s = read_json(r.planning.summary_path)
        if isinstance(s.get("n_label"), int):
            cards.append(("frames to label", f"{s['n_label']:,}"))
        if isinstance(s.get("saved_usd"), (int, float)):
            g = s.get("guarantee") or {}
            label = "saved by the plan"
            if g.get("threshold") is not None or g.get("unit") == "segment":
                how = ("in expectation" if g.get("in_expectation")
                       else f"at {g.get('confidence', 0):.0%} confidence")
                label = f"guaranteed saving ({g.get('alpha', 0):.0%} {how})"
            cards.append((label, f"{s['saved_usd']:,.2f} USD"))
        hindsight = s.get("hindsight") or {}
        if isinstance(hindsight.get("best_saved_usd"), (int, float)):
            cards.append((f"hindsight best ({hindsight.get('best_score')}; no guarantee)",
                          f"{hindsight['best_saved_usd']:,.2f} USD"))
    inner = "".join(f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
                    for k, v in cards)
    return f'<div class="cards">{inner}</div>' if cards else ""


def _provenance(r: Run) -> str:
    if not r.meta:
        return note("No score.json in the run: provenance unknown.")
    m, sa = r.meta, r.sa
    model, fit_data = sa.get("model") or {}, sa.get("data") or {}
    t = m.get("timing_this_session") or {}
    secs, n = t.get("forward_s", 0) + t.get("sa_s", 0), t.get("frames") or 0
    rows = [  # (label, text); text is escaped below
        ("saseg version (score)", m.get("saseg_version")),
        ("model", m.get("model_path") or model.get("path")),
        ("model sha256", m.get("model_sha256") or model.get("sha256")),
        ("traced layer", model and f"{model.get('layer')} ({model.get('capture')}, "
                                   f"align_corners={model.get('align_corners')})"),
        ("SA model", m.get("sa_dir")),
        ("scores", ", ".join(m.get("score_columns") or r.scores)),
        ("scored data", f"{m.get('data')} ({m.get('n_frames')} frames, "
                        f"{len(m.get('skipped') or [])} skipped)"),
        ("scoring", "pixels_per_class" in m and f"{m['pixels_per_class']} pixels per predicted "
                    f"class, seed {m.get('seed')}, batch {m.get('batch_size')}, "
                    f"z-score reference: {m.get('reference')}"),
        ("fit data", fit_data and f"{fit_data.get('spec')} ({fit_data.get('n_used')} of "
                                  f"{fit_data.get('n_frames')} frames used)"),
        ("sampler", ", ".join(f"{k}={v}" for k, v in (sa.get("sampler") or {}).items())),
        ("fit time", number(sa.get("seconds"), ".1f") + " s"),
        ("score time", n and f"{t.get('forward_s', 0):.1f} s forward + {t.get('sa_s', 0):.1f} s SA "
                             f"for {n} frames ({1000 * secs / n:.1f} ms/frame)"),
    ]
    out = '<table class="kv">' + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>"
                                         for k, v in rows if v and v != "- s") + "</table>"
    sampled, fitted = sa.get("sampled_per_class") or {}, sa.get("fitted_per_class") or {}
    if sampled or fitted:
        out += "<h3>Training pixels per class</h3>" + table(
            ["class", "sampled", "ATs fitted"],
            [[td(c, cls="t"), td(f"{sampled.get(c, 0):,}", sampled.get(c)),
              td(f"{fitted.get(c, 0):,}", fitted.get(c))] for c in dict.fromkeys([*sampled, *fitted])],
            sortable=True)
    return out


def _retraining(r: Run, experiment) -> str:
    if experiment is None:
        return note("No retraining experiment given (`saseg report RUN --experiment DIR` after "
                    "`saseg experiment retrain`).")
    exp = Path(experiment)
    summary = read_csv(exp / "summary.csv", ["target", "level", "size", "target_iou_mean", "target_iou_std"])
    if summary is None:
        return note(f"No summary.csv in {exp}: the experiment has not finished.")
    rows = [[td(row.target, cls="t"), td(row.level), td(f"{row.size:g}", row.size),
             td(f"{row.target_iou_mean:.3f}", row.target_iou_mean),
             td(f"{row.target_iou_std:.3f}", row.target_iou_std),
             td(f"{row.miou_mean:.3f}", row.miou_mean) if "miou_mean" in summary else td(""),
             td(f"{int(row.n_seeds)}" if "n_seeds" in summary else "")]
            for row in summary.itertuples()]
    img = r.image(exp / "retrain.png", "retrain.png", PLOT_WIDTH) if (exp / "retrain.png").exists() else None
    fig = (f'<figure class="plot"><img src="{img[0]}" width="{img[1]}" height="{img[2]}" '
           f'alt="retraining results"><figcaption>Target-class IoU after adding frames, mean and '
           f'spread over seeds</figcaption></figure>') if img else ""
    return (f'<p class="lead">Target-class IoU on the held-out split after retraining on the base set '
            f'plus frames chosen by each selection level (mean and std over seeds).</p>'
            + table(["target", "level", "size", "IoU mean", "IoU std", "mIoU mean", "seeds"], rows,
                    sortable=True) + fig)


def _plan(r: Run) -> str:
    summary = read_json(r.planning.summary_path) if r.planning.summary_path.exists() else None
    queue = read_csv(r.planning.queue_path, ["rank", "frame_id", "action"], nrows=QUEUE_ROWS)
    if summary is None and queue is None:
        return note("No plan: run `saseg plan` to get a labelling queue and its cost.")
    out = []
    if summary is not None:
        keys = {"n_frames": "frames", "n_label": "to label", "n_skip": "to skip",
                "skip_ratio": "skip ratio", "score": "ranked by",
                "cost_all_usd": "cost of labelling all (USD)", "cost_plan_usd": "cost of the plan (USD)",
                "saved_usd": "saved (USD)",
                "units_plan": "units in the plan", "nan_frames": "unscored frames (labelled)",
                "n_segments": "segments", "n_accepted": "segments accepted (model mask kept)",
                "accepted_share": "share of segments accepted", "review": "review units per accepted segment"}
        rows = [(label, amount(summary[k], k in ("skip_ratio", "accepted_share"))) for k, label in keys.items()
                if k in summary]
        rows += [("expected among skipped (pilot): " + (f"share with IoU < {k[6:]}" if k.startswith("below_")
                  else "mean 1 - IoU"), amount(v, k.startswith("below_")))
                 for k, v in (summary.get("expected_inaccuracy") or {}).items()]
        out.append('<table class="kv">' + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>"
                                                  for k, v in rows) + "</table>")
        if summary.get("guarantee"):
            out.append(f'<p class="guarantee">{esc(summary["guarantee"]["statement"])}</p>')
        for check in summary.get("shift", []):
            out.append(note(("Shift alarm: " if check["shifted"] else "") + check["statement"]
                            + (" The guarantee may not hold: label a pilot from the new conditions."
                               if check["shifted"] else "")))
        if r.planning.risk_coverage_path.exists():
            img = r.image(r.planning.risk_coverage_path, r.planning.risk_coverage_path.name, PLOT_WIDTH)
            if img:
                out.append(f'<figure class="plot"><img src="{img[0]}" width="{img[1]}" height="{img[2]}" '
                           f'alt="risk-coverage of the guaranteed rule"><figcaption>Risk-coverage of the '
                           f'guaranteed rule on the pilot: failing share of the skipped frames against the '
                           f'share skipped</figcaption></figure>')
    if queue is not None:
        copy_file(r.planning.queue_path, r.out / r.planning.queue_path.name)
        cols = [c for c in queue.columns if c != "source"]
        rows = [[td(v, cls="t") if c == "frame_id" else td(v, cls=f"t {v}") if c == "action"
                 else td(v, v) for c, v in zip(cols, row)]
                for row in queue[cols].itertuples(index=False)]
        out.append(f'<h3>Queue: the first {len(queue)} frames (<a href="{r.planning.QUEUE}">full '
                   f'{r.planning.QUEUE}</a>)</h3>' + table(cols, rows, sortable=True))
    return "".join(out)


def _gallery(r: Run) -> str:
    gdir = r.dir.gallery_dir
    if (gdir / "index.json").exists():
        entries = read_json(gdir / "index.json")
        if not isinstance(entries, list):
            raise FormatError(f"Expected a list of frames in {gdir / 'index.json'}, but got "
                              f"{type(entries).__name__}.")
    else:
        entries = [{"frame_id": p.stem, "which": w, "path": str(p)}
                   for w in ("top", "bottom") for p in sorted((gdir / w).glob("*.png"))]
    if not entries:
        return note("No gallery/: review frames of the most and least surprising frames are "
                    "written by `saseg review`/`saseg demo`.") + _video(r)
    out = []
    for which, title in (("top", "Most surprising"), ("bottom", "Least surprising")):
        figs = []
        for i, ent in enumerate(e for e in entries if e.get("which") == which):
            rel = str(ent.get("path", ""))  # absolute, or relative to the run or to gallery/
            src = next((p for p in (Path(rel), r.run / rel, gdir / rel) if rel and p.is_file()), None)
            thumb = r.image(src, f"gallery_{which}_{i:03d}.jpg", THUMB_WIDTH, "JPEG") if src else None
            full = r.image(src, f"gallery_{which}_{i:03d}_full.png", 10**6) if thumb else None
            label = f"#{ent.get('rank', i + 1)} {ent.get('frame_id', '?')}"
            sa = ent.get("frame_sa")
            label += f" · frame SA {sa:.3f}" if isinstance(sa, (int, float)) else ""
            if thumb is None or full is None:
                figs.append(f"<figure>{note('Missing or unreadable review frame.')}"
                            f"<figcaption>{esc(label)}</figcaption></figure>")
                continue
            href, w, h = thumb
            figs.append(f'<figure><a href="{full[0]}"><img src="{href}" width="{w}" height="{h}" '
                        f'alt="{esc(label)}"></a><figcaption>{esc(label)}</figcaption></figure>')
        if figs:
            out.append(f'<h3>{title}</h3><div class="gallery">{"".join(figs)}</div>')
    return ("".join(out) or note("gallery/index.json lists no top or bottom frames.")) + _video(r)


def _video(r: Run) -> str:
    if not (r.run / "review.mp4").is_file():
        return ""
    copy_file(r.run / "review.mp4", r.out / "review.mp4")
    return ('<h3>Review video</h3><video controls preload="none" src="review.mp4" width="960">'
            '</video><p><a href="review.mp4">review.mp4</a></p>')


def _frames(r: Run) -> str:
    df = r.frames
    try:
        col = default_ranking_score(getattr(df, "columns", []), r.scores)
    except DataError:
        return note("No frames.parquet with a frame score column.")
    require_columns(df, ["frame_id", "frame_index"], r.dir.frames_path)
    df = df[np.isfinite(df[col].to_numpy(dtype=float))]
    order = df.sort_values([col, "frame_index"], ascending=[False, True], kind="stable")
    show = ["frame_id", "frame_index", *(["n_segments"] if "n_segments" in df.columns else []), col]
    out = [f'<p class="lead">{len(df):,} frames with a {esc(col)}; distribution:</p>', histogram(df[col])]
    for title, part in (("Highest", order.head(TOP_FRAMES)), ("Lowest", order.tail(TOP_FRAMES)[::-1])):
        rows = [[td(v, cls="t" if c == "frame_id" else None, value=None if c == "frame_id" else v)
                 for c, v in zip(show, row)] for row in part[show].itertuples(index=False)]
        out.append(f"<h3>{title} {len(part)} by {esc(col)}</h3>" + table(show, rows, sortable=True))
    return "".join(out)


def _classes(r: Run) -> str:
    path = r.dir.scores_path
    df = read_parquet(path)
    if df is None:
        return note("No scores.parquet.")
    require_columns(df, ["class_id", "class_name", "frame_id"], path)
    sa = [s for s in r.scores if not is_baseline(s) and s in df.columns]
    stats = [("mean", lambda x: x.mean()), ("p10", lambda x: x.quantile(0.1)),
             ("median", lambda x: x.median()), ("p90", lambda x: x.quantile(0.9))]
    rows = []
    for cid, g in df.groupby("class_id", sort=True):
        n = g["frame_id"].nunique()
        cells = [td(g["class_name"].iloc[0], cls="t"), td(f"{n:,}", n)]
        if "n_pixels" in g.columns:
            cells.append(td(f"{g['n_pixels'].mean():,.0f}", g["n_pixels"].mean()))
        for s in sa:
            for _, f in stats:
                v = f(g[s].dropna()) if g[s].notna().any() else float("nan")
                cells.append(td(number(v), v))
        rows.append(cells)
    head = ["class", "frames", *(["mean pixels"] if "n_pixels" in df.columns else []),
            *[f"{s} {k}" for s in sa for k, _ in stats]]
    return ('<p class="lead">Class SA (mean over a frame\'s sampled pixels of the class) across '
            'the frames where the class is predicted.</p>' + table(head, rows, sortable=True))
