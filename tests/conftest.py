"""Shared fixtures: a tiny model and a scored run on generated road scenes; the real labelling tools."""

from __future__ import annotations

import json
import os
import subprocess
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saseg.data.classes import ClassInfo

TRAIN_SPEC = "synthetic:n=12,seed=1,size=64x48,split=train"
TEST_SPEC = "synthetic:n=10,seed=2,size=64x48,split=test"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A small paper-head CNN, trained for two quick epochs on generated frames."""
    from saseg.data import open_dataset
    from saseg.models.train import train

    out = tmp_path_factory.mktemp("model")
    train(open_dataset(TRAIN_SPEC), out, arch="small", arch_kwargs={"width": 8, "d": 16},
          epochs=2, batch_size=4, lr=3e-3, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_sa_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from saseg.pipeline import fit

    out = tmp_path_factory.mktemp("sa")
    fit(tiny_model_dir, TRAIN_SPEC, out, estimators=("mdsa", "lsa", "dsa"), pixels_per_class=20,
        max_ats_per_class=200, batch_size=4, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tiny_sa_dir, tmp_path_factory) -> Path:
    """A scored, evaluated and planned run dir."""
    from saseg.commands.plan import plan_from_run
    from saseg.evaluation import evaluate
    from saseg.pipeline import score

    run = tmp_path_factory.mktemp("run")
    score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, run / "scores.parquet", pixels_per_class=50,
          batch_size=4, chunk_frames=4, progress=False)
    evaluate(run / "scores.parquet", None, run / "eval", progress=False)
    plan_from_run(run / "scores.parquet", run / "plan", skip_ratio=0.5, eval_dir=run / "eval")
    return run


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray (2 CPUs, no dashboard), started once per test run for the Ray engine's
    tests and shut down after. Ray is part of the dev install, so this never skips."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# The real annotation tools, each in its own venv under .venv-tools/ (built by `make tools`).
# A tool's tests skip with the reason when its venv is missing (no package index when
# `make tools` ran), and fail instead where ``SASEG_REQUIRE_TOOLS=1`` (CI), so that a CI run
# can never pass by skipping them. Tool code runs in a subprocess with the tool's own Python:
# the tools pin their own Django, numpy and pymongo, none of which belongs in saseg's venv.

TOOLS_DIR = Path(__file__).resolve().parents[1] / ".venv-tools"


def _tool_python(name: str) -> Path:
    python = TOOLS_DIR / name / "bin" / "python"
    if python.is_file():
        return python
    reason = (f"{name} is not installed in {TOOLS_DIR / name}: `make tools` builds it (it needs "
              "the package index)")
    if os.environ.get("SASEG_REQUIRE_TOOLS") == "1":
        pytest.fail(reason + "; SASEG_REQUIRE_TOOLS=1 forbids skipping")
    pytest.skip(reason)


def run_tool(python: Path, script: str, *args, env: dict | None = None, timeout: float = 600):
    """Run `script` with the tool's Python; its last stdout line is JSON, returned decoded."""
    done = subprocess.run([str(python), "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise AssertionError(f"{python} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def labelstudio_python():
    return _tool_python("labelstudio")


@pytest.fixture(scope="session")
def datumaro_python():
    return _tool_python("datumaro")


@pytest.fixture(scope="session")
def fiftyone_python():
    return _tool_python("fiftyone")


@pytest.fixture(scope="session")
def tool_runner():
    return run_tool


TOOL_CLASSES = ClassInfo(names=("Road", "Car", "Pole", "Sky"),
                         colours=((128, 64, 128), (64, 0, 128), (192, 192, 128), (128, 128, 128)),
                         ignore_index=255)


@pytest.fixture
def tool_queue(tmp_path):
    """Six frames out of rank order (one skipped), ids a file name cannot hold, predictions with
    blobs, a thin pole, specks, an absent class and ignored pixels."""
    rng = np.random.default_rng(7)
    ids = ["drive a/000017", "drive a/000003", "drive_a_000003", "夜/0001", "drive b/000100",
           "skipped/000001"]
    height, width = 36, 48
    preds, images = {}, {}
    for i, frame_id in enumerate(ids):
        pred = np.zeros((height, width), np.int64)  # Road
        pred[: height // 3] = 3  # Sky
        top, left = rng.integers(10, 20), rng.integers(0, 30)
        pred[top:top + 9, left:left + 14] = 1  # a car
        pred[:, 40 + i % 4] = 2  # a one-pixel pole
        specks = rng.random((height, width)) < 0.01
        pred[specks] = 1
        pred[0, :3] = 255  # ignored
        if i == 2:
            pred[pred == 2] = 0  # no pole here
        preds[frame_id] = pred
        images[frame_id] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    queue = pd.DataFrame({
        "rank": [2, 1, 3, 5, 4, 6], "frame_id": ids, "frame_index": range(len(ids)),
        "source": ["generated"] * len(ids), "score": [8.0, 9.5, 7.0, 3.0, 5.5, 1.0],
        "action": ["label"] * 5 + ["skip"], "frame_risk": [0.4, 0.9, 0.35, 0.1, 0.2, 0.05],
    })
    order = queue[queue.action == "label"].sort_values("rank")["frame_id"].tolist()
    return types.SimpleNamespace(queue=queue, classes=TOOL_CLASSES, preds=preds,
                                 prediction_for=preds.__getitem__, image_for=images.__getitem__,
                                 images=images, order=order, out=tmp_path / "export")
