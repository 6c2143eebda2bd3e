"""fit and score against brute-force recomputation; score's kill-and-resume guarantee."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import TEST_SPEC, TRAIN_SPEC
from saseg.data import open_dataset
from saseg.errors import DataError, FormatError
from saseg.estimators import load_estimator
from saseg.models import load_model
from saseg.pipeline import fit, score
from saseg.scoring import frame_seed
from saseg.layout import RunDir
from saseg.sampling import sample_pixels


def _full_forward(model, frame):
    """Logits and fully upsampled features (the paper's L_AT), the slow way."""
    feats = {}
    handle = dict(model.net.named_modules())[model.layer].register_forward_hook(
        lambda m, i, o: feats.setdefault("f", o))
    with torch.no_grad():
        logits = model.net(model.preprocess([frame.image]))
    handle.remove()
    full = F.interpolate(feats["f"], size=frame.image.shape[:2], mode="bilinear", align_corners=False)
    return logits[0], full[0]


def test_fit_counts_every_sampled_label_pixel(tiny_model_dir, tiny_sa_dir):
    meta = json.loads((tiny_sa_dir / "sa.json").read_text())
    data = open_dataset(TRAIN_SPEC)
    expected: dict[str, int] = {}
    for frame in data:
        counts = np.bincount(frame.label[frame.label != 255].ravel(), minlength=data.classes.num_classes)
        for c, n in enumerate(counts):
            if n:
                name = data.classes.names[c]
                expected[name] = expected.get(name, 0) + min(20, int(n))
    assert meta["sampled_per_class"] == expected
    assert meta["model"]["sha256"] == load_model(tiny_model_dir).sha256
    assert meta["sampler"]["pixels_per_class"] == 20 and meta["data"]["spec"] == TRAIN_SPEC
    assert set(meta["estimators"]) == {"mdsa", "lsa", "dsa"}


def test_fit_streams_the_ats_of_the_sampled_label_pixels(tiny_model_dir, tmp_path):
    """The pipeline's MDSA equals one fitted on ATs read from the full upsampled features."""
    from saseg.estimators import MDSA

    model = load_model(tiny_model_dir)
    fit(model, TRAIN_SPEC, tmp_path, pixels_per_class=20, max_ats_per_class=None, progress=False)
    ats, classes = [], []
    for frame in open_dataset(TRAIN_SPEC):
        _, full = _full_forward(model, frame)
        gen = torch.Generator().manual_seed(frame_seed(0, frame.frame_id))
        ys, xs, cls = sample_pixels(torch.as_tensor(frame.label), 20, generator=gen, ignore_index=255)
        ats.append(full[:, ys, xs].T.double())
        classes.append(cls)
    ats, classes = torch.cat(ats), torch.cat(classes)
    ids, counts = torch.unique(classes, return_counts=True)
    keep = torch.isin(classes, ids[counts >= 2])  # MDSA.partial_fit leaves out classes with < 2
    ats, classes = ats[keep], classes[keep]
    reference = MDSA().fit(ats, classes)
    pipeline = load_estimator(tmp_path, "mdsa")
    queries = ats[::7].float() + 0.1
    np.testing.assert_allclose(pipeline.score(queries, classes[::7]).numpy(),
                               reference.score(queries, classes[::7]).numpy(), rtol=1e-4)


def test_score_rows_equal_a_brute_force_recomputation(tiny_model_dir, tiny_sa_dir, tiny_run):
    scores = pd.read_parquet(tiny_run / "scores.parquet")
    model = load_model(tiny_model_dir)
    mdsa = load_estimator(tiny_sa_dir, "mdsa")
    frame = open_dataset(TEST_SPEC)[3]
    logits, full = _full_forward(model, frame)
    pred = logits.argmax(0)
    gen = torch.Generator().manual_seed(frame_seed(0, frame.frame_id))
    ys, xs, cls = sample_pixels(pred, 50, generator=gen)
    rows = scores[scores["frame_id"] == frame.frame_id].set_index("class_id")
    assert sorted(rows.index) == sorted(torch.unique(pred).tolist())
    counts = torch.bincount(pred.flatten(), minlength=11)
    probs = torch.softmax(logits[:, ys, xs].T, 1)
    for c in rows.index:
        m = cls == c
        per_pixel = mdsa.score(full[:, ys[m], xs[m]].T, cls[m])
        assert rows.loc[c, "n_pixels"] == counts[c]
        assert rows.loc[c, "n_sampled"] == min(50, int(counts[c]))
        assert rows.loc[c, "mdsa"] == pytest.approx(per_pixel.mean().item(), rel=1e-4)
        assert rows.loc[c, "max_softmax"] == pytest.approx((1 - probs[m].max(1).values).mean().item(), rel=1e-4)
    assert np.array_equal(RunDir(tiny_run).prediction(frame.frame_id), pred.numpy())


def test_frames_table_holds_groups_and_frame_scores(tiny_run):
    frames = pd.read_parquet(tiny_run / "frames.parquet")
    assert len(frames) == 10
    assert {"frame_mdsa", "frame_lsa", "frame_dsa", "frame_entropy", "group_lanes_mdsa"} <= set(frames.columns)
    meta = json.loads((tiny_run / "score.json").read_text())
    assert meta["score_columns"][:3] == ["mdsa", "lsa", "dsa"]


def test_score_resumes_after_a_crash_with_identical_rows(tiny_model_dir, tiny_sa_dir, tiny_run,
                                                          tmp_path, monkeypatch):
    from saseg import io

    calls = {"n": 0}
    real_write = io.PartStore.write

    def crash_after_two(self, chunk, frame, notes=None):
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        calls["n"] += 1
        real_write(self, chunk, frame, notes)

    monkeypatch.setattr(io.PartStore, "write", crash_after_two)
    out = tmp_path / "scores.parquet"
    with pytest.raises(KeyboardInterrupt):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, pixels_per_class=50, batch_size=4,
              chunk_frames=4, progress=False)
    assert not out.exists()
    assert len(list((tmp_path / "scores.parquet.parts").glob("part-*.parquet"))) == 2
    monkeypatch.setattr(io.PartStore, "write", real_write)
    resumed = score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, pixels_per_class=50,
                    batch_size=4, chunk_frames=4, progress=False)
    pd.testing.assert_frame_equal(resumed, pd.read_parquet(tiny_run / "scores.parquet"))
    assert not (tmp_path / "scores.parquet.parts").exists()


