"""Every failure the hardening issue lists, driven through the CLI: one line, no traceback,
exit 1 (2 for usage errors), and no half-written file left behind."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TEST_SPEC
from test_cli import run_in_process


def _one_line(code, err, expected_code=1, match=None):
    assert code == expected_code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if expected_code == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    if match:
        assert match in lines[-1], lines[-1]


def _no_partial_files(folder: Path):
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def sa_copy(tiny_sa_dir, tmp_path):
    shutil.copytree(tiny_sa_dir, tmp_path / "sa")
    return tmp_path / "sa"


def test_disk_full_is_one_line_and_leaves_no_partial_file(run_copy, capsys, monkeypatch):
    import pandas as pd

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half")  # the temporary file gets half written ...
        raise OSError(errno.ENOSPC, "No space left on device", str(path))  # ... then the disk fills

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    out = run_copy / "eval2"
    code, _, err = run_in_process(capsys, "evaluate", "-s", run_copy / "scores.parquet", "-o", out, "-q")
    _one_line(code, err, match="No space left on device")
    assert not (out / "iou.parquet").exists()
    _no_partial_files(run_copy)


def test_truncated_scores_and_incomplete_metadata(run_copy, capsys):
    scores = run_copy / "scores.parquet"
    data = scores.read_bytes()
    scores.write_bytes(data[: len(data) // 3])
    code, _, err = run_in_process(capsys, "evaluate", "-s", scores, "-o", run_copy / "e", "-q")
    _one_line(code, err, match="cannot be read")
    scores.write_bytes(data)
    meta = json.loads((run_copy / "score.json").read_text())
    del meta["classes"]
    (run_copy / "score.json").write_text(json.dumps(meta))
    code, _, err = run_in_process(capsys, "evaluate", "-s", scores, "-o", run_copy / "e", "-q")
    _one_line(code, err, match="'classes'")
    (run_copy / "score.json").write_text("{not json")
    code, _, err = run_in_process(capsys, "evaluate", "-s", scores, "-o", run_copy / "e", "-q")
    _one_line(code, err, match="valid JSON")


@pytest.mark.parametrize("damage, message", [
    (lambda meta, t: meta.pop("n_features"), "n_features"),
    (lambda meta, t: meta["settings"].update(banana=1), "expected settings from"),
    (lambda meta, t: t.update(whiteners=t["whiteners"].half()), "float32 or float64"),
    (lambda meta, t: t.update(whiteners=t["whiteners"][:, :2]), "of shape"),
    (lambda meta, t: t["whiteners"].view(-1)[0].fill_(float("nan")), "NaN or Inf; the file is corrupt"),
])
def test_damaged_estimator_files(tiny_model_dir, sa_copy, tmp_path, capsys, damage, message):
    meta = json.loads((sa_copy / "mdsa.json").read_text())
    tensors = {k: v.clone() for k, v in load_file(str(sa_copy / "mdsa.safetensors")).items()}
    damage(meta, tensors)
    (sa_copy / "mdsa.json").write_text(json.dumps(meta))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(sa_copy / "mdsa.safetensors"))
    out = tmp_path / "run" / "scores.parquet"
    code, _, err = run_in_process(capsys, "score", "-m", tiny_model_dir, "--sa", sa_copy, "-d", TEST_SPEC,
                                  "-o", out, "-q")
    _one_line(code, err, match=message)
    assert not out.exists()


def test_unreadable_safetensors(tiny_model_dir, sa_copy, tmp_path, capsys):
    (sa_copy / "lsa.safetensors").write_bytes(b"\x00" * 40)
    code, _, err = run_in_process(capsys, "score", "-m", tiny_model_dir, "--sa", sa_copy, "-d", TEST_SPEC,
                                  "-o", tmp_path / "s.parquet", "-q")
    _one_line(code, err, match="safetensors")


@pytest.mark.parametrize("args, option", [
    (["score", "-m", "m", "--sa", "s", "-d", TEST_SPEC, "-o", "x.parquet", "-b", "0"], "--batch-size"),
    (["score", "-m", "m", "--sa", "s", "-d", TEST_SPEC, "-o", "x.parquet", "--device", "bogus"], "--device"),
    (["train", "-d", TEST_SPEC, "-o", "x", "--scale", "abc"], "--scale"),
    (["fit", "-m", "m", "-d", TEST_SPEC, "-o", "x", "--pixels-per-class", "-5"], "--pixels-per-class"),
    (["fit", "-m", "x"], "--data"),
])
def test_usage_errors_exit_2_naming_the_option(capsys, args, option):
    code, _, err = run_in_process(capsys, *args)
    _one_line(code, err, expected_code=2, match=option)


def test_untrusted_factory_and_factory_without_arch_kwargs(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SASEG_TRUSTED_FACTORIES", "")  # restored afterwards, whatever --trust-factory sets
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "model.json").read_text())
    cfg.update(arch=None, factory="os:system", arch_kwargs={"command": f"touch {tmp_path / 'pwned'}"})
    (model / "model.json").write_text(json.dumps(cfg))
    code, _, err = run_in_process(capsys, "score", "-m", model, "--sa", tmp_path, "-d", TEST_SPEC,
                                  "-o", tmp_path / "s.parquet", "-q")
    _one_line(code, err, match="--trust-factory os:system")
    assert not (tmp_path / "pwned").exists()
    cfg.update(factory="saseg.models.networks:SmallCNN")
    cfg.pop("arch_kwargs")
    (model / "model.json").write_text(json.dumps(cfg))
    code, _, err = run_in_process(capsys, "--trust-factory", "saseg.models.networks:SmallCNN", "score", "-m",
                                  model, "--sa", tmp_path, "-d", TEST_SPEC, "-o", tmp_path / "s.parquet", "-q")
    _one_line(code, err)  # built, but its state_dict does not fit: one line either way
    assert "SmallCNN" in err or "state_dict" in err
