"""The shift alarm: fires on generated night frames, quiet on frames of the same condition."""

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from saseg.analysis.shift import shift_check
from saseg.commands.shift import pool_shift
from saseg.errors import DataError


def test_auc_is_the_mann_whitney_probability():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=80), rng.normal(0.5, size=60)
    check = shift_check(a, b)
    brute = np.mean([(x > y) + 0.5 * (x == y) for x in b for y in a])
    assert check.auc == pytest.approx(brute)
    assert check.auc == pytest.approx(mannwhitneyu(b, a).statistic / (80 * 60))


def test_large_pools_need_an_effect_not_just_significance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=20000), rng.normal(0.05, size=20000)
    check = shift_check(a, b)
    assert check.p_value < 0.01 and not check.shifted  # significant but tiny: AUC ~0.51
    with pytest.raises(DataError, match="at least 2"):
        shift_check([1.0], [1.0, 2.0])


DAY = "synthetic:n=48,seed=1,size=64x48,conditions=day"


@pytest.fixture(scope="module")
def day_model(tmp_path_factory):
    """A tiny CNN and MDSA fitted on day drives only (a few seconds)."""
    from saseg.data import open_dataset
    from saseg.models.train import train
    from saseg.pipeline import fit

    root = tmp_path_factory.mktemp("day")
    train(open_dataset(DAY), root / "model", arch="small", arch_kwargs={"width": 8, "d": 16}, epochs=4,
          batch_size=8, lr=3e-3, seed=0, progress=False)
    fit(root / "model", DAY, root / "sa", estimators=("mdsa", "lsa"), pixels_per_class=20,
        max_ats_per_class=300, batch_size=8, progress=False)
    return root


def _run(root, spec):
    from saseg.pipeline import score
    from saseg.layout import RunDir

    out = root / spec.replace(":", "_").replace(",", "_").replace("=", "")
    score(root / "model", root / "sa", spec, out / "scores.parquet", pixels_per_class=30, batch_size=8,
          progress=False, save_predictions=False, features=False)
    return RunDir(out)


def test_fires_on_night_frames_and_not_on_day_frames(day_model):
    pilot = _run(day_model, "synthetic:n=40,seed=7,size=64x48,conditions=day")
    same = _run(day_model, "synthetic:n=40,seed=8,size=64x48,conditions=day")
    night = _run(day_model, "synthetic:n=40,seed=9,size=64x48,conditions=night")
    quiet = pool_shift(pilot, same, ["frame_lsa", "missing_column"])
    loud = pool_shift(pilot, night)
    assert len(quiet) == 2 and not any(c.shifted for c in quiet), [c.describe() for c in quiet]
    assert len(loud) == 1 and loud[0].shifted and loud[0].auc > 0.6, loud[0].describe()
    assert "SHIFT in frame_mdsa (pilot reference)" in loud[0].describe()
    # the run's own z-scoring hides the shift: that is why the pilot's reference is used
    assert not shift_check(pilot.frames()["frame_mdsa"], night.frames()["frame_mdsa"]).shifted
