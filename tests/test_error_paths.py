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


# ---- Hardening II (#23) ------------------------------------------------------------------
import os
import signal
import subprocess
import sys

import pandas as pd

import saseg

SRC = str(Path(saseg.__file__).resolve().parents[1])


def _python(code: str, *args, **kwargs) -> subprocess.Popen:
    """A Python process that imports this checkout's saseg, whatever the working dir."""
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


HOLD_LOCK = """
import sys, time
from saseg.io import output_lock
lock = output_lock(sys.argv[1]); lock.__enter__()
print("held", flush=True); time.sleep(120)
"""


def test_two_writers_second_is_refused_naming_the_first_and_kill_9_leaves_no_stale_lock(
        tiny_model_dir, tiny_sa_dir, tmp_path, capsys):
    out = tmp_path / "run"
    holder = _python(HOLD_LOCK, out)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_in_process(capsys, "score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d",
                                      TEST_SPEC, "-o", out / "scores.parquet", "-q")
        _one_line(code, err, match=f"pid {holder.pid}")
        assert "being written by another saseg process" in err
        assert not (out / "scores.parquet").exists() and not (out / "scores.parquet.parts").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    code, _, err = run_in_process(capsys, "score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d",
                                  TEST_SPEC, "-o", out / "scores.parquet", "-q")
    assert code == 0, err  # the lock died with its process
    assert pd.read_parquet(out / "frames.parquet")["frame_id"].nunique() == 10


@pytest.mark.parametrize("command", [
    ["evaluate", "-s", "RUN/scores.parquet", "-o", "OUT", "-q"],
    ["plan", "-s", "RUN/scores.parquet", "-o", "OUT", "--skip-ratio", "0.5"],
    ["quality", "apply", "--run", "OUT", "--quality", "RUN"],
    ["report", "RUN", "-o", "OUT", "--gallery", "0"],
])
def test_two_writers_every_folder_command_takes_the_lock(run_copy, tmp_path, capsys, command):
    out = tmp_path / "out"
    holder = _python(HOLD_LOCK, out)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = [str(a).replace("RUN", str(run_copy)).replace("OUT", str(out)) for a in command]
        code, _, err = run_in_process(capsys, *args)
        _one_line(code, err, match=f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


SCORE = "from saseg.cli import run; run()"


def test_two_score_processes_at_once_lose_no_rows(tiny_model_dir, tiny_sa_dir, tmp_path):
    out = tmp_path / "run" / "scores.parquet"
    args = ["score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", TEST_SPEC, "-o", out, "-q",
            "-b", "2"]
    procs = [_python(SCORE, *args) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        if code:  # refused, never a silent loss
            _one_line(code, err, match="being written by another saseg process")
    frames = pd.read_parquet(out.parent / "frames.parquet")
    scores = pd.read_parquet(out)
    assert frames["frame_id"].nunique() == 10 and set(scores["frame_id"]) == set(frames["frame_id"])


KILL_BETWEEN_FILES = """
import os, signal, sys
from saseg.layout import RunDir
def die(self, df):  # frames.parquet is written; scores.parquet never will be
    os.kill(os.getpid(), signal.SIGKILL)
RunDir.write_scores = die
from saseg.cli import run
run(sys.argv[1:])
"""


def test_rescore_killed_between_two_files_leaves_no_mix_of_runs(run_copy, tiny_model_dir, tiny_sa_dir,
                                                               capsys):
    old_frames = (run_copy / "frames.parquet").read_bytes()
    args = ["score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", TEST_SPEC,
            "-o", run_copy / "scores.parquet", "-q", "--pixels-per-class", "7"]
    killed = _python(KILL_BETWEEN_FILES, *args)
    killed.wait(timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read()
    assert (run_copy / "frames.parquet").read_bytes() != old_frames  # the kill fell between files
    # a reader sees no run made of two: the old score.json is gone, the unfinished run refused
    assert not (run_copy / "score.json").exists()
    code, _, err = run_in_process(capsys, "evaluate", "-s", run_copy / "scores.parquet", "-o",
                                  run_copy / "eval2", "-q")
    _one_line(code, err, match="rerun the same score command")
    code, _, err = run_in_process(capsys, *args)  # ... and the same command finishes it
    assert code == 0, err
    meta = json.loads((run_copy / "score.json").read_text())
    assert meta["pixels_per_class"] == 7
    frames = pd.read_parquet(run_copy / "frames.parquet")
    assert set(pd.read_parquet(run_copy / "scores.parquet")["frame_id"]) == set(frames["frame_id"])


# ---- tampered or broken quality models (#23, item 3) -------------------------------------
import hashlib


@pytest.fixture(scope="module")
def quality_dirs(tiny_run, tmp_path_factory):
    """A ridge and a LightGBM quality dir fitted on the tiny run."""
    from saseg.commands.quality import fit_quality

    root = tmp_path_factory.mktemp("quality")
    fit_quality(tiny_run, tiny_run / "eval", root / "ridge", min_rows_for_trees=100_000)
    fit_quality(tiny_run, tiny_run / "eval", root / "trees", min_rows_for_trees=10, num_boost_round=5,
                min_data_in_leaf=2)
    assert json.loads((root / "trees" / "class" / "quality.json").read_text())["kind"] == "lightgbm"
    return root


def _rehash(qdir: Path) -> None:
    """What a careful tamperer does: make every recorded sha256 match the edited files."""
    for meta_path in qdir.glob("*/quality.json"):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:  # damaged beyond JSON: nothing to rehash inside
            meta = None
        if isinstance(meta, dict) and meta.get("files"):
            meta["files"] = {n: hashlib.sha256((meta_path.parent / n).read_bytes()).hexdigest()
                             for n in meta["files"]}
            meta_path.write_text(json.dumps(meta))
    manifest = json.loads((qdir / "run_quality.json").read_text())
    manifest["files"] = {n: hashlib.sha256((qdir / n).read_bytes()).hexdigest()
                         for n in manifest["files"] if (qdir / n).exists()}
    (qdir / "run_quality.json").write_text(json.dumps(manifest))


def _edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))  # NaN and Infinity as Python writes them


def _swap_features(meta):
    meta["features"][0], meta["features"][1] = meta["features"][1], meta["features"][0]


def _edit_trees(qdir: Path, change) -> None:
    path = qdir / "class" / "quality.lgb.txt"
    lines = path.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("leaf_value=") and " " in line)
    lines[i] = change(lines[i])
    path.write_text("\n".join(l for l in lines if l is not None) + "\n")


