"""Report section on an audit (``saseg audit estimate`` under ``RUN/audit``): the sentence,
the per-class table with both intervals, and the plot of interval width against labelled frames."""

from __future__ import annotations

from ..analysis.audit import CLASSES_CSV, ESTIMATE_JSON, WIDTHS_PNG
from ..commands.audit import find_estimate, read_estimate
from ..errors import SasegError
from .inputs import PLOT_WIDTH, Run, read_csv
from .markup import esc, note, number, table, td

__all__ = ["has_audit", "audit"]

_COLUMNS = ["class_name", "estimate", "low", "high", "labels_low", "labels_high", "predicted",
            "effective_labels", "frames_with_class", "note"]


def has_audit(r: Run) -> bool:
    return find_estimate(r.run) is not None


def audit(r: Run) -> str:
    folder = find_estimate(r.run)
    if folder is None:
        return note("No audit: run `saseg audit sample` and `saseg audit estimate -o RUN/audit/estimate`.")
    try:
        s = read_estimate(folder)
    except SasegError as exc:
        return note(f"Could not read {folder / ESTIMATE_JSON}: {exc}")
    classes = read_csv(folder / CLASSES_CSV, _COLUMNS)
    pct = f"{s['level'] * 100:g} %"
    miou, alone = s["miou"], s["miou"]["labels_only"]
    parts = [f'<p class="lead">{esc(s["sentence"])}.</p>',
             note(f"{s['method']}. Labels: {s.get('labels', '?')}. Predictions alone say mIoU "
                  f"{number(miou.get('predicted'), '.3f')}; labels alone give {number(alone.get('low'), '.3f')}-"
                  f"{number(alone.get('high'), '.3f')}.")]
    if classes is not None:
        rows = []
        for c in classes.itertuples():
            interval = lambda lo, hi: f"{number(lo, '.3f')}-{number(hi, '.3f')}"
            rows.append([td(c.class_name, cls="t"), td(number(c.estimate, ".3f"), c.estimate),
                         td(interval(c.low, c.high)), td(interval(c.labels_low, c.labels_high)),
                         td(number(c.predicted, ".3f"), c.predicted),
                         td(number(c.effective_labels, ".1f"), c.effective_labels),
                         td(c.frames_with_class, c.frames_with_class), td(c.note if isinstance(c.note, str) else "")])
        parts.append(table(["class", "IoU", f"{pct} CI", "labels only", "predicted", "effective labels",
                            "labelled frames with it", "note"], rows))
    share = s["share_below"]
    parts.append(note(f"Frames with frame IoU below {s['iou_below']:g}: {number(share.get('estimate'), '.1%')} "
                      f"({pct} CI {number(share.get('low'), '.1%')}-{number(share.get('high'), '.1%')})."))
    if (folder / WIDTHS_PNG).is_file():
        img = r.image(folder / WIDTHS_PNG, "audit_widths.png", PLOT_WIDTH)
        if img is not None:
            parts.append(f'<figure class="plot"><img src="{img[0]}" width="{img[1]}" height="{img[2]}" '
                         f'alt="interval width against labelled frames"><figcaption>How the mIoU interval '
                         f'narrows with more labelled frames (projected from this sample).</figcaption></figure>')
    return "".join(parts)

