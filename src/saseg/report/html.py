"""The static HTML report of a run: one ``index.html`` plus images, readable from disk.

Everything shown is read from the run's files (``score.json``, ``scores.parquet``,
``frames.parquet``, ``eval/``, ``plan/``, ``gallery/``), so the report never disagrees with
them; exact values sit in ``data-value`` attributes next to the rounded text. Each section
says what is missing instead of failing, because a run without labels has no ``eval/``.
Only top-N frames are listed, so a 10,000-frame run still opens in a blink.
"""

from __future__ import annotations

import html
import logging
import math
import re
from importlib import resources
from os import PathLike
from pathlib import Path
from string import Template
from urllib.parse import quote

import numpy as np
import pandas as pd

from ..errors import DataError, FormatError
from ..io import atomic_path, read_json, write_text

log = logging.getLogger(__name__)

__all__ = ["write_report"]

SOFTMAX = ("max_softmax", "entropy", "margin")
THUMB_WIDTH = 640
PLOT_WIDTH = 1600
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
    if not any((run / n).exists() for n in ("score.json", "scores.parquet", "frames.parquet")):
        raise DataError(f"Expected a run directory written by `saseg score` (score.json, "
                        f"scores.parquet, frames.parquet) at {run}, but it holds none of them.")
    out = Path(out_dir) if out_dir is not None else run / "report"
    if out.exists() and not out.is_dir():
        raise DataError(f"Expected {out} to be a folder for the report, but it is a file.")
    r = _Run(run, out)
    sections = [  # (anchor, nav label, heading, html)
        ("provenance", "Provenance", "Run provenance", _provenance(r)),
        ("correlation", "Table 3", "SA against IoU (Table 3)", _correlation(r)),
        ("agreement", "MDSA vs LSA", "MDSA against LSA", _agreement(r)),
        ("figures", "Figures", "IoU vs SA and trade-off (Figures 7, 9)", _figures(r)),
        ("maxskip", "Max skip", "How much can be skipped", _max_skip(r)),
        ("plan", "Plan", "Labelling plan and cost", _plan(r)),
        ("gallery", "Gallery", "Most and least surprising frames (Figure 8)", _gallery(r)),
        ("frames", "Frame SA", "Frame SA", _frames(r)),
        ("classes", "Per class", "SA per class", _classes(r)),
        ("retrain", "Retraining", "Which frames to add for retraining (RQ3, Tables 4-5)",
         _retraining(r, experiment)),
    ]
    body = _cards(r) + "".join(f'<section id="{k}"><h2>{_e(t)}</h2>{h}</section>\n'
                               for k, _, t, h in sections)
    nav = "".join(f'<a href="#{k}">{_e(n)}</a>' for k, n, _, _ in sections)
    from .. import __version__

    page = Template((resources.files(__package__) / "templates" / "report.html").read_text("utf-8"))
    index = out / "index.html"
    write_text(index, page.substitute(
        title=_e(f"saseg report: {run.resolve().name}"), nav=nav, body=body,
        subtitle=_e(f"{run.resolve()} · {r.meta.get('data', 'unknown data')}"),
        footer=_e(f"Written by saseg {__version__} from the files in {run.resolve()}; "
                  "scores follow Kim et al., ESEC/FSE 2020.")))
    log.info("report written to %s", index)
    return index


class _Run:
    """Paths and shared inputs of one run, plus the copy-into-report helper."""

    def __init__(self, run: Path, out: Path):
        self.run, self.out = run, out
        self.eval = run / "eval"
        self.meta = read_json(run / "score.json") if (run / "score.json").exists() else {}
        self.sa = self.meta.get("sa_provenance") or {}
        self.frames = _parquet(run / "frames.parquet")
        self.plan_dir = run / "plan" if (run / "plan").is_dir() else run
        cols = list(self.meta.get("score_columns") or [])
        if not cols and self.frames is not None:  # no score.json: the frame SA columns tell
            cols = [c[len("frame_"):] for c in self.frames.columns
                    if c.startswith("frame_") and c not in ("frame_id", "frame_index")]
        self.scores = [c for c in cols if c not in SOFTMAX] + [c for c in SOFTMAX if c in cols]

    def eval_csv(self, name: str, required: list[str]) -> pd.DataFrame | None:
        return _csv(self.eval / name, required)

    def image(self, src: Path, name: str, max_width: int, fmt: str = "PNG"):
        """Copy (or shrink to `max_width`) an image into ``img/``: (href, width, height) or None."""
        from PIL import Image, UnidentifiedImageError

        dst = self.out / "img" / re.sub(r"[^A-Za-z0-9._-]", "_", name)
        try:
            with Image.open(src) as im:
                im.load()  # a truncated file fails here, not later in the browser
                w, h = im.size
                if w <= max_width and fmt == "PNG" and im.format == "PNG":
                    _copy(src, dst)
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