RIDGE_DAMAGE = {
    "nan_intercept": (lambda q: _edit_json(q / "class/quality.json", lambda m: m["state"].update(intercept=float("nan"))),
                      "finite ridge intercept"),
    "inf_intercept": (lambda q: _edit_json(q / "class/quality.json", lambda m: m["state"].update(intercept=float("inf"))),
                      "finite ridge intercept"),
    "huge_coefficients": (lambda q: _edit_json(q / "class/quality.json", lambda m: m["state"].update(
        coef=[1e308] * len(m["state"]["coef"]))), "expected a finite predicted IoU"),
    "missing_kind": (lambda q: _edit_json(q / "class/quality.json", lambda m: m.pop("kind")), "'kind'"),
    "unknown_settings_key": (lambda q: _edit_json(q / "class/quality.json", lambda m: m["settings"].update(banana=1)),
                             "expected settings from"),
    "not_utf8": (lambda q: (q / "class/quality.json").write_bytes(b"\xff\xfe{}"), "not UTF-8"),
    "swapped_feature_names": (lambda q: _edit_json(q / "class/quality.json", _swap_features), "reordered"),
    "missing_oof": (lambda q: (q / "class/oof.parquet").unlink(), "oof.parquet"),
    "bad_manifest_option": (lambda q: _edit_json(q / "run_quality.json", lambda m: m["model_options"].update(x=1)),
                            "expected settings from"),
}
TREE_DAMAGE = {
    "nan_leaf": (lambda q: _edit_trees(q, lambda line: line.replace("=", "=nan ", 1).rsplit(" ", 1)[0]),
                 "finite leaf_value"),
    "leaf_value_missing": (lambda q: _edit_trees(q, lambda line: None), "'leaf_value'"),
    "one_leaf_short": (lambda q: _edit_trees(q, lambda line: line.rsplit(" ", 1)[0]), "values in 'leaf_value'"),
}