def test_score_survives_kill_9(tiny_model_dir, tiny_sa_dir, tiny_run, tmp_path):
    out = tmp_path / "scores.parquet"
    code = (f"from saseg.pipeline import score; score({str(tiny_model_dir)!r}, {str(tiny_sa_dir)!r}, "
            f"{TEST_SPEC!r}, {str(out)!r}, pixels_per_class=50, batch_size=4, chunk_frames=4, "
            "progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    parts = tmp_path / "scores.parquet.parts"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(parts.glob("part-*.parquet")):
        time.sleep(0.005)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    resumed = score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, pixels_per_class=50,
                    batch_size=4, chunk_frames=4, progress=False)
    pd.testing.assert_frame_equal(resumed, pd.read_parquet(tiny_run / "scores.parquet"))


def test_resume_with_other_settings_is_refused(tiny_model_dir, tiny_sa_dir, tmp_path, monkeypatch):
    from saseg import io

    monkeypatch.setattr(io.PartStore, "write", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "s.parquet", pixels_per_class=50,
              progress=False)
    with pytest.raises(FormatError, match="same settings"):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "s.parquet", pixels_per_class=10,
              progress=False)


def test_fit_rejects_unknown_estimator_and_unlabelled_data(tiny_model_dir, tmp_path):
    with pytest.raises(DataError, match="estimators"):
        fit(tiny_model_dir, TRAIN_SPEC, tmp_path, estimators=("knn",), progress=False)
    with pytest.raises(DataError, match="max_ats_per_class"):
        fit(tiny_model_dir, TRAIN_SPEC, tmp_path, estimators=("lsa",), max_ats_per_class=None,
            progress=False)


def test_nan_activations_are_a_clear_error(tiny_model_dir, tiny_sa_dir, tmp_path):
    from saseg.errors import DegenerateDataError

    model = load_model(tiny_model_dir)
    layer = dict(model.net.named_modules())[model.layer]
    layer.register_forward_hook(lambda m, i, o: o * float("nan"))
    with pytest.raises(DegenerateDataError, match="NaN"):
        score(model, tiny_sa_dir, TEST_SPEC, tmp_path / "s.parquet", progress=False)


