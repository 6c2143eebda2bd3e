"""The Ray engine (`saseg.distributed`) against the local engine, on a real local Ray.

Rows are compared *exactly*: the local run uses one torch thread like each Ray worker
(``--cpus-per-worker 1``), because the only difference between the engines is the thread
count of a float32 reduction (~1e-8, checked in `test_rows_differ_only_by_float_rounding`).
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import TEST_SPEC, TRAIN_SPEC
from saseg.cli import app, run
from saseg import distributed
from saseg.distributed import RayOptions, require_ray
from saseg.errors import DataError, SasegError
from saseg.models import load_model
from saseg.pipeline import fit, score

SCORE = dict(pixels_per_class=50, batch_size=4, chunk_frames=4, progress=False)


@pytest.fixture
def one_thread():
    """Run the local engine with one torch thread, as each Ray worker with 1 CPU does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_run(tiny_model_dir, tiny_sa_dir, tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("local") / "scores.parquet"
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, **SCORE)
    finally:
        torch.set_num_threads(before)
    return out.parent


def assert_same_run(ray_dir, local_dir):
    pd.testing.assert_frame_equal(pd.read_parquet(ray_dir / "scores.parquet"),
                                  pd.read_parquet(local_dir / "scores.parquet"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(ray_dir / "frames.parquet"),
                                  pd.read_parquet(local_dir / "frames.parquet"), check_exact=True)
    assert (ray_dir / "zscore.json").read_text() == (local_dir / "zscore.json").read_text()
    local_preds = sorted(p.relative_to(local_dir) for p in (local_dir / "predictions").rglob("*.png"))
    assert local_preds and local_preds == sorted(p.relative_to(ray_dir) for p in (ray_dir / "predictions").rglob("*.png"))
    assert all(filecmp.cmp(local_dir / p, ray_dir / p, shallow=False) for p in local_preds)
    assert not (ray_dir / "scores.parquet.parts").exists()


def test_ray_score_writes_the_local_engines_rows_and_files(ray_cluster, tiny_model_dir, tiny_sa_dir,
                                                          local_run, tmp_path):
    out = tmp_path / "scores.parquet"
    score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, engine="ray",
          ray_options=RayOptions(workers=2), **SCORE)
    assert_same_run(tmp_path, local_run)
    meta = json.loads((tmp_path / "score.json").read_text())
    assert meta["engine"] == "ray" and meta["timing_this_session"]["frames"] == 10


def test_rows_differ_only_by_float_rounding(ray_cluster, tiny_model_dir, tiny_sa_dir, tmp_path):
    """With the local engine on its default threads: equal ids and counts, floats to 1e-6."""
    score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "local" / "scores.parquet", **SCORE)
    score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "ray" / "scores.parquet", engine="ray",
          ray_options=RayOptions(workers=1), **SCORE)
    a, b = (pd.read_parquet(tmp_path / k / "scores.parquet") for k in ("local", "ray"))
    exact = [c for c in a.columns if not pd.api.types.is_float_dtype(a[c]) and c != "at_mean"]
    pd.testing.assert_frame_equal(a[exact], b[exact], check_exact=True)
    pd.testing.assert_frame_equal(a.drop(columns=exact), b.drop(columns=exact), check_exact=False,
                                  rtol=1e-5, atol=1e-6)


def test_cli_engine_ray_equals_local(ray_cluster, tiny_model_dir, tiny_sa_dir, local_run, tmp_path):
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(app, [
        "score", "-m", str(tiny_model_dir), "--sa", str(tiny_sa_dir), "-d", TEST_SPEC, "-o", str(out),
        "--pixels-per-class", "50", "-b", "4", "--engine", "ray", "--workers", "2",
        "--cpus-per-worker", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert "10 frames" in result.output
    # chunk_frames defaults to 8 batches here and to 4 frames in local_run: rows are per frame
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local_run / "scores.parquet"),
                                  check_exact=False, rtol=1e-5, atol=1e-6)


