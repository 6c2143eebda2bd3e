"""Checkpoint directories: ``model.pt`` (a bare state_dict) + ``model.json`` (how to use it).

Nothing is unpickled: ``model.pt`` loads with ``torch.load(weights_only=True)``, and the
network is rebuilt from ``model.json``, either from a registered architecture (``arch``) or
from a user factory ``"package.module:function"`` called with ``arch_kwargs``.

A factory is code named by a file in someone's folder, so it runs only with consent: its
exact ``module:function`` must be passed as `trust_factory` (CLI: ``--trust-factory``) or be
listed in the environment variable ``SASEG_TRUSTED_FACTORIES`` (comma-separated). Otherwise
loading stops *before* anything is imported. Built-in architectures need no consent.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..data.base import Frame
from ..data.classes import ClassInfo
from ..errors import DataError, DegenerateDataError, FormatError, ModelError
from ..io import read_json, write_bytes, write_json
from ..tracing import ActivationTracer
from .networks import build_model, input_normalisation, is_registered

log = logging.getLogger(__name__)

__all__ = ["save_checkpoint", "load_model", "as_model", "LoadedModel", "file_sha256", "trusted_factories",
           "nonfinite_frames",
           "TRUSTED_FACTORIES_ENV"]

TRUSTED_FACTORIES_ENV = "SASEG_TRUSTED_FACTORIES"
MODEL_PT = "model.pt"
MODEL_JSON = "model.json"
REQUIRED = ("classes", "mean", "std")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hash of a state_dict's names, dtypes, shapes and values (for unsaved models)."""
    h = hashlib.sha256()
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)};".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _complete_config(config: dict) -> dict:
    """Fill the defaults of a model.json dict; ``classes`` may be a ClassInfo."""
    cfg = dict(config)
    if "arch" not in cfg and "factory" not in cfg:
        raise ModelError("save_checkpoint: expected config with 'arch' or 'factory', but got neither.")
    if "classes" not in cfg:
        raise ModelError("save_checkpoint: expected config with 'classes', but it is missing.")
    if isinstance(cfg["classes"], ClassInfo):
        cfg["classes"] = cfg["classes"].to_dict()
    arch = cfg.get("arch")
    mean, std = input_normalisation(arch) if arch else input_normalisation("")
    out = {
        "arch": arch,
        "arch_kwargs": dict(cfg.get("arch_kwargs") or {}),
        "classes": cfg["classes"],
        "layer": cfg.get("layer", "head.features"),
        "capture": cfg.get("capture", "output"),
        "align_corners": bool(cfg.get("align_corners", False)),
        "input_size": list(cfg["input_size"]) if cfg.get("input_size") else None,
        "mean": [float(v) for v in cfg.get("mean", mean)],
        "std": [float(v) for v in cfg.get("std", std)],
        "factory": cfg.get("factory"),
        "saseg_version": __version__,
    }
    extra = {k: v for k, v in cfg.items() if k not in out and k != "sha256"}
    return {**out, **extra}


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, config: dict) -> dict:
    """Write ``model.pt`` and ``model.json`` into ``directory``, each atomically.

    Parameters
    ----------
    directory : path
    model : nn.Module
        Its ``state_dict()`` is saved (on the CPU, tensors only).
    config : dict
        ``arch`` (registered name) or ``factory`` (``"module:function"``), ``classes``
        (ClassInfo or its dict), optional ``arch_kwargs``, ``layer`` ("head.features"),
        ``capture`` ("output"), ``align_corners`` (False), ``input_size`` ([H, W] or None),
        ``mean``/``std`` (the architecture's normalisation). Extra keys are kept.

    Returns
    -------
    config : dict
        What was written to ``model.json``, including ``sha256`` of ``model.pt``.
    """
    directory = Path(directory)
    cfg = _complete_config(config)
    if cfg["capture"] not in ("output", "input"):
        raise ModelError(f"save_checkpoint: expected capture 'output' or 'input', but got {cfg['capture']!r}.")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()  # torch.save names the archive after its file: a buffer keeps the
    torch.save(state, buffer)  # bytes (and so the sha256) a function of the weights alone
    data = buffer.getvalue()
    cfg["sha256"] = hashlib.sha256(data).hexdigest()
    write_bytes(directory / MODEL_PT, data)
    write_json(directory / MODEL_JSON, cfg)
    return cfg