def test_one_frame_with_nan_outputs_is_named_and_skippable(tiny_model_dir, tiny_sa_dir, tmp_path):
    """Under on_error="skip" a frame whose network output is NaN is recorded, not fatal."""
    from saseg.errors import DegenerateDataError

    model = load_model(tiny_model_dir)
    data = open_dataset(TEST_SPEC)
    bad = data[3].image

    def poison(module, args, out):  # NaN logits for exactly the frame with frame 3's pixels
        x = args[0]
        hit = torch.tensor([torch.equal(xi, model.preprocess([bad])[0]) for xi in x])
        return torch.where(hit[:, None, None, None], torch.full_like(out, float("nan")), out)

    model.net.register_forward_hook(poison)
    with pytest.raises(DegenerateDataError, match=r"frame 'd000/00003'"):
        score(model, tiny_sa_dir, TEST_SPEC, tmp_path / "a" / "scores.parquet", batch_size=4,
              progress=False)
    df = score(model, tiny_sa_dir, TEST_SPEC, tmp_path / "b" / "scores.parquet", batch_size=4,
               progress=False, on_error="skip")
    assert "d000/00003" not in set(df["frame_id"]) and df["frame_id"].nunique() == len(data) - 1
    skipped = json.loads((tmp_path / "b" / "score.json").read_text())["skipped"]
    assert [s[0] for s in skipped] == ["d000/00003"]