# ------------------------------------------------------------------------------ sections
def _cards(r: _Run) -> str:
    cards = []
    if r.frames is not None:
        cards.append(("frames scored", f"{len(r.frames):,}"))
    if (r.eval / "eval.json").exists():
        miou = read_json(r.eval / "eval.json").get("mean_iou")
        if isinstance(miou, (int, float)) and math.isfinite(miou):
            cards.append(("mean class IoU", f"{miou:.3f}"))
    corr = r.eval_csv("correlation.csv", ["target", "score", "rho"])
    if corr is not None and r.scores:
        hit = corr[(corr["target"] == "frame") & (corr["score"] == r.scores[0])]
        if len(hit) and np.isfinite(hit["rho"].iloc[0]):
            cards.append((f"rho(frame {r.scores[0]}, mIoU)", f"{hit['rho'].iloc[0]:.3f}"))
    if (r.plan_dir / "plan.json").exists():
        s = read_json(r.plan_dir / "plan.json")
        if isinstance(s.get("n_label"), int):
            cards.append(("frames to label", f"{s['n_label']:,}"))
        if isinstance(s.get("saved_usd"), (int, float)):
            cards.append(("saved by the plan", f"{s['saved_usd']:,.2f} USD"))
    inner = "".join(f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
                    for k, v in cards)
    return f'<div class="cards">{inner}</div>' if cards else ""


def _provenance(r: _Run) -> str:
    if not r.meta:
        return _note("No score.json in the run: provenance unknown.")
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
        ("fit time", _num(sa.get("seconds"), ".1f") + " s"),
        ("score time", n and f"{t.get('forward_s', 0):.1f} s forward + {t.get('sa_s', 0):.1f} s SA "
                             f"for {n} frames ({1000 * secs / n:.1f} ms/frame)"),
    ]
    out = '<table class="kv">' + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                                         for k, v in rows if v and v != "- s") + "</table>"
    sampled, fitted = sa.get("sampled_per_class") or {}, sa.get("fitted_per_class") or {}
    if sampled or fitted:
        out += "<h3>Training pixels per class</h3>" + _table(
            ["class", "sampled", "ATs fitted"],
            [[_td(c, cls="t"), _td(f"{sampled.get(c, 0):,}", sampled.get(c)),
              _td(f"{fitted.get(c, 0):,}", fitted.get(c))] for c in dict.fromkeys([*sampled, *fitted])],
            sortable=True)
    return out


def _correlation(r: _Run) -> str:
    corr = r.eval_csv("correlation.csv", ["target", "kind", "score", "n_frames", "rho", "p"])
    if corr is None:
        return _note("No eval/correlation.csv: run `saseg evaluate` on labelled frames to see "
                     "whether the model does worse on more surprising frames.")
    scores = _order(corr["score"], r.scores)
    head1 = ('<th class="t" rowspan="2">target</th><th rowspan="2">kind</th><th rowspan="2">n</th>'
             + "".join(f'<th colspan="2"{" class=base" if s in SOFTMAX else ""}>{_e(s)}</th>'
                       for s in scores))
    head2 = "<th>rho</th><th>p</th>" * len(scores)
    rows, last_kind = [], None
    for (target, kind), sub in corr.groupby(["target", "kind"], sort=False):
        by = sub.drop_duplicates("score").set_index("score")
        n_max = sub["n_frames"].max()
        cells = [_td(target, cls="t"), _td(kind, cls="kind"), _td(n_max, n_max)]
        for s in scores:
            attrs = {"target": target, "kind": kind, "score": s}
            if s not in by.index:
                cells += [_td("", cls="rho", **attrs), _td("", cls="p", **attrs)]
                continue
            rho, p, n = by.loc[s, "rho"], by.loc[s, "p"], by.loc[s, "n_frames"]
            ns = " ns" if np.isfinite(p) and p >= 0.05 else ""
            reason = by.loc[s, "reason"] if "reason" in by.columns else None
            title = reason if isinstance(reason, str) and reason else f"n = {n}"
            cells += [_td(_num(rho, ".3f"), rho, cls=f"rho {_strength(rho)}{ns}", title=title, **attrs),
                      _td(_num(p, ".2g"), p, cls=f"p{ns}", **attrs)]
        sep = ' class="sep"' if last_kind is not None and kind != last_kind else ""
        rows.append(f"<tr{sep}>{''.join(cells)}</tr>")
        last_kind = kind
    legend = ('<p class="legend">Spearman rho of SA against IoU across frames; negative = more '
              'surprise, lower IoU. |rho|: <span class="neg r1">0.1-0.3</span><span class="neg r2">'
              '0.3-0.5</span><span class="neg r3">&ge; 0.5</span> (red: positive). Faded cells: '
              'p &ge; 0.05. Shaded headers: softmax baselines (1 - max p, entropy, 1 - margin), '
              'oriented like SA: higher = less certain, so negative rho is expected too.</p>')
    table = (f'<div class="scroll"><table class="corr"><thead><tr>{head1}</tr><tr>{head2}</tr>'
             f'</thead><tbody>{"".join(rows)}</tbody></table></div>')
    return legend + table


