"""Activation traces: capture a layer's feature map and read per-pixel ATs from it.

The paper (Kim et al., ESEC/FSE 2020, sec. 4) adds an instrumentation layer L_AT that
bilinearly upsamples the feature map to the output size, so that every output pixel has an
activation trace. ``sample_ats`` reads that layer at chosen pixels and
``upsample_features_chunked`` yields it row block by row block, both without building the
full (d, H, W) tensor, and both equal to ``F.interpolate(..., mode="bilinear")``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from .errors import DataError, ModelError

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 32 * 2**20


class ActivationTracer:
    """Run a model and return its class scores together with one layer's feature map.

    A forward hook (``capture="output"``) or forward pre-hook (``capture="input"``, i.e.
    the features just before, say, the classifier) is registered on the named layer for the
    duration of one call and removed afterwards, even on error, so no hook ever leaks. The
    call runs under ``torch.no_grad()`` with every module in eval mode; each module's
    previous training flag is restored afterwards, so tracing never changes the model.

    Parameters
    ----------
    model : nn.Module
        Returns logits as a tensor (B, C, H', W'), a mapping with key ``"out"`` (torchvision
        style) or an object with a ``.logits`` tensor (Hugging Face style).
    layer : str
        Dotted module path, as in ``model.named_modules()`` (e.g. ``"head.features"``).
    capture : {"output", "input"}
        Trace the layer's output or the first positional input it receives.
    align_corners : bool
        How the network upsamples its feature map; kept for callers of ``sample_ats``.

    Examples
    --------
    >>> tracer = ActivationTracer(net, "head.features")          # doctest: +SKIP
    >>> logits, features = tracer(x)  # (B, C, H', W'), (B, d, h0, w0)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, layer: str, *, capture: str = "output",
                 align_corners: bool = False):
        if not isinstance(model, nn.Module):
            raise ModelError(f"ActivationTracer: expected an nn.Module, but got {type(model).__name__}.")
        if capture not in ("output", "input"):
            raise ModelError(f"ActivationTracer: expected capture 'output' or 'input', but got {capture!r}.")
        modules = dict(model.named_modules())
        if layer not in modules:
            names = [n for n in modules if n]
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
            hint = f"close names: {close}" if close else f"some layers: {names[:10]}"
            raise ModelError(
                f"ActivationTracer: expected a layer of {type(model).__name__}, but got {layer!r}; {hint}."
            )
        self.model = model
        self.layer = layer
        self.module = modules[layer]
        self.capture = capture
        self.align_corners = bool(align_corners)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Forward `x` once.

        Parameters
        ----------
        x : tensor of shape (B, 3, H, W)
            Preprocessed input, already on the model's device.

        Returns
        -------
        logits : tensor of shape (B, C, H', W')
            As the model returns them; H', W' may be below H, W (e.g. SegFormer's 1/4).
        features : tensor of shape (B, d, h0, w0)
            The traced layer's output (or input), detached.
        """
        captured: list = []
        if self.capture == "output":
            handle = self.module.register_forward_hook(lambda m, args, out: captured.append(out))
        else:
            handle = self.module.register_forward_pre_hook(
                lambda m, args: captured.append(args[0] if args else None))
        modes = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            with torch.no_grad():
                out = self.model(x)
        finally:
            handle.remove()
            for m, training in modes:
                m.training = training
        return _logits(out, self.model), self._features(captured)

    def _features(self, captured: list) -> Tensor:
        where = f"ActivationTracer: layer {self.layer!r} ({self.capture})"
        if len(captured) != 1:
            raise ModelError(f"{where}: expected the layer to run once per forward pass, "
                             f"but it ran {len(captured)} times.")
        features = captured[0]
        if not torch.is_tensor(features):
            raise ModelError(f"{where}: expected a tensor, but got {type(features).__name__}.")
        if features.ndim != 4:
            raise ModelError(f"{where}: expected a feature map of shape (B, d, h0, w0), "
                             f"but got shape {tuple(features.shape)}.")
        return features.detach()


def _logits(out, model: nn.Module) -> Tensor:
    """The class scores inside a model's output: tensor, ``out["out"]`` or ``out.logits``."""
    name = type(model).__name__
    if not torch.is_tensor(out) and torch.is_tensor(getattr(out, "logits", None)):
        out = out.logits  # before Mapping: HF's ModelOutput is an OrderedDict
    elif isinstance(out, Mapping):
        if "out" not in out:
            raise ModelError(f"ActivationTracer: expected {name} to return a dict with key 'out', "
                             f"but got keys {list(out)}.")
        out = out["out"]
    if not torch.is_tensor(out) or out.ndim != 4:
        got = f"shape {tuple(out.shape)}" if torch.is_tensor(out) else type(out).__name__
        raise ModelError(f"ActivationTracer: expected {name} to return logits of shape "
                         f"(B, C, H, W), but got {got}.")
    return out


# ------------------------------------------------------------------ bilinear sampling (L_AT)
def _source_index(dst: Tensor, in_size: int, out_size: int, align_corners: bool,
                  dtype: torch.dtype):
    """PyTorch's ``upsample_bilinear2d`` source taps for output indices `dst`.

    As ``area_pixel_compute_source_index`` with scale = in/out (no scale_factor given):
    ``src = (dst + 0.5) * in / out - 0.5`` clamped at 0, or ``dst * (in-1)/(out-1)`` with
    align_corners; then ``i0 = min(floor(src), in-1)``, ``i1 = min(i0+1, in-1)`` and
    ``lambda1 = clamp(src - i0, 0, 1)``. Returns (i0, i1, lambda1). Computed, as PyTorch
    does, in float32 for float32 and narrower features and in float64 for float64: in
    float64 a 480-pixel float32 map would differ from F.interpolate by about 2e-5.
    """
    dst = dst.to(torch.promote_types(dtype, torch.float32))
    if align_corners:
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:
        src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    return i0, i1, (src - i0).clamp(0.0, 1.0)


def _check_features(features, out_size, fn: str) -> tuple[int, int]:
    if not torch.is_tensor(features) or features.ndim != 3 or not features.is_floating_point():
        got = (f"{features.dtype} tensor of shape {tuple(features.shape)}" if torch.is_tensor(features)
               else type(features).__name__)
        raise DataError(f"{fn}: expected features as a float tensor of shape (d, h0, w0), but got {got}.")
    try:
        H, W = (int(s) for s in out_size)
    except (TypeError, ValueError):
        H = W = 0
    if H <= 0 or W <= 0:
        raise DataError(f"{fn}: expected out_size as two positive ints (H, W), but got {out_size!r}.")
    return H, W


def sample_ats(features: Tensor, ys: Tensor, xs: Tensor, out_size: Sequence[int], *,
               align_corners: bool = False) -> Tensor:
    """Activation traces of output pixels (ys, xs): the feature map bilinearly upsampled.

    Equals ``F.interpolate(features[None], size=out_size, mode="bilinear",
    align_corners=align_corners)[0, :, ys, xs].T`` to float rounding, but gathers only the
    four neighbours of each pixel, so memory is O(N d) instead of O(d H W).

    Parameters
    ----------
    features : tensor of shape (d, h0, w0)
        One image's feature map (index the batch first: ``features[b]``).
    ys, xs : int tensors of shape (N,)
        Pixel coordinates in the output image, ``0 <= ys < H`` and ``0 <= xs < W``.
    out_size : (H, W)
        Output image size that the features are upsampled to.
    align_corners : bool
        As in ``F.interpolate``; must match the network's own upsampling.

    Returns
    -------
    ats : tensor of shape (N, d)
        Same dtype and device as `features`.
    """
    H, W = _check_features(features, out_size, "sample_ats")
    ys, xs = torch.as_tensor(ys), torch.as_tensor(xs)
    if (ys.ndim != 1 or ys.shape != xs.shape or ys.is_floating_point() or xs.is_floating_point()
            or ys.dtype == torch.bool or xs.dtype == torch.bool):
        raise DataError(f"sample_ats: expected ys and xs as int tensors of equal shape (N,), but got "
                        f"{ys.dtype} {tuple(ys.shape)} and {xs.dtype} {tuple(xs.shape)}.")
    for name, v, size in (("ys", ys, H), ("xs", xs, W)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= size):
            raise DataError(f"sample_ats: expected {name} in [0, {size}), but got values in "
                            f"[{int(v.min())}, {int(v.max())}].")
    _, h0, w0 = features.shape
    y0, y1, ly = (t.to(features.device) for t in _source_index(ys, h0, H, align_corners, features.dtype))
    x0, x1, lx = (t.to(features.device) for t in _source_index(xs, w0, W, align_corners, features.dtype))
    ly, lx = ly.to(features.dtype)[:, None], lx.to(features.dtype)[:, None]
    f = features.permute(1, 2, 0).reshape(h0 * w0, -1)  # one copy; gathers read whole ATs
    top = torch.lerp(f[y0 * w0 + x0], f[y0 * w0 + x1], lx)  # a + w (b - a): one pass, not three
    bottom = torch.lerp(f[y1 * w0 + x0], f[y1 * w0 + x1], lx)
    return torch.lerp(top, bottom, ly)


def upsample_features_chunked(features: Tensor, out_size: Sequence[int], *,
                              align_corners: bool = False,
                              rows_per_chunk: int | None = None) -> Iterator[tuple[int, int, Tensor]]:
    """The bilinearly upsampled feature map, a block of output rows at a time.

    Concatenating the chunks along rows gives ``F.interpolate(features[None], size=out_size,
    mode="bilinear", align_corners=align_corners)[0]`` (to float rounding), but only one
    chunk and a column-upsampled map of shape (d, h0, W) are alive at a time, which bounds
    memory for per-pixel heatmaps (1/8 of the full map at the paper's 1/8 resolution).

    Parameters
    ----------
    features : tensor of shape (d, h0, w0)
    out_size : (H, W)
    align_corners : bool
    rows_per_chunk : int or None
        Output rows per chunk; None picks as many as fit in about 32 MB.

    Yields
    ------
    y0, y1 : int
        The chunk covers output rows ``y0:y1``.
    chunk : tensor of shape (d, y1 - y0, W)
        Same dtype and device as `features`.
    """
    H, W = _check_features(features, out_size, "upsample_features_chunked")
    d, h0, w0 = features.shape
    if rows_per_chunk is None:
        rows_per_chunk = max(1, _CHUNK_BYTES // max(1, d * W * features.element_size()))
    elif isinstance(rows_per_chunk, bool) or not isinstance(rows_per_chunk, int) or rows_per_chunk <= 0:
        raise DataError("upsample_features_chunked: expected rows_per_chunk as a positive int or "
                        f"None, but got {rows_per_chunk!r}.")
    return _chunks(features, H, W, align_corners, rows_per_chunk)


def _chunks(features: Tensor, H: int, W: int, align_corners: bool, rows: int):
    _, h0, w0 = features.shape
    dev, dt = features.device, features.dtype
    # Columns first, once: (d, h0, W), i.e. h0/H of the full map. Then each chunk only blends
    # two of its rows, in the order PyTorch's kernel does (width taps inside height taps).
    x0, x1, lx = (t.to(dev) for t in _source_index(torch.arange(W), w0, W, align_corners, dt))
    lx = lx.to(dt)
    cols = features[:, :, x0] * (1 - lx) + features[:, :, x1] * lx
    for start in range(0, H, rows):
        stop = min(start + rows, H)
        y0, y1, ly = (t.to(dev) for t in _source_index(torch.arange(start, stop), h0, H, align_corners, dt))
        ly = ly.to(dt)[None, :, None]
        yield start, stop, cols[:, y0] * (1 - ly) + cols[:, y1] * ly
