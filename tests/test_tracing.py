"""ActivationTracer, sample_ats and upsample_features_chunked against F.interpolate and direct calls."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saseg.errors import DataError, ModelError
from saseg.tracing import ActivationTracer, sample_ats, upsample_features_chunked


class ModelOutput(dict):
    def __getattr__(self, name):
        return self[name]


class Head(nn.Module):
    def __init__(self, d=5, c=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, d, 3, stride=4, padding=1), nn.BatchNorm2d(d),
                                      nn.Dropout(0.5))
        self.classifier = nn.Conv2d(d, c, 1)


class Net(nn.Module):
    """Paper-style: features at low resolution, 1x1 classifier, bilinear upsampling."""

    def __init__(self, wrap=None):
        super().__init__()
        self.head = Head()
        self.wrap = wrap

    def forward(self, x):
        out = F.interpolate(self.head.classifier(self.head.features(x)), size=x.shape[-2:],
                            mode="bilinear", align_corners=False)
        if self.wrap == "dict":
            return {"out": out, "aux": out}
        if self.wrap == "hf":
            return SimpleNamespace(logits=out[..., ::4, ::4])
        if self.wrap == "hf_dict":  # like transformers' ModelOutput, an OrderedDict
            return ModelOutput(loss=None, logits=out[..., ::4, ::4])
        if self.wrap == "nodict":
            return {"logits": out}
        if self.wrap == "tuple":
            return (out,)
        return out


def _net(wrap=None):
    torch.manual_seed(0)
    net = Net(wrap)
    net.head.features[1].running_mean.uniform_(-1, 1)  # eval-mode BN differs from train mode
    return net


X = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(1))


def test_output_capture_equals_direct_call():
    net = _net().eval()
    with torch.no_grad():
        want_feat = net.head.features(X)
        want_logits = net(X)
    logits, feat = ActivationTracer(net, "head.features")(X)
    assert feat.shape == (2, 5, 4, 6)
    torch.testing.assert_close(feat, want_feat, rtol=0, atol=0)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=0)
    assert not feat.requires_grad


def test_input_capture_is_the_classifier_input():
    net = _net().eval()
    with torch.no_grad():
        want = net.head.features(X)
    _, feat = ActivationTracer(net, "head.classifier", capture="input")(X)
    torch.testing.assert_close(feat, want, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["dict", "hf", "hf_dict"])
def test_dict_and_hf_outputs(wrap):
    net = _net(wrap).eval()
    with torch.no_grad():
        want = F.interpolate(net.head.classifier(net.head.features(X)), size=X.shape[-2:],
                             mode="bilinear", align_corners=False)
    logits, _ = ActivationTracer(net, "head.features")(X)
    torch.testing.assert_close(logits, want if wrap == "dict" else want[..., ::4, ::4])


def test_training_mode_restored_and_eval_used():
    net = _net().train()
    net.head.classifier.eval()  # mixed modes survive too
    with torch.no_grad():
        want = net.eval().head.features(X)
    net.train()
    net.head.classifier.eval()
    _, feat = ActivationTracer(net, "head.features")(X)
    torch.testing.assert_close(feat, want, rtol=0, atol=0)  # dropout and BN in eval mode
    assert net.training and net.head.features[1].training and not net.head.classifier.training


def _hooks(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


@pytest.mark.parametrize("capture", ["output", "input"])
def test_no_hook_leaks_even_on_error(capture):
    net = _net("nodict")
    tracer = ActivationTracer(net, "head.features", capture=capture)
    with pytest.raises(ModelError, match="key 'out'"):
        tracer(X)
    assert _hooks(net) == 0 and net.training
    with pytest.raises(RuntimeError):
        ActivationTracer(_net(), "head.features", capture=capture)(torch.randn(2, 4, 8, 8))
    tracer = ActivationTracer(_net(), "head.features", capture=capture)
    tracer(X)
    assert _hooks(tracer.model) == 0


def test_unknown_layer_suggests_close_names():
    with pytest.raises(ModelError, match=r"head\.features"):
        ActivationTracer(_net(), "head.feature")
    with pytest.raises(ModelError, match="some layers"):
        ActivationTracer(_net(), "zzzzzzzz")


def test_bad_capture_and_model():
    with pytest.raises(ModelError, match="capture"):
        ActivationTracer(_net(), "head.features", capture="grad")
    with pytest.raises(ModelError, match="nn.Module"):
        ActivationTracer(lambda x: x, "head")


def test_non_tensor_logits():
    with pytest.raises(ModelError, match="tuple"):
        ActivationTracer(_net("tuple"), "head.features")(X)


def test_feature_map_must_be_4d():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flat = nn.Flatten()

        def forward(self, x):
            return self.flat(self.pool(x))[:, :, None, None]

    with pytest.raises(ModelError, match=r"shape \(2, 3\)"):
        ActivationTracer(Flat(), "flat")(X)


def test_layer_run_zero_or_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.unused = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(ModelError, match="ran 2 times"):
        ActivationTracer(Twice(), "conv")(X)
    with pytest.raises(ModelError, match="ran 0 times"):
        ActivationTracer(Twice(), "unused")(X)


def test_non_tensor_layer_output():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    class Net2(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()

        def forward(self, x):
            return self.pair(x)[0]

    with pytest.raises(ModelError, match="expected a tensor, but got tuple"):
        ActivationTracer(Net2(), "pair")(X)


# ------------------------------------------------------------------------- bilinear reads
SHAPES = [  # (h0, w0) -> (H, W)
    ((4, 6), (32, 48)),     # 8x
    ((45, 60), (360, 480)),  # CamVid 1/8
    ((5, 7), (23, 31)),     # odd, non-integer ratios
    ((9, 13), (4, 5)),      # downsampling
    ((3, 4), (3, 4)),       # identity
    ((1, 1), (3, 2)),       # single source pixel
    ((6, 5), (1, 1)),       # single output pixel
]


def _reference(f, size, align_corners):
    return F.interpolate(f[None], size=size, mode="bilinear", align_corners=align_corners)[0]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("src,size", SHAPES)
def test_sample_ats_equals_interpolate(src, size, dtype, tol, align_corners):
    g = torch.Generator().manual_seed(sum(src) + sum(size))
    f = torch.randn(3, *src, generator=g, dtype=dtype)
    H, W = size
    n = min(H * W, 500)
    flat = torch.randperm(H * W, generator=g)[:n]
    flat[0], flat[-1] = 0, H * W - 1  # both corners
    ys, xs = flat // W, flat % W
    got = sample_ats(f, ys, xs, torch.Size(size), align_corners=align_corners)
    want = _reference(f, size, align_corners)[:, ys, xs].T
    assert got.dtype == dtype and got.shape == (n, 3)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("src,size", SHAPES)
def test_chunks_equal_interpolate(src, size, dtype, tol, align_corners):
    f = torch.randn(4, *src, generator=torch.Generator().manual_seed(3), dtype=dtype)
    want = _reference(f, size, align_corners)
    chunks = list(upsample_features_chunked(f, size, align_corners=align_corners, rows_per_chunk=7))
    assert [c[0] for c in chunks] == list(range(0, size[0], 7))
    assert chunks[-1][1] == size[0]
    for y0, y1, chunk in chunks:
        assert chunk.shape == (4, y1 - y0, size[1]) and chunk.dtype == dtype
    torch.testing.assert_close(torch.cat([c for *_, c in chunks], 1), want, rtol=tol, atol=tol)


def test_default_chunk_is_about_32mb():
    f = torch.zeros(4096, 2, 2)
    chunks = [(y0, y1) for y0, y1, _ in upsample_features_chunked(f, (40, 64))]
    assert chunks == [(0, 32), (32, 40)]  # a 32-row chunk of 4096 x 64 float32 is 32 MiB


def test_bad_inputs():
    f = torch.zeros(2, 3, 4)
    ys = xs = torch.tensor([0, 1])
    with pytest.raises(DataError, match=r"\(d, h0, w0\)"):
        sample_ats(torch.zeros(1, 2, 3, 4), ys, xs, (8, 8))
    with pytest.raises(DataError, match="float tensor"):
        sample_ats(torch.zeros(2, 3, 4, dtype=torch.long), ys, xs, (8, 8))
    with pytest.raises(DataError, match="out_size"):
        sample_ats(f, ys, xs, (8, 0))
    with pytest.raises(DataError, match="out_size"):
        sample_ats(f, ys, xs, 8)
    with pytest.raises(DataError, match="equal shape"):
        sample_ats(f, ys, torch.tensor([0]), (8, 8))
    with pytest.raises(DataError, match="int tensors"):
        sample_ats(f, ys.float(), xs, (8, 8))
    with pytest.raises(DataError, match=r"ys in \[0, 8\)"):
        sample_ats(f, torch.tensor([0, 8]), xs, (8, 8))
    with pytest.raises(DataError, match=r"xs in \[0, 8\)"):
        sample_ats(f, ys, torch.tensor([-1, 0]), (8, 8))
    with pytest.raises(DataError, match="rows_per_chunk"):
        upsample_features_chunked(f, (8, 8), rows_per_chunk=0)
    with pytest.raises(DataError, match=r"\(d, h0, w0\)"):
        upsample_features_chunked(torch.zeros(3, 4), (8, 8))
    assert sample_ats(f, ys[:0], xs[:0], (8, 8)).shape == (0, 2)
