"""`saseg audit sample` / `estimate` on the tiny run: the queue exports, the sentence prints, bad labels exit 1."""

from __future__ import annotations

import json

import pytest

from typer.testing import CliRunner

from conftest import TEST_SPEC
from saseg.cli import app, run

runner = CliRunner()


def test_audit_sample_export_and_estimate(tiny_run, tmp_path):
    audit = tmp_path / "audit"
    result = runner.invoke(app, ["audit", "sample", "--run", str(tiny_run), "-n", "6", "-o", str(audit)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--plan", str(audit / "plan.csv"), "--run", str(tiny_run),
                                 "--to", "labelstudio", "-o", str(tmp_path / "ls")])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "ls" / "tasks.json").read_text())) == 6
    result = runner.invoke(app, ["audit", "estimate", "--run", str(tiny_run), "--sample", str(audit),
                                 "--labels", TEST_SPEC, "-o", str(tmp_path / "est")])
    assert result.exit_code == 0, result.output
    assert "mIoU on this pool is" in result.output and "from 6 labelled frames of 10" in result.output
    assert "labels only" in result.output
    assert (tmp_path / "est" / "classes.csv").is_file()


def test_audit_estimate_with_unmatched_labels_is_one_line_and_writes_nothing(tiny_run, tmp_path, capsys):
    audit = tmp_path / "audit"
    assert runner.invoke(app, ["audit", "sample", "--run", str(tiny_run), "-n", "10", "-o", str(audit)]).exit_code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(["audit", "estimate", "--run", str(tiny_run), "--sample", str(audit), "--labels",
             "synthetic:n=2,seed=2,size=64x48,split=test", "-o", str(tmp_path / "est")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "expected labels for every sampled frame" in err
    assert not (tmp_path / "est").exists()  # not even the one-writer lock file (saseg.io.output_lock)


def test_audit_estimate_of_an_edited_sample_is_one_line(tiny_run, tmp_path, capsys):
    """The CLI passes the sample folder as a string: the refusal must still name its file."""
    audit = tmp_path / "audit"
    assert runner.invoke(app, ["audit", "sample", "--run", str(tiny_run), "-n", "4", "-o", str(audit)]).exit_code == 0
    table = (audit / "sample.csv").read_text().splitlines()
    table[2] = table[1]  # a frame twice
    (audit / "sample.csv").write_text("\n".join(table) + "\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run(["audit", "estimate", "--run", str(tiny_run), "--sample", str(audit), "--labels", TEST_SPEC,
             "-o", str(tmp_path / "est")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: audit estimate: expected") and err.count("\n") == 1
    assert str(audit / "sample.csv") in err and "3 distinct" in err


def test_audit_estimate_from_labels_that_came_back_from_label_studio(tiny_run, tmp_path):
    """The audit queue goes out to Label Studio and its JSON export comes back through `saseg
    labels import`: the estimate from those labels equals the one from the pool's own labels."""
    from saseg.data import open_dataset
    from saseg.export.labels_ls import simulated_json_export

    audit = tmp_path / "audit"
    assert runner.invoke(app, ["audit", "sample", "--run", str(tiny_run), "-n", "5", "-o", str(audit)]).exit_code == 0
    result = runner.invoke(app, ["export", "--plan", str(audit / "plan.csv"), "--run", str(tiny_run),
                                 "--to", "labelstudio", "-o", str(tmp_path / "ls")])
    assert result.exit_code == 0, result.output
    truth = {f.frame_id: f.label for f in open_dataset(TEST_SPEC)}
    (tmp_path / "project.json").write_text(json.dumps(simulated_json_export(tmp_path / "ls", truth.__getitem__)))
    result = runner.invoke(app, ["labels", "import", "--tool", "labelstudio", "--export", str(tmp_path / "ls"),
                                 "--from", str(tmp_path / "project.json"), "-o", str(tmp_path / "labels")])
    assert result.exit_code == 0, result.output
    assert "labelstudio: 5 labelled frames imported, 0 unlabelled" in result.output
    spec = result.output.split("--data '")[1].split("'")[0]
    for labels, out in ((spec, "from_tool"), (TEST_SPEC, "from_truth")):
        result = runner.invoke(app, ["audit", "estimate", "--run", str(tiny_run), "--sample", str(audit),
                                     "--labels", labels, "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    got, want = (json.loads((tmp_path / out / "audit.json").read_text()) for out in ("from_tool", "from_truth"))
    assert got["miou"]["estimate"] == pytest.approx(want["miou"]["estimate"])
    assert got["miou"]["low"] == pytest.approx(want["miou"]["low"]) and got["n_labelled"] == 5
