"""HTML building blocks of the report: escaped cells, tables, notes and number formats.

Every cell carries its exact value in ``data-value`` next to the rounded text, so sorting and
the browser test never parse what is shown.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd


def esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def td(text, value=None, *, cls: str | None = None, title: str | None = None, **data) -> str:
    attrs = f' class="{esc(cls)}"' if cls else ""
    if value is not None:
        attrs += f' data-value="{esc(exact(value))}"'
    attrs += "".join(f' data-{k}="{esc(v)}"' for k, v in data.items())
    attrs += f' title="{esc(title)}"' if title else ""
    shown = number(text) if isinstance(text, (float, np.floating)) else text
    return f"<td{attrs}>{esc(shown)}</td>"


def table(head, rows, *, sortable: bool = False) -> str:
    ths = "".join(f'<th{" class=t" if i == 0 else ""}>{esc(h)}</th>' for i, h in enumerate(head))
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    cls = ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{ths}</tr></thead><tbody>{body}</tbody>'
            '</table></div>')


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def exact(v) -> str:
    """Shortest text that parses back to the same float (what the browser test compares)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return str(v)
    return repr(float(v)) if math.isfinite(v) else "nan"


def number(v, spec: str = ".4g") -> str:
    """`v` formatted, or "-" where it is missing (NaN rho of a constant target, say)."""
    ok = isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)
    return format(v, spec) if ok else "-"


def amount(v, pct: bool = False) -> str:
    """Counts with thousands separators, money with cents, ratios as percentages."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.1%}" if pct else f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"
    return str(v)


def histogram(values: pd.Series, bins: int = 40, width: int = 640, height: int = 110) -> str:
    """Inline SVG, so the distribution shows without a plotting library or an extra file."""
    counts, edges = np.histogram(values.to_numpy(dtype=float), bins=bins)
    bw, top = width / bins, max(int(counts.max()), 1)
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{height - 16 - (height - 20) * c / top:.1f}" '
                   f'width="{bw - 1:.1f}" height="{(height - 20) * c / top:.1f}"><title>'
                   f'{edges[i]:.3g} to {edges[i + 1]:.3g}: {c}</title></rect>' for i, c in enumerate(counts))
    return (f'<svg class="hist" width="{width}" height="{height}" role="img">{bars}'
            f'<text x="0" y="{height - 2}">{edges[0]:.3g}</text>'
            f'<text x="{width}" y="{height - 2}" text-anchor="end">{edges[-1]:.3g}</text></svg>')