def _agreement(r: _Run) -> str:
    agr = r.eval_csv("agreement.csv", ["target", "kind", "n_frames", "rho", "p"])
    if agr is None:
        return _note("No eval/agreement.csv (written when both MDSA and LSA are scored).")
    rows = [[_td(a.target, cls="t"), _td(a.kind, cls="kind"), _td(a.n_frames, a.n_frames),
             _td(_num(a.rho, ".3f"), a.rho, cls="rho"), _td(_num(a.p, ".2g"), a.p, cls="p")]
            for a in agr.itertuples()]
    return ('<p class="lead">Spearman rho between the two scores across frames; the paper finds '
            'rho &gt; 0.98 everywhere, so the cheap MDSA ranks frames like LSA.</p>'
            + _table(["target", "kind", "n", "rho", "p"], rows, sortable=True))


def _figures(r: _Run) -> str:
    if not r.eval.is_dir():
        return _note("No eval/ folder: figures need labelled frames (`saseg evaluate`).")
    out, baselines = [], []
    for prefix, caption in (("iou_vs_", "IoU against {} per class and group (Figure 7)"),
                            ("tradeoff_", "Share of skipped frames below the IoU threshold against "
                             "the skip ratio, {} order with random and oracle references (Figure 9)")):
        found = {p.stem[len(prefix):]: p for p in sorted(r.eval.glob(f"{prefix}*.png"))}
        for s in _order(found, r.scores):
            img = r.image(found[s], found[s].name, PLOT_WIDTH)
            fig = (_note(f"Could not read {found[s].name}.") if img is None else
                   f'<figure class="plot"><a href="{img[0]}"><img src="{img[0]}" width="{img[1]}" '
                   f'height="{img[2]}" alt="{_e(found[s].name)}"></a>'
                   f'<figcaption>{_e(caption.format(s))}</figcaption></figure>')
            (baselines if s in SOFTMAX else out).append(fig)
    if baselines:
        out.append(f"<details><summary>Softmax baselines ({len(baselines)} plots)</summary>"
                   f"{''.join(baselines)}</details>")
    return "".join(out or [_note("No plots in eval/ (evaluate ran with plots off).")]) + _glance(r)


def _glance(r: _Run) -> str:
    """Trade-off values at a few skip ratios: SA order next to its references."""
    curve = r.eval_csv("tradeoff.csv", ["target", "score", "order", "skip_ratio", "metric",
                                         "threshold", "value"])
    if curve is None:
        return _note("No eval/tradeoff.csv.")
    below = curve[curve["metric"] == "below_t"]
    if below.empty:
        return ""
    t = float(below["threshold"].min())
    target = "frame" if (below["target"] == "frame").any() else str(below["target"].iloc[0])
    sub = below[(below["target"] == target) & np.isclose(below["threshold"], t)]
    ratios, orders = (0.25, 0.5, 0.75), ("sa", "random", "oracle")
    rows = []
    for s in _order(sub["score"], r.scores):
        cells = [_td(s, cls="t")]
        for q in ratios:
            for o in orders:
                hit = sub[(sub["score"] == s) & (sub["order"] == o) & np.isclose(sub["skip_ratio"], q)]
                v = hit["value"].iloc[0] if len(hit) else float("nan")
                cells.append(_td(_num(v, ".1%"), v))
        rows.append(cells)
    head = "".join(f'<th colspan="3">skip {q:.0%}</th>' for q in ratios)
    sub_head = "<th>SA</th><th>random</th><th>oracle</th>" * len(ratios)
    body = "".join(f"<tr>{''.join(c)}</tr>" for c in rows)
    return (f'<h3>Share of skipped frames with IoU &lt; {t:g} (target {_e(target)})</h3>'
            f'<div class="scroll"><table><thead><tr><th class="t" rowspan="2">score</th>{head}</tr>'
            f'<tr>{sub_head}</tr></thead><tbody>{body}</tbody></table></div>')