def test_score_refuses_an_sa_model_fitted_on_another_model(tiny_model_dir, tiny_sa_dir, tmp_path, caplog):
    import shutil

    from saseg.errors import ModelError

    sa = tmp_path / "sa"
    shutil.copytree(tiny_sa_dir, sa)
    meta = json.loads((sa / "sa.json").read_text())
    meta["model"] = {**meta["model"], "sha256": "0" * 64, "layer": "backbone.other"}
    (sa / "sa.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"fitted with model sha256 000000000000.*layer 'backbone.other'"):
        score(tiny_model_dir, sa, TEST_SPEC, tmp_path / "run" / "scores.parquet", progress=False)
    assert not (tmp_path / "run" / "scores.parquet").exists()
    with caplog.at_level("WARNING"):
        score(tiny_model_dir, sa, "synthetic:n=2,seed=2,size=64x48,split=test",
              tmp_path / "run2" / "scores.parquet", progress=False, allow_mismatch=True)
    assert "expected an SA model fitted on this model" in caplog.text
    meta["model"] = json.loads((tiny_sa_dir / "sa.json").read_text())["model"]
    meta["classes"] = {**meta["classes"], "names": list(reversed(meta["classes"]["names"]))}
    (sa / "sa.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="classes"):
        score(tiny_model_dir, sa, TEST_SPEC, tmp_path / "run3" / "scores.parquet", progress=False)


def _kill_after_first_part(monkeypatch):
    """Make PartStore die right after writing its first part (like a kill -9 between parts)."""
    from saseg import io

    real = io.PartStore.write

    def write_then_die(self, chunk, frame, notes=None):
        real(self, chunk, frame, notes)
        raise KeyboardInterrupt

    monkeypatch.setattr(io.PartStore, "write", write_then_die)
    return lambda: monkeypatch.setattr(io.PartStore, "write", real)


@pytest.mark.slow
def test_resume_refuses_what_would_change_the_result(tiny_model_dir, tiny_sa_dir, tmp_path, monkeypatch):
    """Refit in place, another data seed, predictions toggled: each refused, naming the change."""
    import shutil

    sa = tmp_path / "sa"
    shutil.copytree(tiny_sa_dir, sa)
    out = tmp_path / "run" / "scores.parquet"
    options = dict(pixels_per_class=20, batch_size=2, chunk_frames=2, progress=False)
    restore = _kill_after_first_part(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        score(tiny_model_dir, sa, TEST_SPEC, out, save_predictions=False, **options)
    restore()
    with pytest.raises(FormatError, match=r"save_predictions: false -> true"):
        score(tiny_model_dir, sa, TEST_SPEC, out, **options)
    with pytest.raises(FormatError, match=r"data: \"synthetic:.*seed=2.* -> \"synthetic:.*seed=5"):
        score(tiny_model_dir, sa, TEST_SPEC.replace("seed=2", "seed=5"), out, save_predictions=False,
              **options)
    fit(tiny_model_dir, TRAIN_SPEC, sa, estimators=("mdsa", "lsa", "dsa"), pixels_per_class=20,
        max_ats_per_class=200, batch_size=4, seed=7, progress=False)  # refit in place
    with pytest.raises(FormatError, match=r"sa_sha256: \"[0-9a-f]+\.* -> \"[0-9a-f]+"):
        score(tiny_model_dir, sa, TEST_SPEC, out, save_predictions=False, **options)


def test_skipped_frames_accumulate_over_resumed_runs(tiny_model_dir, tiny_sa_dir, tmp_path, monkeypatch):
    from PIL import Image

    from saseg.models import load_model

    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(open_dataset("synthetic:n=6,seed=2,size=64x48,split=test")):
        Image.fromarray(frame.image).save(images / f"f{i}.png")
    (images / "f1.png").write_bytes(b"not a png")  # chunk 0
    (images / "f4.png").write_bytes(b"\x89PNG broken")  # chunk 2
    meta = tmp_path / "classes.json"
    meta.write_text(json.dumps(load_model(tiny_model_dir).classes.to_dict()))
    spec = f"folder:{images}?classes={meta}"
    out = tmp_path / "run" / "scores.parquet"
    options = dict(pixels_per_class=20, batch_size=2, chunk_frames=2, progress=False, on_error="skip")
    restore = _kill_after_first_part(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        score(tiny_model_dir, tiny_sa_dir, spec, out, **options)
    restore()
    score(tiny_model_dir, tiny_sa_dir, spec, out, **options)
    skipped = [entry[0] for entry in json.loads((out.parent / "score.json").read_text())["skipped"]]
    assert skipped == ["f1", "f4"]
    assert sorted(pd.read_parquet(out)["frame_id"].unique()) == ["f0", "f2", "f3", "f5"]


def test_fit_counts_only_the_frames_it_used(tiny_model_dir, tmp_path):
    from PIL import Image

    from saseg.models import load_model

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for i, frame in enumerate(open_dataset("synthetic:n=3,seed=1,size=64x48,split=train")):
        Image.fromarray(frame.image).save(images / f"f{i}.png")
        Image.fromarray(frame.label.astype(np.uint8)).save(labels / f"f{i}.png")
    (images / "f1.png").write_bytes(b"not a png")
    meta = tmp_path / "classes.json"
    meta.write_text(json.dumps(load_model(tiny_model_dir).classes.to_dict()))
    provenance = fit(tiny_model_dir, f"folder:{images}:{labels}?classes={meta}", tmp_path / "sa",
                     pixels_per_class=20, on_error="skip", progress=False)
    assert provenance["data"]["n_used"] == 2 and len(provenance["data"]["skipped"]) == 1
    with pytest.raises(DataError, match="pixels_per_class >= 1"):
        fit(tiny_model_dir, TRAIN_SPEC, tmp_path / "sa2", pixels_per_class=-5, progress=False)


def test_resume_refuses_a_frame_file_replaced_since_the_crash(tiny_model_dir, tiny_sa_dir, tmp_path, monkeypatch):
    """#23 item 9: resume hashed frame ids only; a replaced image (same id) was mixed in."""
    from PIL import Image

    from saseg.models import load_model

    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(open_dataset("synthetic:n=4,seed=2,size=64x48,split=test")):
        Image.fromarray(frame.image).save(images / f"f{i}.png")
    meta = tmp_path / "classes.json"
    meta.write_text(json.dumps(load_model(tiny_model_dir).classes.to_dict()))
    spec = f"folder:{images}?classes={meta}"
    out = tmp_path / "run" / "scores.parquet"
    options = dict(pixels_per_class=20, batch_size=2, chunk_frames=2, progress=False)
    restore = _kill_after_first_part(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        score(tiny_model_dir, tiny_sa_dir, spec, out, **options)
    restore()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(images / "f0.png")  # a re-export, same id
    os.utime(images / "f0.png", ns=(1, 1))
    with pytest.raises(FormatError, match=r"frame_files_sha256"):
        score(tiny_model_dir, tiny_sa_dir, spec, out, **options)


def test_score_writes_each_table_once_with_and_without_quality(tiny_model_dir, tiny_sa_dir, tiny_run,
                                                                tmp_path, monkeypatch):
    """One writer: scores.parquet, frames.parquet, zscore.json and score.json are written once
    per run, and a quality model given to `score` gives what applying it afterwards gives."""
    from saseg.analysis.quality import RunQuality
    from saseg.commands.quality import apply_quality, fit_quality

    fit_quality(tiny_run, tiny_run / "eval", tmp_path / "q", min_rows_for_trees=100_000)
    writes: dict[str, int] = {}
    for name in ("write_scores", "write_frames", "write_zscore", "write_meta"):
        real = getattr(RunDir, name)

        def counted(self, *args, _real=real, _name=name):
            writes[_name] = writes.get(_name, 0) + 1
            return _real(self, *args)

        monkeypatch.setattr(RunDir, name, counted)
    options = dict(pixels_per_class=50, batch_size=4, chunk_frames=4, progress=False)
    for quality in (None, RunQuality.load(tmp_path / "q")):
        writes.clear()
        out = tmp_path / ("plain" if quality is None else "with") / "scores.parquet"
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, quality=quality, **options)
        assert writes == {"write_scores": 1, "write_frames": 1, "write_zscore": 1, "write_meta": 1}
    monkeypatch.undo()
    apply_quality(tmp_path / "plain", tmp_path / "q")
    plain, with_ = RunDir(tmp_path / "plain"), RunDir(tmp_path / "with")
    pd.testing.assert_frame_equal(plain.scores(), with_.scores())
    pd.testing.assert_frame_equal(plain.frames(), with_.frames())
    assert plain.meta()["quality"] == with_.meta()["quality"]
    assert with_.meta()["score_columns"][-1] == "risk"
    with pytest.raises(DataError, match="loaded quality model"):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, tmp_path / "x" / "scores.parquet",
              quality=tmp_path / "q", **options)


def test_a_registered_logit_score_becomes_a_run_column(tiny_model_dir, tiny_sa_dir, tiny_run, tmp_path,
                                                       monkeypatch):
    """One function and one registry line: scored, aggregated, listed in score.json, and a
    resume under another registry is refused; the run stays readable once it is unregistered."""
    from saseg.estimators import registered_score

    def energy(logits, dim=1):
        return -torch.logsumexp(logits, dim)

    options = dict(pixels_per_class=50, batch_size=4, chunk_frames=4, progress=False)
    out = tmp_path / "run" / "scores.parquet"
    with registered_score("energy", energy):
        df = score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, out, **options)
    run = RunDir(out.parent)
    base = RunDir(tiny_run)
    assert run.score_columns() == [*base.score_columns(), "energy"]
    assert run.score_columns()[-4:-1] == ["max_softmax", "entropy", "margin"]
    assert run.meta()["baselines"] == ["max_softmax", "entropy", "margin", "energy"]
    assert "baselines" not in base.meta()  # the default registry writes what it always wrote
    assert {"energy", "energy_q90"} <= set(df.columns) and "frame_energy" in run.frames().columns
    same = [c for c in base.scores().columns if c in df.columns]
    pd.testing.assert_frame_equal(df[same], base.scores()[same])
    assert df["energy"].notna().all() and (df["energy"] < 0).any()

    part = tmp_path / "part" / "scores.parquet"
    restore = _kill_after_first_part(monkeypatch)
    with registered_score("energy", energy), pytest.raises(KeyboardInterrupt):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, part, **options)
    restore()
    with pytest.raises(FormatError, match="baselines"):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, part, **options)