def trusted_factories(extra: str | Sequence[str] | None = None) -> set[str]:
    """The factories the user allowed: `extra` plus ``$SASEG_TRUSTED_FACTORIES`` (comma-separated)."""
    names = [extra] if isinstance(extra, str) else list(extra or [])
    names += os.environ.get(TRUSTED_FACTORIES_ENV, "").split(",")
    return {n.strip() for n in names if n and n.strip()}


def _import_factory(spec: str, where: Path, trusted: set[str]):
    module_name, _, func_name = str(spec).partition(":")
    if not module_name or not func_name:
        raise FormatError(f"{where}: expected factory as 'package.module:function', but got {spec!r}.")
    if spec not in trusted:
        raise ModelError(
            f"{where} asks to run code: it would import {module_name!r} and call {func_name!r} to "
            f"build the network. Load it only if you trust this folder: pass --trust-factory {spec} "
            f"(API: trust_factory=...) or add it to ${TRUSTED_FACTORIES_ENV}.")
    try:
        obj = importlib.import_module(module_name)
        for part in func_name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"{where}: cannot import the model factory {spec!r}: {exc}") from None
    return obj


def _build(cfg: dict, where: Path, trusted: set[str]) -> nn.Module:
    arch, kwargs = cfg.get("arch"), cfg.get("arch_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise FormatError(f"{where}: expected 'arch_kwargs' as a JSON object, but got {type(kwargs).__name__}.")
    if is_registered(arch):
        # The saved state_dict replaces any pretrained weights, so never fetch them here.
        try:
            return build_model(arch, len(cfg["classes"]["names"]), pretrained=False, **kwargs)
        except TypeError as exc:
            raise ModelError(f"{where}: cannot build {arch!r} with arch_kwargs {kwargs}: {exc}") from None
    if cfg.get("factory"):
        factory = _import_factory(cfg["factory"], where, trusted)
        try:
            net = factory(**kwargs)
        except TypeError as exc:
            raise ModelError(f"{where}: cannot call the factory {cfg['factory']!r} with arch_kwargs "
                             f"{kwargs}: {exc}") from None
        if not isinstance(net, nn.Module):
            raise ModelError(f"{where}: factory {cfg['factory']!r} returned {type(net).__name__}, expected an nn.Module.")
        return net
    raise ModelError(f"{where}: expected a known arch or a 'factory', but got arch={arch!r} and no factory.")


def _check_layer(net: nn.Module, layer: str, where: str) -> None:
    names = dict(net.named_modules())
    if layer not in names:
        some = [n for n in names if n][:8]
        raise ModelError(f"{where}: expected the traced layer {layer!r} in the network, but it has none (modules: {some}...).")


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu",
               trust_factory: str | Sequence[str] | None = None) -> "LoadedModel":
    """Load a checkpoint directory (or its ``model.json`` / ``model.pt``) for inference.

    `trust_factory` names the ``module:function`` factories this call may import and run
    (besides ``$SASEG_TRUSTED_FACTORIES``); a checkpoint that needs any other is refused
    before anything is imported.

    Raises
    ------
    FormatError
        If ``model.json`` or ``model.pt`` is missing, corrupt, incomplete, or ``model.pt``
        does not match the ``sha256`` recorded in ``model.json``.
    ModelError
        If the network cannot be built, its state_dict does not match the saved one
        (missing/unexpected keys or shapes are named), or the traced layer is absent.
    """
    path = Path(path)
    directory = path.parent if path.suffix in (".json", ".pt") else path
    json_path, pt_path = directory / MODEL_JSON, directory / MODEL_PT
    cfg = read_json(json_path)
    if not isinstance(cfg, dict):
        raise FormatError(f"{json_path}: expected a JSON object, but got {type(cfg).__name__}.")
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise FormatError(f"{json_path}: expected the fields {list(REQUIRED)}, but {missing} are missing.")
    try:
        classes = ClassInfo.from_dict(cfg["classes"])
    except (DataError, TypeError, AttributeError) as exc:
        raise FormatError(f"{json_path}: bad 'classes': {exc}") from None
    for key in ("mean", "std"):  # the input normalisation: one positive-std number per RGB channel
        v = cfg[key]
        if (not isinstance(v, list) or len(v) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
                or (key == "std" and min(v) <= 0)):
            raise FormatError(f"{json_path}: expected {key!r} as three finite numbers (one per RGB channel"
                              f"{', positive' if key == 'std' else ''}), but got {v!r}.")
    if not pt_path.is_file():
        raise FormatError(f"Expected the weights file {pt_path}, but it does not exist.")
    sha = file_sha256(pt_path)
    if cfg.get("sha256") and cfg["sha256"] != sha:
        raise FormatError(f"{pt_path}: expected sha256 {cfg['sha256'][:12]}... from {MODEL_JSON}, but got {sha[:12]}... (file changed or half-written).")
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message advises weights_only=False, i.e. running the file's code: not passed on
        raise FormatError(f"{pt_path}: expected a state_dict of tensors saved by torch.save, but it cannot be "
                          f"read as one ({type(exc).__name__}: corrupt, or it holds other objects, which saseg "
                          "never unpickles).") from None
    if not isinstance(state, dict):
        raise FormatError(f"{pt_path}: expected a state_dict (dict of tensors), but got {type(state).__name__}.")
    cfg = {**cfg, "classes": classes.to_dict()}
    net = _build(cfg, json_path, trusted_factories(trust_factory))
    load_state(net, state, str(pt_path))
    layer = cfg.get("layer", "head.features")
    _check_layer(net, layer, str(json_path))
    device = torch.device(device)
    return LoadedModel(
        net=net.to(device).eval(), config=cfg, classes=classes, layer=layer,
        capture=cfg.get("capture", "output"), align_corners=bool(cfg.get("align_corners", False)),
        device=device, sha256=sha, path=str(directory.resolve()),
    )


