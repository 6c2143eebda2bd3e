"""Building blocks shared by the networks (kept apart so backbones and heads import no cycle)."""

from __future__ import annotations

from torch import nn

__all__ = ["ConvBNReLU"]


class ConvBNReLU(nn.Sequential):
    """k x k convolution (no bias), batch norm, ReLU; 'same' padding, so stride s gives ceil(H/s)."""

    def __init__(self, cin: int, cout: int, k: int = 3, *, stride: int = 1, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k - 1) // 2,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