def test_ray_score_killed_midway_resumes_to_the_same_rows(ray_cluster, tiny_model_dir, tiny_sa_dir,
                                                          tmp_path, one_thread):
    """SIGKILL the driver (its own process, joined to the test's cluster) once a part is written."""
    spec = "synthetic:n=48,seed=5,size=160x120,split=test"
    out = tmp_path / "ray" / "scores.parquet"
    options = dict(pixels_per_class=50, batch_size=2, chunk_frames=2, progress=False)
    code = (f"import ray; ray.init(address={ray_cluster.get_runtime_context().gcs_address!r}, "
            f"log_to_driver=False)\n"
            f"from saseg.pipeline import score; from saseg.distributed import RayOptions\n"
            f"score({str(tiny_model_dir)!r}, {str(tiny_sa_dir)!r}, {spec!r}, {str(out)!r}, "
            f"engine='ray', ray_options=RayOptions(workers=1), **{options!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = out.with_name("scores.parquet.parts")
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(parts.glob("part-*.parquet")):
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(parts.glob("part-*.parquet")))
    assert not out.exists() and 1 <= written < 24
    score(tiny_model_dir, tiny_sa_dir, spec, out, engine="ray", ray_options=RayOptions(workers=2), **options)
    score(tiny_model_dir, tiny_sa_dir, spec, tmp_path / "local" / "scores.parquet", **options)
    assert_same_run(out.parent, tmp_path / "local")