def as_model(model: "LoadedModel | str | os.PathLike", device: str | torch.device = "cpu", *,
             trust_factory: str | Sequence[str] | None = None) -> "LoadedModel":
    """`model` itself, or the checkpoint directory it names loaded onto `device`."""
    if isinstance(model, LoadedModel):
        return model
    return load_model(model, device=device, trust_factory=trust_factory)


def load_state(net: nn.Module, state: dict, where: str) -> None:
    """``net.load_state_dict(state, strict=True)``, with a ModelError naming the bad keys."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ModelError(
            f"{where}: expected a state_dict matching the network, but got "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}, {len(shapes)} shape mismatches {shapes[:3]}."
        )
    net.load_state_dict(state, strict=True)


@dataclass
class LoadedModel:
    """A network ready for inference plus what is needed to feed and trace it.

    Attributes
    ----------
    net : nn.Module
        In eval mode, on ``device``.
    config : dict
        The ``model.json`` contents.
    classes : ClassInfo
    layer, capture, align_corners
        What the activation tracer hooks, and how features are upsampled.
    device : torch.device
    sha256 : str
        Of ``model.pt`` for a loaded checkpoint; of the state_dict tensors for
        :meth:`from_module`. Recorded for provenance.
    path : str or None
        The checkpoint dir it was loaded from (None for :meth:`from_module`).
    """

    net: nn.Module
    config: dict
    classes: ClassInfo
    layer: str = "head.features"
    capture: str = "output"
    align_corners: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    sha256: str | None = None
    path: str | None = None
    tracer: ActivationTracer = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.tracer = ActivationTracer(self.net, self.layer, capture=self.capture,
                                       align_corners=self.align_corners)

    @classmethod
    def from_module(cls, net: nn.Module, classes: ClassInfo, layer: str = "head.features", *,
                    capture: str = "output", align_corners: bool = False,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                    input_size: Sequence[int] | None = None, device=None) -> "LoadedModel":
        """Wrap an in-memory network (mean/std default to ImageNet's); it is put in eval mode.

        ``device`` defaults to the device of the network's parameters.
        """
        _check_layer(net, layer, type(net).__name__)
        if capture not in ("output", "input"):
            raise ModelError(f"LoadedModel: expected capture 'output' or 'input', but got {capture!r}.")
        if device is None:
            p = next(iter(net.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        default_mean, default_std = input_normalisation("")
        cfg = _complete_config({
            "arch": None, "factory": None, "classes": classes, "layer": layer, "capture": capture,
            "align_corners": align_corners, "input_size": input_size,
            "mean": default_mean if mean is None else mean, "std": default_std if std is None else std,
        })
        device = torch.device(device)
        return cls(net=net.to(device).eval(), config=cfg, classes=classes, layer=layer,
                   capture=capture, align_corners=align_corners, device=device,
                   sha256=_state_sha256(net.state_dict()))

    @property
    def input_size(self) -> tuple[int, int] | None:
        size = self.config.get("input_size")
        return tuple(size) if size else None

    def preprocess(self, images: Sequence[np.ndarray], *, resize: bool = False) -> torch.Tensor:
        """Stack RGB frames into a normalised batch on ``device``.

        Inference defaults to the frames' native resolution; with ``resize=True`` and an
        ``input_size`` in the config, frames are resized (bilinear, antialiased) to it.

        Parameters
        ----------
        images : list of ndarray of shape (H, W, 3), uint8
            All of the same size.

        Returns
        -------
        x : float32 tensor of shape (B, 3, H, W)
            ``(image / 255 - mean) / std``.
        """
        images = list(images)
        if not images:
            raise DataError("preprocess: expected at least one image, but got none.")
        shape = None
        for i, im in enumerate(images):
            if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                what = f"{im.dtype} array of shape {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
                raise DataError(f"preprocess: expected image {i} as a (H, W, 3) uint8 array, but got {what}.")
            if shape is not None and im.shape != shape:
                raise DataError(f"preprocess: expected images of one size {shape}, but image {i} is {im.shape}.")
            shape = im.shape
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.config["mean"], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config["std"], device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if resize and self.input_size and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return x.contiguous()

    def trace(self, frames: Sequence[Frame], *, check_finite: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """One traced forward pass over frames of one size: the logits and the AT layer.

        Returns
        -------
        logits : float tensor of shape (B, C, H, W)
            At the frames' resolution: a network whose output is smaller (e.g. 1/4) is
            upsampled bilinearly with the checkpoint's ``align_corners``, as its head would.
        features : tensor of shape (B, d, h0, w0)
            The traced layer's output (or input), as `ActivationTracer` returns it.

        Raises
        ------
        DegenerateDataError
            With `check_finite`, naming the frames whose logits or activations hold NaN or
            Inf (`nonfinite_frames` finds them without raising).
        """
        if not check_finite:
            return self._forward(frames)[1:]
        logits, features, bad = self.trace_checked(frames)
        if bad:
            raise DegenerateDataError(f"Expected finite logits and activations, but got NaN/Inf "
                                      f"for frames {bad[:5]}.")
        return logits, features

    def trace_checked(self, frames: Sequence[Frame]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """`trace` without raising: also the ids of the frames whose logits or activations
        hold NaN or Inf (`nonfinite_frames`).

        When the network's logits are smaller than the frames, they are checked before the
        upsampling: a bilinear upsampling of finite values is finite, and every source value
        weighs on some output pixel, so the verdict is the same from 1/64 of the values at
        1/8 resolution."""
        frames = list(frames)
        raw, logits, features = self._forward(frames)
        small = all(r <= s for r, s in zip(raw.shape[-2:], logits.shape[-2:]))
        return logits, features, nonfinite_frames(frames, raw if small else logits, features)

    def _forward(self, frames: list[Frame]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network's own logits, the logits at the frames' size (upsampled bilinearly with
        the checkpoint's ``align_corners``, as its head would) and the traced activations."""
        raw, features = self.tracer(self.preprocess([f.image for f in frames]))
        size = tuple(frames[0].image.shape[:2])
        logits = raw if raw.shape[-2:] == size else F.interpolate(
            raw, size=size, mode="bilinear", align_corners=self.align_corners)
        return raw, logits, features


def nonfinite_frames(frames: Sequence[Frame], logits: torch.Tensor, features: torch.Tensor) -> list[str]:
    """Ids of the frames whose logits (B, C, H, W) or features (B, d, h, w) hold NaN or Inf.

    One float64 sum per frame decides: a sum is NaN or Inf when a term is, and no sum of
    finite float32 values overflows float64 (a float64 map so large that its sum overflows
    counts as not finite). 4-5x faster than an ``isfinite`` map of the full-size logits."""
    def finite_sums(x: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(x.flatten(1).sum(1, dtype=torch.float64))

    finite = finite_sums(features) & finite_sums(logits)
    if bool(finite.all()):
        return []
    return [f.frame_id for f, ok in zip(frames, finite.tolist()) if not ok]