def _max_skip(r: _Run) -> str:
    ms = r.eval_csv("max_skip.csv", ["target", "kind", "score", "max_skip_ratio"])
    if ms is None:
        return _note("No eval/max_skip.csv: needs a labelled evaluation.")
    scores = _order(ms["score"], r.scores)
    rows = []
    for (target, kind), sub in ms.groupby(["target", "kind"], sort=False):
        by = sub.drop_duplicates("score").set_index("score")["max_skip_ratio"]
        rows.append([_td(target, cls="t"), _td(kind, cls="kind")] + [
            _td(f"{by[s]:.0%}", by[s], score=s, target=target) if s in by.index else _td("")
            for s in scores])
    risk = ms["risk"].iloc[0] if "risk" in ms.columns and len(ms) else float("nan")
    t = ms["threshold"].iloc[0] if "threshold" in ms.columns and len(ms) else float("nan")
    return (f'<p class="lead">Largest share of frames that can go unlabelled (lowest SA first) '
            f'while at most {_e(f"{risk:.0%}")} of the skipped frames have IoU below '
            f'{_e(f"{t:g}")}.</p>' + _table(["target", "kind", *scores], rows, sortable=True))


def _retraining(r: _Run, experiment) -> str:
    if experiment is None:
        return _note("No retraining experiment given (`saseg report RUN --experiment DIR` after "
                     "`saseg experiment retrain`).")
    exp = Path(experiment)
    summary = _csv(exp / "summary.csv", ["target", "level", "size", "target_iou_mean", "target_iou_std"])
    if summary is None:
        return _note(f"No summary.csv in {exp}: the experiment has not finished.")
    rows = [[_td(row.target, cls="t"), _td(row.level), _td(f"{row.size:g}", row.size),
             _td(f"{row.target_iou_mean:.3f}", row.target_iou_mean),
             _td(f"{row.target_iou_std:.3f}", row.target_iou_std),
             _td(f"{row.miou_mean:.3f}", row.miou_mean) if "miou_mean" in summary else _td(""),
             _td(f"{int(row.n_seeds)}" if "n_seeds" in summary else "")]
            for row in summary.itertuples()]
    img = r.image(exp / "retrain.png", "retrain.png", PLOT_WIDTH) if (exp / "retrain.png").exists() else None
    fig = (f'<figure class="plot"><img src="{img[0]}" width="{img[1]}" height="{img[2]}" '
           f'alt="retraining results"><figcaption>Target-class IoU after adding frames, mean and '
           f'spread over seeds</figcaption></figure>') if img else ""
    return (f'<p class="lead">Target-class IoU on the held-out split after retraining on the base set '
            f'plus frames chosen by each selection level (mean and std over seeds).</p>'
            + _table(["target", "level", "size", "IoU mean", "IoU std", "mIoU mean", "seeds"], rows,
                     sortable=True) + fig)


