"""Segmentation networks with the paper's output head, and a registry of architectures.

Every network here maps a normalised float tensor (B, 3, H, W) to logits (B, C, H, W) at the
input resolution. The head follows Kim et al. (2020), section 2.1 and Figure 2: a feature
layer ``head.features`` of d channels at 1/8 resolution (the AT source the tracer hooks),
a 1x1 classifier ``head.classifier``, then bilinear upsampling (``align_corners=False``) of
the logits to the input size.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .efficientnet import LiteFusionBackbone
from .layers import ConvBNReLU

log = logging.getLogger(__name__)

__all__ = [
    "PaperHead",
    "Segmenter",
    "SmallCNN",
    "build_model",
    "register_model",
    "available_models",
    "is_registered",
    "param_groups",
    "input_normalisation",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PaperHead(nn.Module):
    """The paper's latent feature layer L_f and pixel classifier L_c (Figure 2a, 2b).

    Parameters
    ----------
    in_channels : int
        Channels of the backbone's 1/8-resolution feature map.
    d : int
        Channels of ``features``, i.e. the length of an activation trace.
    num_classes : int
    depth : int
        Number of 3x3 conv-BN-ReLU layers in ``features`` (1 or more).
    dropout : float
        Dropout2d between ``features`` and ``classifier`` while training; the AT, taken at
        the output of ``features``, never sees it.
    """

    def __init__(self, in_channels: int, d: int, num_classes: int, *, depth: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        layers = [ConvBNReLU(in_channels, d)] + [ConvBNReLU(d, d) for _ in range(depth - 1)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(d, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, h, w) -> logits (B, num_classes, h, w), still at 1/8."""
        return self.classifier(self.dropout(self.features(x)))


class Segmenter(nn.Module):
    """Backbone at 1/8 resolution, paper head, bilinear upsampling to the input size.

    ``backbone`` maps (B, 3, H, W) to (B, c, ceil(H/8), ceil(W/8)); ``head`` is a
    :class:`PaperHead` (or any module with ``features`` and ``classifier``).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, C, H, W) logits."""
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SmallCNN(nn.Module):
    """A from-scratch backbone for tests and synthetic data: three stride-2 stages to 1/8,
    then dilated convolutions for context (receptive field ~100 pixels) without losing
    resolution.

    Output: (B, width * 2, ceil(H/8), ceil(W/8)).
    """

    def __init__(self, *, width: int = 32):
        super().__init__()
        w = width
        self.out_channels = 2 * w
        self.layers = nn.Sequential(
            ConvBNReLU(3, w // 2, stride=2),
            ConvBNReLU(w // 2, w, stride=2),
            ConvBNReLU(w, w),
            ConvBNReLU(w, 2 * w, stride=2),
            ConvBNReLU(2 * w, 2 * w, dilation=2),
            ConvBNReLU(2 * w, 2 * w, dilation=4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# --------------------------------------------------------------------------- registry

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def register_model(name: str, builder: Builder | None = None, *,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Register ``builder(num_classes, *, pretrained=False, **kwargs) -> nn.Module`` as ``name``.

    Usable as ``register_model("mynet", fn)`` or as a decorator ``@register_model("mynet")``.
    ``mean``/``std`` (RGB, on the 0..1 scale) are the input normalisation the architecture
    expects. The registry lives in this process only; a checkpoint of a user model that must
    load elsewhere names its builder in ``model.json`` as ``factory`` instead.
    """

    def add(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        _NORMALISATION[name] = (tuple(map(float, mean)), tuple(map(float, std)))
        return fn

    return add if builder is None else add(builder)


def input_normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per RGB channel on the 0..1 scale; ImageNet's for unknown architectures."""
    return _NORMALISATION.get(arch, (IMAGENET_MEAN, IMAGENET_STD))


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def is_registered(arch: str | None) -> bool:
    """Whether `arch` names a built-in architecture (built without importing user code)."""
    return arch in _REGISTRY


def build_model(arch: str, num_classes: int, *, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered architecture.

    Parameters
    ----------
    arch : str
        ``"small"``, ``"efficientnet_lite0"`` or a name given to :func:`register_model`.
    num_classes : int
    pretrained : bool
        Initialise the backbone from pretrained weights where the architecture has them
        (``efficientnet_lite0``: ImageNet); ``small`` has none and ignores it.
    **kwargs
        Architecture arguments (``d``, ``width``, ...), saved as ``arch_kwargs``.

    Raises
    ------
    ModelError
        If ``arch`` is unknown or ``num_classes`` < 1.
    """
    if arch not in _REGISTRY:
        raise ModelError(f"Expected a model architecture in {available_models()}, but got {arch!r}.")
    if int(num_classes) < 1:
        raise ModelError(f"build_model: expected num_classes >= 1, but got {num_classes}.")
    try:
        return _REGISTRY[arch](int(num_classes), pretrained=pretrained, **kwargs)
    except TypeError as exc:
        raise ModelError(f"build_model({arch!r}): bad architecture arguments {kwargs}: {exc}") from None


@register_model("small")
def small(num_classes: int, *, pretrained: bool = False, width: int = 32, d: int = 64,
          dropout: float = 0.0) -> Segmenter:
    """SmallCNN backbone + paper head with ``d`` feature channels (trained from scratch)."""
    if pretrained:
        log.debug("'small' has no pretrained weights; training from scratch.")
    backbone = SmallCNN(width=width)
    return Segmenter(backbone, PaperHead(backbone.out_channels, d, num_classes, dropout=dropout))


# The TensorFlow Lite weights expect (x - 127) / 128 on the 0..255 scale, not ImageNet's
# mean/std: with these values the stem's batch statistics on road frames match the stored
# running statistics (variance ratio ~1.3 instead of ~6.5 with ImageNet's mean/std).
@register_model("efficientnet_lite0", mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
def efficientnet_lite0(num_classes: int, *, pretrained: bool = False, d: int = 128,
                       depth: int = 2, dropout: float = 0.1, **kwargs) -> Segmenter:
    """EfficientNet-Lite0 (ImageNet weights if ``pretrained``) with multi-scale fusion at 1/8."""
    backbone = LiteFusionBackbone(pretrained=pretrained, **kwargs)
    head = PaperHead(backbone.out_channels, d, num_classes, depth=depth, dropout=dropout)
    return Segmenter(backbone, head)


def param_groups(model: nn.Module, *, lr: float, weight_decay: float,
                 pretrained_lr_scale: float = 0.1) -> list[dict]:
    """AdamW parameter groups: pretrained weights learn slower; norms and biases get no decay.

    A module counts as pretrained when it has the attribute ``is_pretrained = True`` (set
    by backbones that loaded weights); all its parameters then use ``lr * pretrained_lr_scale``.
    """
    slow = {id(p) for m in model.modules() if getattr(m, "is_pretrained", False)
            for p in m.parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in slow, p.ndim <= 1), []).append(p)
    return [
        {"params": ps, "lr": lr * (pretrained_lr_scale if is_slow else 1.0),
         "weight_decay": 0.0 if no_decay else weight_decay}
        for (is_slow, no_decay), ps in sorted(groups.items())
    ]