@pytest.mark.parametrize("kind, name", [("ridge", n) for n in RIDGE_DAMAGE] + [("trees", n) for n in TREE_DAMAGE])
def test_tampered_quality_model_is_refused_naming_the_file(quality_dirs, run_copy, tmp_path, capsys, kind, name):
    damage, message = {**RIDGE_DAMAGE, **TREE_DAMAGE}[name]
    qdir = tmp_path / "q"
    shutil.copytree(quality_dirs / kind, qdir)
    damage(qdir)
    _rehash(qdir)  # the content hashes would catch it first: here the checks behind them must
    before = (run_copy / "scores.parquet").read_bytes()
    code, _, err = run_in_process(capsys, "quality", "apply", "--run", run_copy, "--quality", qdir)
    _one_line(code, err, match=message)
    assert str(qdir) in err
    assert (run_copy / "scores.parquet").read_bytes() == before  # nothing applied


def test_tampered_quality_model_changed_file_fails_its_content_hash(quality_dirs, run_copy, tmp_path, capsys):
    qdir = tmp_path / "q"
    shutil.copytree(quality_dirs / "trees", qdir)
    _edit_trees(qdir, lambda line: line.replace("=", "=0.5 ", 1).rsplit(" ", 1)[0])  # finite, plausible
    code, _, err = run_in_process(capsys, "quality", "apply", "--run", run_copy, "--quality", qdir)
    _one_line(code, err, match="has changed since")
    assert "quality.lgb.txt" in err


def test_quality_json_is_strict_json_without_bare_nan(quality_dirs):
    for path in quality_dirs.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path} holds bare {c}"))


def test_quality_dir_of_format_1_is_still_read(quality_dirs, run_copy, tmp_path, capsys):
    qdir = tmp_path / "q"
    shutil.copytree(quality_dirs / "trees", qdir)
    _edit_json(qdir / "run_quality.json", lambda m: (m.pop("files"), m.update(format_version=1)))
    for sub in qdir.glob("*/quality.json"):
        _edit_json(sub, lambda m: (m.pop("files"), m.update(format_version=1)))
    code, _, err = run_in_process(capsys, "quality", "apply", "--run", run_copy, "--quality", qdir)
    assert code == 0, err


# ---- the Ray engine joins only what it is told (#23, items 2 and 5) ------------------------
PRIVATE_RAY = """
import os, ray
import ray._private.services as services
def planted(*args, **kwargs):  # what /tmp/ray/ray_current_cluster would make Ray join
    raise SystemExit("read the shared current-cluster file")
services.find_bootstrap_address = planted
os.environ.pop("RAY_ADDRESS", None)
from saseg.distributed import RayOptions, connect
connect(RayOptions(workers=1))
print("private", ray.get_runtime_context().get_node_id() is not None,
      ray._private.worker._global_node.get_temp_dir_path(), flush=True)
ray.shutdown()
"""


@pytest.mark.slow  # starts a Ray: about 20 s here
def test_ray_without_address_starts_a_private_local_cluster_never_the_shared_file():
    proc = _python(PRIVATE_RAY)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    word, started, temp_dir = out.strip().splitlines()[-1].split()
    assert word == "private" and started == "True"
    assert "saseg-ray-" in temp_dir and not temp_dir.startswith("/tmp/ray")


def test_ray_address_that_does_not_answer_is_one_line(tiny_model_dir, tiny_sa_dir, tmp_path):
    import socket

    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = _python(SCORE, "score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", TEST_SPEC, "-o",
                   tmp_path / "s.parquet", "-q", "--engine", "ray", "--address", f"127.0.0.1:{port}")
    _, err = proc.communicate(timeout=300)
    _one_line(proc.returncode, err, match=f"127.0.0.1:{port}, but it does not answer")


