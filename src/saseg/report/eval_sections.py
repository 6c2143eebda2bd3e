"""Report sections on what ``saseg evaluate`` wrote to ``eval/``: SA against IoU (Table 3),
MDSA against LSA, the plots (Figures 7, 9) and the largest safe skip ratio."""

from __future__ import annotations

import math

import numpy as np

from .inputs import PLOT_WIDTH, Run, baseline_legend, is_baseline
from .markup import esc, note, number, table, td


def correlation(r: Run) -> str:
    corr = r.eval_csv(r.evaluation.correlation_path, ["target", "kind", "score", "n_frames", "rho", "p"])
    if corr is None:
        return note("No eval/correlation.csv: run `saseg evaluate` on labelled frames to see "
                    "whether the model does worse on more surprising frames.")
    scores = _order(corr["score"], r.scores)
    head1 = ('<th class="t" rowspan="2">target</th><th rowspan="2">kind</th><th rowspan="2">n</th>'
             + "".join(f'<th colspan="2"{" class=base" if is_baseline(s) else ""}>{esc(s)}</th>'
                       for s in scores))
    head2 = "<th>rho</th><th>p</th>" * len(scores)
    rows, last_kind = [], None
    for (target, kind), sub in corr.groupby(["target", "kind"], sort=False):
        by = sub.drop_duplicates("score").set_index("score")
        n_max = sub["n_frames"].max()
        cells = [td(target, cls="t"), td(kind, cls="kind"), td(n_max, n_max)]
        for s in scores:
            attrs = {"target": target, "kind": kind, "score": s}
            if s not in by.index:
                cells += [td("", cls="rho", **attrs), td("", cls="p", **attrs)]
                continue
            rho, p, n = by.loc[s, "rho"], by.loc[s, "p"], by.loc[s, "n_frames"]
            ns = " ns" if np.isfinite(p) and p >= 0.05 else ""
            reason = by.loc[s, "reason"] if "reason" in by.columns else None
            title = reason if isinstance(reason, str) and reason else f"n = {n}"
            cells += [td(number(rho, ".3f"), rho, cls=f"rho {_strength(rho)}{ns}", title=title, **attrs),
                      td(number(p, ".2g"), p, cls=f"p{ns}", **attrs)]
        sep = ' class="sep"' if last_kind is not None and kind != last_kind else ""
        rows.append(f"<tr{sep}>{''.join(cells)}</tr>")
        last_kind = kind
    shaded = baseline_legend(scores)
    legend = ('<p class="legend">Spearman rho of SA against IoU across frames; negative = more '
              'surprise, lower IoU. |rho|: <span class="neg r1">0.1-0.3</span><span class="neg r2">'
              '0.3-0.5</span><span class="neg r3">&ge; 0.5</span> (red: positive). Faded cells: '
              'p &ge; 0.05.'
              + (f' Shaded headers: baselines ({esc(shaded)}), oriented like SA: higher = less '
                 'certain, so negative rho is expected too.' if shaded else '') + '</p>')
    return (legend + f'<div class="scroll"><table class="corr"><thead><tr>{head1}</tr><tr>{head2}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div>')


def agreement(r: Run) -> str:
    agr = r.eval_csv(r.evaluation.agreement_path, ["target", "kind", "n_frames", "rho", "p"])
    if agr is None:
        return note("No eval/agreement.csv (written when both MDSA and LSA are scored).")
    rows = [[td(a.target, cls="t"), td(a.kind, cls="kind"), td(a.n_frames, a.n_frames),
             td(number(a.rho, ".3f"), a.rho, cls="rho"), td(number(a.p, ".2g"), a.p, cls="p")]
            for a in agr.itertuples()]
    return ('<p class="lead">Spearman rho between the two scores across frames; the paper finds '
            'rho &gt; 0.98 everywhere, so the cheap MDSA ranks frames like LSA.</p>'
            + table(["target", "kind", "n", "rho", "p"], rows, sortable=True))


