"""The report's audit section: present when RUN/audit holds an estimate, absent otherwise."""

import shutil

from conftest import TEST_SPEC
from saseg.commands.audit import estimate_audit, sample_audit
from saseg.report import write_report


def test_report_shows_the_audit_when_there_is_one(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "report", ignore_errors=True)
    page = write_report(run, tmp_path / "before").read_text()
    assert 'id="audit"' not in page
    sample_audit(run, 6, run / "audit", seed=0)
    result = estimate_audit(run, run / "audit", TEST_SPEC, run / "audit" / "estimate")
    page = write_report(run, tmp_path / "after").read_text()
    assert 'id="audit"' in page
    assert result.summary["sentence"] in page
    assert "labels only" in page and (tmp_path / "after" / "img" / "audit_widths.png").is_file()