def test_a_rerun_refused_on_a_bad_reference_keeps_the_finished_run(tiny_model_dir, tiny_sa_dir, tiny_run, tmp_path):
    """Inputs are checked before the old run's score.json goes."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(FormatError, match="does not exist"):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, run / "scores.parquet", reference=tmp_path / "none.json",
              progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    RunDir(run).check_finished()


def test_a_second_scores_file_in_a_run_folder_is_refused(tiny_model_dir, tiny_sa_dir, tiny_run, tmp_path):
    """Its frames.parquet, score.json and masks would silently replace the first run's."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with pytest.raises(DataError, match="holds scores.parquet besides other.parquet"):
        score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, run / "other.parquet", progress=False)
    RunDir(run).check_finished()


def test_a_fresh_rerun_drops_the_old_runs_masks(tiny_model_dir, tiny_sa_dir, tiny_run, tmp_path):
    import shutil

    run = RunDir(tmp_path / "run")
    shutil.copytree(tiny_run, run.root)
    stale = run.prediction_path("gone/000001")
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"a mask of a frame the new run does not hold")
    score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, run.scores_path, pixels_per_class=50, progress=False)
    assert not stale.exists()
    assert sorted(p.stem for p in run.predictions_dir.rglob("*.png")) == sorted(
        f.split("/")[-1] for f in run.frames()["frame_id"])