def _plan(r: _Run) -> str:
    summary = read_json(r.plan_dir / "plan.json") if (r.plan_dir / "plan.json").exists() else None
    queue = _csv(r.plan_dir / "plan.csv", ["rank", "frame_id", "action"], nrows=QUEUE_ROWS)
    if summary is None and queue is None:
        return _note("No plan: run `saseg plan` to get a labelling queue and its cost.")
    out = []
    if summary is not None:
        keys = {"n_frames": "frames", "n_label": "to label", "n_skip": "to skip",
                "skip_ratio": "skip ratio", "score": "ranked by",
                "cost_all_usd": "cost of labelling all (USD)", "cost_plan_usd": "cost of the plan (USD)",
                "saved_usd": "saved (USD)",
                "units_plan": "units in the plan", "nan_frames": "unscored frames (labelled)"}
        rows = [(label, _fmt(summary[k], k == "skip_ratio")) for k, label in keys.items() if k in summary]
        rows += [("expected among skipped (pilot): " + (f"share with IoU < {k[6:]}" if k.startswith("below_")
                  else "mean 1 - IoU"), _fmt(v, k.startswith("below_")))
                 for k, v in (summary.get("expected_inaccuracy") or {}).items()]
        out.append('<table class="kv">' + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                                                  for k, v in rows) + "</table>")
    if queue is not None:
        _copy(r.plan_dir / "plan.csv", r.out / "plan.csv")
        cols = [c for c in queue.columns if c != "source"]
        rows = [[_td(v, cls="t") if c == "frame_id" else _td(v, cls=f"t {v}") if c == "action"
                 else _td(v, v) for c, v in zip(cols, row)]
                for row in queue[cols].itertuples(index=False)]
        out.append(f'<h3>Queue: the first {len(queue)} frames (<a href="plan.csv">full plan.csv'
                   f'</a>)</h3>' + _table(cols, rows, sortable=True))
    return "".join(out)