def figures(r: Run) -> str:
    if not r.evaluation.root.is_dir():
        return note("No eval/ folder: figures need labelled frames (`saseg evaluate`).")
    out, baselines = [], []
    for path_of, caption in ((r.evaluation.iou_plot_path, "IoU against {} per class and group (Figure 7)"),
                             (r.evaluation.tradeoff_plot_path, "Share of skipped frames below the IoU "
                              "threshold against the skip ratio, {} order with random and oracle "
                              "references (Figure 9)")):
        found = {s: path_of(s) for s in r.scores if path_of(s).is_file()}
        for s in _order(found, r.scores):
            img = r.image(found[s], found[s].name, PLOT_WIDTH)
            fig = (note(f"Could not read {found[s].name}.") if img is None else
                   f'<figure class="plot"><a href="{img[0]}"><img src="{img[0]}" width="{img[1]}" '
                   f'height="{img[2]}" alt="{esc(found[s].name)}"></a>'
                   f'<figcaption>{esc(caption.format(s))}</figcaption></figure>')
            (baselines if is_baseline(s) else out).append(fig)
    if baselines:
        out.append(f"<details><summary>Baselines ({len(baselines)} plots)</summary>"
                   f"{''.join(baselines)}</details>")
    return "".join(out or [note("No plots in eval/ (evaluate ran with plots off).")]) + _glance(r)


def _glance(r: Run) -> str:
    """Trade-off values at a few skip ratios: SA order next to its references."""
    curve = r.eval_csv(r.evaluation.tradeoff_path, ["target", "score", "order", "skip_ratio", "metric",
                                         "threshold", "value"])
    if curve is None:
        return note("No eval/tradeoff.csv.")
    below = curve[curve["metric"] == "below_t"]
    if below.empty:
        return ""
    t = float(below["threshold"].min())
    target = "frame" if (below["target"] == "frame").any() else str(below["target"].iloc[0])
    sub = below[(below["target"] == target) & np.isclose(below["threshold"], t)]
    ratios, orders = (0.25, 0.5, 0.75), ("sa", "random", "oracle")
    rows = []
    for s in _order(sub["score"], r.scores):
        cells = [td(s, cls="t")]
        for q in ratios:
            for o in orders:
                hit = sub[(sub["score"] == s) & (sub["order"] == o) & np.isclose(sub["skip_ratio"], q)]
                v = hit["value"].iloc[0] if len(hit) else float("nan")
                cells.append(td(number(v, ".1%"), v))
        rows.append(cells)
    head = "".join(f'<th colspan="3">skip {q:.0%}</th>' for q in ratios)
    sub_head = "<th>SA</th><th>random</th><th>oracle</th>" * len(ratios)
    body = "".join(f"<tr>{''.join(c)}</tr>" for c in rows)
    return (f'<h3>Share of skipped frames with IoU &lt; {t:g} (target {esc(target)})</h3>'
            f'<div class="scroll"><table><thead><tr><th class="t" rowspan="2">score</th>{head}</tr>'
            f'<tr>{sub_head}</tr></thead><tbody>{body}</tbody></table></div>')


def max_skip(r: Run) -> str:
    ms = r.eval_csv(r.evaluation.max_skip_path, ["target", "kind", "score", "max_skip_ratio"])
    if ms is None:
        return note("No eval/max_skip.csv: needs a labelled evaluation.")
    scores = _order(ms["score"], r.scores)
    rows = []
    for (target, kind), sub in ms.groupby(["target", "kind"], sort=False):
        by = sub.drop_duplicates("score").set_index("score")["max_skip_ratio"]
        rows.append([td(target, cls="t"), td(kind, cls="kind")] + [
            td(f"{by[s]:.0%}", by[s], score=s, target=target) if s in by.index else td("")
            for s in scores])
    risk = ms["risk"].iloc[0] if "risk" in ms.columns and len(ms) else float("nan")
    t = ms["threshold"].iloc[0] if "threshold" in ms.columns and len(ms) else float("nan")
    return (f'<p class="lead">Largest share of frames that can go unlabelled (lowest SA first) '
            f'while at most {esc(f"{risk:.0%}")} of the skipped frames have IoU below '
            f'{esc(f"{t:g}")}.</p>' + table(["target", "kind", *scores], rows, sortable=True))


def _strength(rho: float) -> str:
    if not math.isfinite(rho) or abs(rho) < 0.1:
        return ""
    level = "r3" if abs(rho) >= 0.5 else "r2" if abs(rho) >= 0.3 else "r1"
    return ("neg " if rho < 0 else "pos ") + level


def _order(found, preferred) -> list[str]:
    """Scores in report order: the run's order (SA first, then softmax), unknown ones last."""
    found = list(dict.fromkeys(str(s) for s in found))
    return [s for s in preferred if s in found] + [s for s in found if s not in preferred]

