import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from saseg.errors import FormatError, UnknownClassError
from saseg.estimators import DSA, LSA, MDSA, load_estimator
from saseg.estimators.base import check_ats

NAMES = ["Sky", "Road", "Car"]


def data(seed=0, n=120, d=4):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 3, n)
    return rng.normal(size=(n, d)) + c[:, None], c


@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
def test_round_trip_gives_identical_scores_without_pickle(cls, tmp_path):
    x, c = data()
    q, qc = data(seed=1, n=30)
    est = cls().fit(x, c, class_names=NAMES)
    est.save(tmp_path, "model", provenance={"layer": "head.features"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["estimator"] == cls.name and meta["classes"] == [0, 1, 2] and meta["n_features"] == 4
    assert meta["class_names"] == {"0": "Sky", "1": "Road", "2": "Car"}
    assert meta["n_per_class"] == {str(k): int((c == k).sum()) for k in range(3)}
    assert meta["provenance"] == {"layer": "head.features"} and meta["saseg_version"]
    with safe_open(tmp_path / "model.safetensors", framework="pt") as fh:  # tensors only
        assert "classes" in fh.keys()
    assert not (tmp_path / "model.safetensors").read_bytes().startswith(b"\x80")  # no pickle
    for loaded in (cls.load(tmp_path, "model"), load_estimator(tmp_path, "model")):
        assert type(loaded) is cls and loaded.get_params() == est.get_params()
        assert loaded.class_names_ == {0: "Sky", 1: "Road", 2: "Car"}
        assert torch.equal(loaded.score(q, qc), est.score(q, qc))


def test_loaded_mdsa_continues_partial_fit(tmp_path):
    x, c = data(n=200)
    MDSA().partial_fit(x[:100], c[:100]).save(tmp_path)
    resumed = MDSA.load(tmp_path).partial_fit(x[100:], c[100:]).finalize()
    torch.testing.assert_close(resumed.covariances_, MDSA().fit(x, c).covariances_, rtol=1e-10, atol=1e-12)


def test_format_errors(tmp_path):
    x, c = data()
    with pytest.raises(FormatError, match="does not exist"):
        load_estimator(tmp_path, "model")
    MDSA().fit(x, c).save(tmp_path, "model")
    with pytest.raises(FormatError, match="expected a 'lsa' model"):
        LSA.load(tmp_path, "model")
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "estimator": "knn"}))
    with pytest.raises(FormatError, match="knn"):
        load_estimator(tmp_path, "model")
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(FormatError, match="format_version"):
        load_estimator(tmp_path, "model")
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="safetensors"):
        load_estimator(tmp_path, "model")
    Path(tmp_path / "model.safetensors").unlink()
    with pytest.raises(FormatError, match="safetensors"):
        load_estimator(tmp_path, "model")
    meta_path.write_text("{not json")
    with pytest.raises(FormatError, match="valid JSON"):
        load_estimator(tmp_path, "model")


def test_class_names_must_cover_fitted_classes_and_overflowing_sums_are_not_nan():
    x, c = data()
    with pytest.raises(UnknownClassError, match=r"\[2\]"):
        MDSA().fit(x, c, class_names=["Sky", "Road"])
    big = torch.full((4, 2), 3e38)  # finite rows whose sum overflows float32
    assert torch.equal(check_ats(big, "test"), big)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
def test_scores_follow_the_ats_device(cls):
    x, c = data()
    est = cls().fit(x, c)
    expected = est.score(x, c)
    got = est.score(torch.tensor(x, device="cuda"), torch.tensor(c, device="cuda"))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("edit", [{"estimators": ["mdsa", "../../tmp/x"]}, {"classes": {"names": 5}},
                                  {"estimators": "mdsa"}])
def test_a_tampered_sa_json_is_a_format_error(tiny_sa_dir, tmp_path, edit):
    """Estimator names become file names: one that walks out of the folder is refused."""
    import shutil

    from saseg.estimators.sa_model import load_sa_model, sa_model_sha256

    sa = tmp_path / "sa"
    shutil.copytree(tiny_sa_dir, sa)
    meta = json.loads((sa / "sa.json").read_text())
    (sa / "sa.json").write_text(json.dumps({**meta, **edit}))
    for read in (load_sa_model, sa_model_sha256):
        with pytest.raises(FormatError, match="expected saseg SA provenance"):
            read(sa)


@pytest.mark.parametrize("edit", ["kept negative", "kept too large", "kept repeated", "refs narrow", "refs empty"])
def test_a_tampered_lsa_state_is_a_format_error(tmp_path, edit):
    """Shapes with free dimensions cannot catch these; a negative index silently scored other features."""
    from safetensors.torch import load_file, save_file

    x, c = data()
    LSA().fit(x, c).save(tmp_path, "lsa")
    path = tmp_path / "lsa.safetensors"
    t = load_file(str(path))
    if edit == "kept negative":
        t["kept.0"] = t["kept.0"].clone()
        t["kept.0"][0] = -1
    elif edit == "kept too large":
        t["kept.0"] = t["kept.0"].clone()
        t["kept.0"][-1] = 999
    elif edit == "kept repeated":
        t["kept.0"] = t["kept.0"].clone()
        t["kept.0"][1] = t["kept.0"][0]
    elif edit == "refs narrow":
        t["refs.0"] = t["refs.0"][:, :-1].contiguous()
    else:
        t["refs.0"] = t["refs.0"][:0].contiguous()
    save_file(t, str(path))
    with pytest.raises(FormatError, match="kept features"):
        load_estimator(tmp_path, "lsa")


def test_mdsa_tensors_of_mixed_dtypes_are_a_format_error(tmp_path):
    from safetensors.torch import load_file, save_file

    x, c = data()
    MDSA().fit(x, c).save(tmp_path, "mdsa")
    path = tmp_path / "mdsa.safetensors"
    t = load_file(str(path))
    t["whiteners"] = t["whiteners"].float() if t["whiteners"].dtype == torch.float64 else t["whiteners"].double()
    save_file(t, str(path))
    with pytest.raises(FormatError, match="one float dtype"):
        load_estimator(tmp_path, "mdsa")
