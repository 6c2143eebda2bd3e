"""Shared fixtures: a tiny untrained model and a scored run on generated road scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    from saseg.analysis.plan import plan_from_run
    from saseg.evaluation import evaluate
    from saseg.pipeline import score

    run = tmp_path_factory.mktemp("run")
    score(tiny_model_dir, tiny_sa_dir, TEST_SPEC, run / "scores.parquet", pixels_per_class=50,
          batch_size=4, chunk_frames=4, progress=False)
    evaluate(run / "scores.parquet", None, run / "eval", progress=False)
    plan_from_run(run / "scores.parquet", run / "plan", skip_ratio=0.5, eval_dir=run / "eval")
    return run