def assert_cpus_freed(ray, timeout=60.0):
    """A run that stopped early must not keep its actors: the next run would wait for CPUs."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, f"actors still hold CPUs: {ray.available_resources()}"
        time.sleep(0.5)


def test_ray_score_records_or_refuses_unreadable_and_nan_frames(ray_cluster, tiny_model_dir, tiny_sa_dir,
                                                                tmp_path, one_thread):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8)).save(images / f"f{i}.png")
    (images / "f2.png").write_bytes(b"not a png")
    spec = f"folder:{images}"
    with pytest.raises(DataError, match="f2"):
        score(tiny_model_dir, tiny_sa_dir, spec, tmp_path / "a" / "scores.parquet", engine="ray", **SCORE)
    assert_cpus_freed(ray_cluster)
    ray_df = score(tiny_model_dir, tiny_sa_dir, spec, tmp_path / "b" / "scores.parquet", engine="ray",
                   on_error="skip", **SCORE)
    local_df = score(tiny_model_dir, tiny_sa_dir, spec, tmp_path / "c" / "scores.parquet",
                     on_error="skip", **SCORE)
    pd.testing.assert_frame_equal(ray_df, local_df)
    skipped = [json.loads((tmp_path / k / "score.json").read_text())["skipped"] for k in "bc"]
    assert skipped[0] == skipped[1] and len(skipped[0]) == 1 and "f2" in skipped[0][0][0]

    model = load_model(tiny_model_dir)
    dict(model.net.named_modules())[model.layer].register_forward_hook(lambda m, i, o: o * float("nan"))
    with pytest.raises(DataError, match="NaN"):
        score(model, tiny_sa_dir, TEST_SPEC, tmp_path / "d" / "scores.parquet", engine="ray", **SCORE)
    assert_cpus_freed(ray_cluster)
    with pytest.raises(DataError, match="NaN"):  # fit stops at the first bad batch, as score does
        fit(model, TRAIN_SPEC, tmp_path / "e", engine="ray", estimators=("mdsa",), batch_size=4, progress=False)
    assert not (tmp_path / "e" / "mdsa.json").exists()
    assert_cpus_freed(ray_cluster)


def _tensors(sa_dir):
    return {p.name: safetensors.torch.load_file(p) for p in sorted(sa_dir.glob("*.safetensors"))}


def test_ray_fit_keeps_the_single_process_reservoir(ray_cluster, tiny_model_dir, tmp_path, one_thread):
    """LSA/DSA references and capped MDSA: per-frame keys, merged by smallest key = the same ATs."""
    options = dict(estimators=("mdsa", "lsa", "dsa"), pixels_per_class=20, max_ats_per_class=60,
                   batch_size=4, progress=False)
    local = fit(tiny_model_dir, TRAIN_SPEC, tmp_path / "local", **options)
    remote = fit(tiny_model_dir, TRAIN_SPEC, tmp_path / "ray", engine="ray",
                 ray_options=RayOptions(workers=2), **options)
    assert remote["fitted_per_class"] == local["fitted_per_class"]
    assert remote["sampled_per_class"] == local["sampled_per_class"]
    assert max(local["sampled_per_class"].values()) > 60  # the cap bites: the reservoir chose
    a, b = _tensors(tmp_path / "local"), _tensors(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) == 3
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)


@pytest.mark.parametrize("arrival", ["as_finished", "reversed"])
def test_ray_fit_streamed_mdsa_of_every_pixel_matches_one_process(ray_cluster, tiny_model_dir, tmp_path,
                                                                  monkeypatch, arrival):
    """Every labelled pixel, moments merged from workers: equal to the single fit to 1e-10,
    the saved moments too (their shift is the first batch's), whatever order batches finish in."""
    if arrival == "reversed":  # the last batch first: the driver must still merge in batch order
        stream = distributed._stream

        def last_first(ray, batches):
            yield from list(stream(ray, batches))[::-1]
        monkeypatch.setattr(distributed, "_stream", last_first)
    options = dict(estimators=("mdsa",), pixels_per_class=None, max_ats_per_class=None,
                   batch_size=2, progress=False)
    local = fit(tiny_model_dir, TRAIN_SPEC, tmp_path / "local", **options)
    remote = fit(tiny_model_dir, TRAIN_SPEC, tmp_path / "ray", engine="ray",
                 ray_options=RayOptions(workers=2), **options)
    assert remote["sampled_per_class"] == local["sampled_per_class"]
    assert sum(local["sampled_per_class"].values()) == 12 * 64 * 48 - sum(  # every labelled pixel
        int((f.label == 255).sum()) for f in __import__("saseg.data", fromlist=["x"]).open_dataset(TRAIN_SPEC))
    a, b = _tensors(tmp_path / "local")["mdsa.safetensors"], _tensors(tmp_path / "ray")["mdsa.safetensors"]
    for key in a:
        if a[key].is_floating_point():
            scale = a[key].double().abs().max().clamp(min=1e-300)
            assert float((a[key].double() - b[key].double()).abs().max() / scale) < 1e-10, key
        else:
            assert torch.equal(a[key], b[key]), key


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, tiny_model_dir, tiny_sa_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SasegError, match=r"pip install 'saseg\[ray\]'"):
        require_ray()
    result = CliRunner().invoke(app, ["score", "-m", str(tiny_model_dir), "--sa", str(tiny_sa_dir),
                                      "-d", TEST_SPEC, "-o", str(tmp_path / "s.parquet"), "--engine", "ray"])
    assert result.exit_code == 1 and "saseg[ray]" in str(result.exception)
    assert not (tmp_path / "s.parquet").exists()


def test_console_prints_the_install_hint_as_one_line(monkeypatch, capsys, tiny_model_dir, tiny_sa_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "-m", str(tiny_model_dir), "-d", TRAIN_SPEC, "-o", str(tmp_path / "sa"), "--engine", "ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1 and "pip install 'saseg[ray]'" in err[0]


def test_ray_options_are_checked(tiny_model_dir, tiny_sa_dir, tmp_path):
    with pytest.raises(DataError, match="workers"):
        RayOptions(workers=0)
    with pytest.raises(DataError, match="gpus-per-worker"):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "s.parquet", engine="ray",
              device="cuda", progress=False)
    with pytest.raises(DataError, match="engine"):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "s.parquet", engine="spark",
              progress=False)
