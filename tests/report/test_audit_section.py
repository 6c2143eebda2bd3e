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


def test_a_tampered_or_unfinished_estimate_is_a_note_not_a_crash(tiny_run, tmp_path):
    """audit.json edited by hand, NaN written as null, or a writer killed halfway: the section
    says what it could not read, and the rest of the report is written."""
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    sample_audit(run, 6, run / "audit", seed=0)
    estimate_audit(run, run / "audit", TEST_SPEC, run / "audit" / "estimate")
    path = run / "audit" / "estimate" / "audit.json"
    honest = json.loads(path.read_text())
    nulls = {**honest, "miou": {**honest["miou"], "predicted": None}}
    path.write_text(json.dumps(nulls))
    page = write_report(run, tmp_path / "nulls").read_text()
    assert honest["sentence"] in page and "Predictions alone say mIoU -" in page
    for edit in ([1], {**honest, "level": "0.9"}, {k: v for k, v in honest.items() if k != "sentence"},
                 {**honest, "miou": None}):
        path.write_text(json.dumps(edit))
        page = write_report(run, tmp_path / "tampered").read_text()
        assert 'id="audit"' in page and "expected the summary `saseg audit estimate` writes" in page
    path.write_text(json.dumps(honest))
    (path.parent / ".saseg.lock").write_text("pid 99999\n")
    page = write_report(run, tmp_path / "unfinished").read_text()
    assert "stopped halfway" in page and honest["sentence"] not in page
