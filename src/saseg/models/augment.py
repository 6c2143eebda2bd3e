"""Training augmentation on tensors: colour jitter, random horizontal flip, scale and crop.

Images are resized bilinearly and labels with nearest neighbour (``nearest-exact``, which
samples pixel centres like ``align_corners=False`` bilinear), so they stay aligned. All
randomness comes from the generator passed in, which makes a run reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augment_pair", "jitter_color"]


def _uniform(lo: float, hi: float, g: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def jitter_color(image: torch.Tensor, strength: float, *, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation, each by a factor in [1 - s, 1 + s].

    Road scenes change with the light (dusk, overcast, low sun); a model trained on a few
    hundred frames from a few drives otherwise learns their exact colours.

    Parameters
    ----------
    image : float tensor of shape (3, H, W) with values in [0, 1]
    strength : float in [0, 1)
    generator : torch.Generator
        The only source of randomness: three draws, in the order above.

    Returns
    -------
    float tensor of shape (3, H, W), clamped to [0, 1]
    """
    b, c, s = (_uniform(1 - strength, 1 + strength, generator) for _ in range(3))
    gray_weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
    image = image * b
    mean = (image * gray_weights).sum(0).mean()
    image = (image - mean) * c + mean
    gray = (image * gray_weights).sum(0, keepdim=True)
    return (gray + (image - gray) * s).clamp_(0, 1)


def augment_pair(
    image: torch.Tensor,
    label: torch.Tensor,
    *,
    crop_size: tuple[int, int] | None,
    scale_range: tuple[float, float] = (1.0, 1.0),
    hflip: bool = False,
    ignore_index: int = -100,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip, rescale and crop an image and its label the same way.

    Parameters
    ----------
    image : float tensor of shape (3, H, W)
        Normalised, so padding with 0 means the mean colour.
    label : integer tensor of shape (H, W)
    crop_size : (h, w) or None
        Output size; None keeps (H, W). Where the rescaled frame is smaller than the crop,
        the image is padded with 0 and the label with ``ignore_index``.
    scale_range : (lo, hi)
        The scale factor is drawn uniformly from it.
    hflip : bool
        Mirror left-right with probability 1/2.
    generator : torch.Generator
        The only source of randomness.

    Returns
    -------
    image : float tensor of shape (3, h, w)
    label : int64 tensor of shape (h, w)
    """
    h, w = image.shape[-2:]
    out_h, out_w = crop_size if crop_size is not None else (h, w)
    label = label.long()
    if hflip and float(torch.rand((), generator=generator)) < 0.5:
        image, label = image.flip(-1), label.flip(-1)
    s = _uniform(*scale_range, generator)
    sh, sw = max(1, round(h * s)), max(1, round(w * s))
    if (sh, sw) != (h, w):
        image = F.interpolate(image[None], size=(sh, sw), mode="bilinear", align_corners=False,
                              antialias=s < 1)[0]
        label = F.interpolate(label[None, None].float(), size=(sh, sw), mode="nearest-exact")[0, 0].long()
    pad_h, pad_w = max(out_h - sh, 0), max(out_w - sw, 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        label = F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)
    top = int(torch.randint(image.shape[-2] - out_h + 1, (), generator=generator))
    left = int(torch.randint(image.shape[-1] - out_w + 1, (), generator=generator))
    return (image[:, top:top + out_h, left:left + out_w].contiguous(),
            label[top:top + out_h, left:left + out_w].contiguous())