def test_ray_gpus_per_worker_without_gpu_is_refused_saying_what_the_cluster_has(
        ray_cluster, tiny_model_dir, tiny_sa_dir, tmp_path, capsys):
    code, _, err = run_in_process(capsys, "score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", TEST_SPEC,
                                  "-o", tmp_path / "s.parquet", "-q", "--engine", "ray", "--gpus-per-worker", "1")
    _one_line(code, err, match="but it has 2 CPUs and 0 GPUs")
    code, _, err = run_in_process(capsys, "score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", TEST_SPEC,
                                  "-o", tmp_path / "s.parquet", "-q", "--engine", "ray", "--workers", "3")
    _one_line(code, err, match="3 CPUs and 0 GPUs")


def test_check_resources():
    from saseg.distributed import RayOptions, check_resources

    check_resources({"CPU": 4.0, "GPU": 1.0}, RayOptions(workers=1, gpus_per_worker=1))
    with pytest.raises(saseg.errors.SasegError, match="it has 4 CPUs and 0 GPUs"):
        check_resources({"CPU": 4.0}, RayOptions(workers=2, gpus_per_worker=0.5))


# ---- numbers that are not numbers as expected (#23, item 6) --------------------------------
@pytest.mark.parametrize("args, option", [
    (["train", "-d", TEST_SPEC, "-o", "x", "--lr", "nan"], "--lr"),
    (["video", "-m", "m", "--sa", "s", "-d", TEST_SPEC, "--threshold", "nan"], "--threshold"),
    (["score", "-m", "m", "--sa", "s", "-d", TEST_SPEC, "-o", "x.parquet", "--engine", "ray",
      "--gpus-per-worker", "inf"], "--gpus-per-worker"),
    (["plan", "-s", "x.parquet", "-o", "p", "--annotators", "99999999999999999999"], "--annotators"),
    (["evaluate", "-s", "x.parquet", "-o", "e", "--risk", "nan"], "--risk"),
])
def test_non_finite_or_huge_number_option_is_a_usage_error(capsys, tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(capsys, *args)
    _one_line(code, err, expected_code=2, match=option)
    assert not list(tmp_path.iterdir())  # refused before any work


def test_non_integer_rank_in_plan_csv_is_one_line(run_copy, tmp_path, capsys):
    plan = pd.read_csv(run_copy / "plan" / "plan.csv", dtype={"frame_id": str})
    plan["rank"] = plan["rank"].astype(object)
    plan.loc[0, "rank"] = "first"
    plan.to_csv(run_copy / "plan" / "plan.csv", index=False)
    code, _, err = run_in_process(capsys, "export", "--plan", run_copy / "plan" / "plan.csv", "--to", "cvat",
                                  "-o", tmp_path / "export")
    _one_line(code, err, match="integer rank values")
    plan.loc[0, "rank"] = "1.5"
    plan.to_csv(run_copy / "plan" / "plan.csv", index=False)
    code, _, err = run_in_process(capsys, "export", "--plan", run_copy / "plan" / "plan.csv", "--to", "cvat",
                                  "-o", tmp_path / "export")
    _one_line(code, err, match="'1.5'")
    plan.loc[0, "rank"] = "1"
    plan["frame_index"] = plan["frame_index"].astype(object)
    plan.loc[1, "frame_index"] = "nan"
    plan.to_csv(run_copy / "plan" / "plan.csv", index=False)
    code, _, err = run_in_process(capsys, "export", "--plan", run_copy / "plan" / "plan.csv", "--to", "cvat",
                                  "-o", tmp_path / "export")
    _one_line(code, err, match="integer frame_index values")


def test_nan_loss_in_training_stops_without_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "model"
    code, _, err = run_in_process(capsys, "train", "-d", "synthetic:n=8,seed=1,size=64x48",
                                  "-o", out, "--epochs", "1", "-b", "4", "--lr", "1e30", "-q")
    _one_line(code, err, match="expected a finite loss")
    assert not (out / "model.pt").exists()


def test_full_disk_during_score_names_the_file(tiny_model_dir, tiny_sa_dir, tmp_path, capsys, monkeypatch):
    """#23 item 9: pyarrow's "No space left on device" named no file."""
    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # as Arrow raises it: no file name

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    out = tmp_path / "run" / "scores.parquet"
    code, _, err = run_in_process(capsys, "score", "-m", tiny_model_dir, "--sa", tiny_sa_dir, "-d", TEST_SPEC,
                                  "-o", out, "-q", "--no-predictions")
    _one_line(code, err, match=f"No space left on device: {out}.parts/part-000000.parquet")
    _no_partial_files(tmp_path)


def test_every_json_saseg_writes_is_strict(run_copy):
    """#23 item 9: no bare NaN or Infinity (null instead) in any JSON of a scored run."""
    from saseg.io import read_json, write_json

    write_json(run_copy / "x.json", {"rho": float("nan"), "top": [float("inf"), 1.0]})
    assert read_json(run_copy / "x.json") == {"rho": None, "top": [None, 1.0]}
    for path in run_copy.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path} holds bare {c}"))