def _gallery(r: _Run) -> str:
    gdir = r.run / "gallery"
    if (gdir / "index.json").exists():
        entries = read_json(gdir / "index.json")
        if not isinstance(entries, list):
            raise FormatError(f"Expected a list of frames in {gdir / 'index.json'}, but got "
                              f"{type(entries).__name__}.")
    else:
        entries = [{"frame_id": p.stem, "which": w, "path": str(p)}
                   for w in ("top", "bottom") for p in sorted((gdir / w).glob("*.png"))]
    if not entries:
        return _note("No gallery/: review frames of the most and least surprising frames are "
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
                figs.append(f"<figure>{_note('Missing or unreadable review frame.')}"
                            f"<figcaption>{_e(label)}</figcaption></figure>")
                continue
            href, w, h = thumb
            figs.append(f'<figure><a href="{full[0]}"><img src="{href}" width="{w}" height="{h}" '
                        f'alt="{_e(label)}"></a><figcaption>{_e(label)}</figcaption></figure>')
        if figs:
            out.append(f'<h3>{title}</h3><div class="gallery">{"".join(figs)}</div>')
    return ("".join(out) or _note("gallery/index.json lists no top or bottom frames.")) + _video(r)


def _video(r: _Run) -> str:
    if not (r.run / "review.mp4").is_file():
        return ""
    _copy(r.run / "review.mp4", r.out / "review.mp4")
    return ('<h3>Review video</h3><video controls preload="none" src="review.mp4" width="960">'
            '</video><p><a href="review.mp4">review.mp4</a></p>')


def _frames(r: _Run) -> str:
    df = r.frames
    col = next((f"frame_{s}" for s in r.scores if f"frame_{s}" in getattr(df, "columns", [])), None)
    if col is None:
        return _note("No frames.parquet with a frame SA column.")
    _require(df, ["frame_id", "frame_index"], r.run / "frames.parquet")
    df = df[np.isfinite(df[col].to_numpy(dtype=float))]
    order = df.sort_values([col, "frame_index"], ascending=[False, True], kind="stable")
    show = ["frame_id", "frame_index", *(["n_segments"] if "n_segments" in df.columns else []), col]
    out = [f'<p class="lead">{len(df):,} frames with a {_e(col)}; distribution:</p>', _histogram(df[col])]
    for title, part in (("Highest", order.head(TOP_FRAMES)), ("Lowest", order.tail(TOP_FRAMES)[::-1])):
        rows = [[_td(v, cls="t" if c == "frame_id" else None, value=None if c == "frame_id" else v)
                 for c, v in zip(show, row)] for row in part[show].itertuples(index=False)]
        out.append(f"<h3>{title} {len(part)} by {_e(col)}</h3>" + _table(show, rows, sortable=True))
    return "".join(out)


def _classes(r: _Run) -> str:
    path = r.run / "scores.parquet"
    df = _parquet(path)
    if df is None:
        return _note("No scores.parquet.")
    _require(df, ["class_id", "class_name", "frame_id"], path)
    sa = [s for s in r.scores if s not in SOFTMAX and s in df.columns]
    stats = [("mean", lambda x: x.mean()), ("p10", lambda x: x.quantile(0.1)),
             ("median", lambda x: x.median()), ("p90", lambda x: x.quantile(0.9))]
    rows = []
    for cid, g in df.groupby("class_id", sort=True):
        n = g["frame_id"].nunique()
        cells = [_td(g["class_name"].iloc[0], cls="t"), _td(f"{n:,}", n)]
        if "n_pixels" in g.columns:
            cells.append(_td(f"{g['n_pixels'].mean():,.0f}", g["n_pixels"].mean()))
        for s in sa:
            for _, f in stats:
                v = f(g[s].dropna()) if g[s].notna().any() else float("nan")
                cells.append(_td(_num(v), v))
        rows.append(cells)
    head = ["class", "frames", *(["mean pixels"] if "n_pixels" in df.columns else []),
            *[f"{s} {k}" for s in sa for k, _ in stats]]
    return ('<p class="lead">Class SA (mean over a frame\'s sampled pixels of the class) across '
            'the frames where the class is predicted.</p>' + _table(head, rows, sortable=True))


# ------------------------------------------------------------------------------- helpers
def _e(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _td(text, value=None, *, cls: str | None = None, title: str | None = None, **data) -> str:
    attrs = f' class="{_e(cls)}"' if cls else ""
    if value is not None:
        attrs += f' data-value="{_e(_exact(value))}"'
    attrs += "".join(f' data-{k}="{_e(v)}"' for k, v in data.items())
    attrs += f' title="{_e(title)}"' if title else ""
    shown = _num(text) if isinstance(text, (float, np.floating)) else text
    return f"<td{attrs}>{_e(shown)}</td>"


def _table(head, rows, *, sortable: bool = False) -> str:
    ths = "".join(f'<th{" class=t" if i == 0 else ""}>{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    cls = ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{ths}</tr></thead><tbody>{body}</tbody>'
            '</table></div>')


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _exact(v) -> str:
    """Shortest text that parses back to the same float (what the browser test compares)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    return repr(float(v)) if math.isfinite(v) else "nan"


def _num(v, spec: str = ".4g") -> str:
    """`v` formatted, or "-" where it is missing (NaN rho of a constant target, say)."""
    ok = isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)
    return format(v, spec) if ok else "-"


def _fmt(v, pct: bool = False) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.1%}" if pct else f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"
    return str(v)


def _strength(rho: float) -> str:
    if not math.isfinite(rho) or abs(rho) < 0.1:
        return ""
    level = "r3" if abs(rho) >= 0.5 else "r2" if abs(rho) >= 0.3 else "r1"
    return ("neg " if rho < 0 else "pos ") + level


def _order(found, preferred) -> list[str]:
    """Scores in report order: the run's order (SA first, then softmax), unknown ones last."""
    found = list(dict.fromkeys(str(s) for s in found))
    return [s for s in preferred if s in found] + [s for s in found if s not in preferred]


def _histogram(values: pd.Series, bins: int = 40, width: int = 640, height: int = 110) -> str:
    counts, edges = np.histogram(values.to_numpy(dtype=float), bins=bins)
    bw, top = width / bins, max(int(counts.max()), 1)
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{height - 16 - (height - 20) * c / top:.1f}" '
                   f'width="{bw - 1:.1f}" height="{(height - 20) * c / top:.1f}"><title>'
                   f'{edges[i]:.3g} to {edges[i + 1]:.3g}: {c}</title></rect>' for i, c in enumerate(counts))
    return (f'<svg class="hist" width="{width}" height="{height}" role="img">{bars}'
            f'<text x="0" y="{height - 2}">{edges[0]:.3g}</text>'
            f'<text x="{width}" y="{height - 2}" text-anchor="end">{edges[-1]:.3g}</text></svg>')


def _copy(src: Path, dst: Path) -> None:
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _csv(path: Path, required: list[str], nrows: int | None = None) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path, nrows=nrows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise FormatError(f"Expected a CSV table in {path}, but it cannot be read: {exc}") from None
    _require(df, required, path)
    return df


def _parquet(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise FormatError(f"Expected a Parquet table in {path}, but it cannot be read: {exc}"
                          ) from None


def _require(df: pd.DataFrame, columns: list[str], path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise FormatError(f"Expected columns {missing} in {path}, but got {list(df.columns)}.")
