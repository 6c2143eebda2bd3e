"""The report in a real headless Chromium: no console errors, every image loads, and the
correlation table the browser renders holds exactly the numbers of correlation.csv.

Needs Debian's chromium (``.ci/install-browser``) and the ``playwright`` Python package; it
drives the system browser, so ``playwright install`` is never needed. Skipped otherwise.
Set SASEG_REPORT_SCREENSHOT=/path.png to keep a full-page screenshot for a look.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from saseg.report import write_report

from test_html import make_run  # noqa: E402  (same folder; pytest puts it on sys.path)

CHROMIUM = os.environ.get("SASEG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                               "(pip install playwright; the browser itself comes from apt)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: run .ci/install-browser (apt chromium)",
                allow_module_level=True)

CELLS_JS = """() => Array.from(document.querySelectorAll("table.corr td[data-score]")).map(td => ({
    target: td.dataset.target, kind: td.dataset.kind, score: td.dataset.score,
    which: td.classList[0], value: td.dataset.value, text: td.innerText}))"""
IMAGES_JS = """() => Array.from(document.images).map(img => ({
    src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0}))"""


@pytest.fixture(scope="module")
def page_report(tmp_path_factory):
    """Open one report once; yield (page, run dir, problems seen while loading)."""
    root = tmp_path_factory.mktemp("browser")
    run = make_run(root)
    index = write_report(run)
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(root / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
                viewport={"width": 1280, "height": 900})
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} does not start under playwright: {exc}")
        try:
            page = context.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(index.as_uri(), wait_until="load", timeout=20_000)
            if os.environ.get("SASEG_REPORT_SCREENSHOT"):
                page.screenshot(path=os.environ["SASEG_REPORT_SCREENSHOT"], full_page=True)
            yield page, run, problems
        finally:
            context.close()


def test_no_console_errors(page_report):
    page, _, problems = page_report
    page.click("table.sortable thead th")  # the inline sorting script runs without errors
    assert problems == []


def test_every_image_loads(page_report):
    page, _, _ = page_report
    images = page.evaluate(IMAGES_JS)
    assert len(images) == 10
    assert [i["src"] for i in images if not i["ok"]] == []


def test_correlation_table_equals_csv(page_report):
    page, run, _ = page_report
    corr = pd.read_csv(run / "eval" / "correlation.csv")
    shown = {(c["target"], c["kind"], c["score"], c["which"]): c for c in page.evaluate(CELLS_JS)}
    assert len(shown) == 2 * len(corr)
    for row in corr.itertuples():
        for which, want in (("rho", row.rho), ("p", row.p)):
            cell = shown[(row.target, row.kind, row.score, which)]
            got = float(cell["value"])
            assert (math.isnan(got) and math.isnan(want)) or got == want, (row, which)
            if math.isfinite(want):  # the visible text is the same number, rounded
                digits = 3 if which == "rho" else 2
                assert math.isclose(float(cell["text"].split()[0]), want,
                                    rel_tol=10 ** (1 - digits), abs_tol=0.5 * 10 ** -digits)