def test_refit_killed_between_files_leaves_no_old_manifest_over_new_files(sa_copy, quality_dirs, tmp_path,
                                                                         monkeypatch):
    """#23 item 1, for the SA and quality folders: the manifest goes first and comes back last."""
    from saseg.analysis.quality import RunQuality
    from saseg.estimators.sa_model import save_sa_model
    from saseg.quality import QualityModel

    class Dies:
        def save(self, directory):
            raise KeyboardInterrupt  # killed after the old files, before the new sa.json

    with pytest.raises(KeyboardInterrupt):
        save_sa_model(sa_copy, {"mdsa": Dies()}, {"estimators": ["mdsa"]})
    assert not (sa_copy / "sa.json").exists()
    qdir = tmp_path / "q"
    shutil.copytree(quality_dirs / "ridge", qdir)
    fitted = RunQuality.load(qdir)
    monkeypatch.setattr(QualityModel, "save", Dies.save)
    with pytest.raises(KeyboardInterrupt):
        fitted.save(qdir)
    assert not (qdir / "run_quality.json").exists()


KILL_QUALITY_APPLY = """
import os, signal, sys
replace = os.replace
def die_before_scores(src, dst):  # frames.parquet has the risk; scores.parquet and score.json never will
    if str(dst).endswith("scores.parquet"):  # all three are written; killed between two renames
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)
os.replace = die_before_scores
from saseg.cli import run
run(sys.argv[1:])
"""


def test_quality_apply_killed_between_two_files_is_refused_by_readers_until_rerun(quality_dirs, run_copy, capsys):
    """#23 item 1 for every folder command: a kill leaves the writer's pid, which readers refuse."""
    args = ["quality", "apply", "--run", run_copy, "--quality", quality_dirs / "ridge"]
    killed = _python(KILL_QUALITY_APPLY, *args)
    killed.wait(timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read()
    assert "frame_risk" in pd.read_parquet(run_copy / "frames.parquet").columns
    code, _, err = run_in_process(capsys, "plan", "-s", run_copy / "scores.parquet", "-o", run_copy / "plan2",
                                  "--skip-ratio", "0.5")
    _one_line(code, err, match=f"left unfinished by a saseg command that stopped halfway (pid {killed.pid})")
    code, _, err = run_in_process(capsys, *args)
    assert code == 0, err
    code, _, err = run_in_process(capsys, "plan", "-s", run_copy / "scores.parquet", "-o", run_copy / "plan2",
                                  "--skip-ratio", "0.5")
    assert code == 0, err


def test_ray_address_that_accepts_but_is_not_ray_is_one_line(monkeypatch):
    """A port that accepts and stays silent (a planted listener) would hang Ray for minutes."""
    import socket

    from saseg import distributed

    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(saseg.errors.SasegError, match=f"{address}, but it does not answer \\(no answer"):
            distributed.probe_address(address)


def test_ray_address_probe_accepts_a_real_cluster(ray_cluster):
    from saseg import distributed

    distributed.probe_address(ray_cluster.get_runtime_context().gcs_address)
