"""Train a segmentation network on a saseg Dataset, resumably and reproducibly.

Frames are decoded once and kept in memory (uint8 images, int16 labels), because on a few
CPU cores re-decoding JPEGs every epoch costs as much as the network. Every random stream
(shuffling, augmentation, dropout) is seeded from ``(seed, epoch)``, so a run that is killed
and resumed ends with exactly the weights of an uninterrupted one.

Files written to ``out_dir`` after every epoch, each atomically:
``model.pt`` + ``model.json`` (a usable checkpoint), ``train_state.pt`` (weights, optimizer,
step, history; ``weights_only``-loadable) and ``history.csv``. `dataset_confusion` scores
a checkpoint on a labelled dataset by one confusion matrix over all its frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..data.base import Dataset, iter_batches
from ..progress import progress_bar
from ..errors import DataError, FormatError, ModelError
from ..io import atomic_path, compare_settings, write_csv
from ..metrics import ConfusionMatrix
from .augment import augment_pair, jitter_color
from .checkpoint import LoadedModel, as_model, load_state, save_checkpoint
from .networks import build_model, input_normalisation, param_groups

log = logging.getLogger(__name__)

__all__ = ["train", "TrainResult", "median_frequency_weights", "dataset_confusion"]

STATE_FILE = "train_state.pt"
CLASS_WEIGHTINGS = ("median_freq", "sqrt_median_freq")


@dataclass
class TrainResult:
    """What :func:`train` returns; ``str()`` gives a one-line summary."""

    out_dir: Path
    epochs: int
    seconds: float
    val_miou: float | None
    history: list[dict] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        miou = "n/a" if self.val_miou is None else f"{self.val_miou:.4f}"
        return f"epochs={self.epochs}, seconds={self.seconds:.1f}, val_miou={miou}"


def _seed(*keys: int) -> int:
    """A 32-bit seed derived from integer keys (independent streams per (seed, epoch, ...))."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class _Frames:
    """Frames of a Dataset decoded once: images (3, H, W) uint8, labels (H, W) int16."""

    def __init__(self, data: Dataset, image_size: tuple[int, int] | None, what: str):
        classes, self.images, self.labels = data.classes, [], []
        ignore = classes.ignore_index
        for frame in data:
            if frame.label is None:
                raise DataError(f"train: expected labelled frames in {what}, but frame {frame.frame_id!r} has no label.")
            img = torch.from_numpy(np.array(frame.image)).permute(2, 0, 1)  # a copy: frames may be read-only
            lab = torch.from_numpy(np.asarray(frame.label, dtype=np.int64))
            if img.shape[1:] != lab.shape:
                raise DataError(f"train: expected label of image size {tuple(img.shape[1:])} for frame {frame.frame_id!r}, but got {tuple(lab.shape)}.")
            bad = (lab < 0) | (lab >= classes.num_classes)
            if ignore is not None:
                bad &= lab != ignore
            if bool(bad.any()):
                raise DataError(f"train: frame {frame.frame_id!r} in {what} has label values {torch.unique(lab[bad]).tolist()[:5]}, "
                                f"expected 0..{classes.num_classes - 1}" + (f" or {ignore}." if ignore is not None else "."))
            if image_size is not None and tuple(img.shape[1:]) != tuple(image_size):
                img = F.interpolate(img[None].float(), size=image_size, mode="bilinear", align_corners=False,
                                    antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
                lab = F.interpolate(lab[None, None].float(), size=image_size, mode="nearest-exact")[0, 0].long()
            self.images.append(img.contiguous())
            self.labels.append(lab.to(torch.int16))
        if not self.images:
            raise DataError(f"train: expected at least one frame in {what}, but got none.")
        sizes = {tuple(i.shape[1:]) for i in self.images}
        self.size = sizes.pop() if len(sizes) == 1 else None

    def sha256(self) -> str:
        """Hash of the decoded pixels and labels: the data's identity, whatever its spec says."""
        digest = hashlib.sha256()
        for img, lab in zip(self.images, self.labels):
            digest.update(str((tuple(img.shape), tuple(lab.shape))).encode())
            digest.update(img.numpy().tobytes())
            digest.update(lab.numpy().tobytes())
        return digest.hexdigest()


class _TrainSet(torch.utils.data.Dataset):
    """Normalised, augmented samples; sample i of epoch e always gets the same randomness."""

    def __init__(self, frames: _Frames, mean, std, ignore: int, aug: dict, jitter: float, seed: int):
        self.frames, self.ignore, self.aug, self.jitter, self.seed, self.epoch = frames, ignore, aug, jitter, seed, 0
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.frames.images)

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, i, 1))
        image = self.frames.images[i].float() / 255
        if self.jitter > 0:
            image = jitter_color(image, self.jitter, generator=g)
        image = (image - self.mean) / self.std
        label = self.frames.labels[i].long()
        if self.ignore != -100:
            label[label == self.ignore] = -100
        return augment_pair(image, label, ignore_index=-100, generator=g, **self.aug)


def median_frequency_weights(labels: Sequence[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus 2015): ``w_c = median(f) / f_c``.

    ``f_c`` = pixels of class c / pixels of the images where c occurs. Classes that never
    occur get weight 0. Returns a float32 tensor of shape (num_classes,).
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    totals = torch.zeros(num_classes, dtype=torch.float64)
    for lab in labels:
        lab = lab.reshape(-1).long()
        lab = lab[(lab >= 0) & (lab < num_classes)]
        c = torch.bincount(lab, minlength=num_classes).double()
        counts += c
        totals += (c > 0).double() * lab.numel()
    present = counts > 0
    freq = torch.where(present, counts / totals.clamp(min=1), torch.zeros_like(counts))
    w = torch.where(present, freq[present].quantile(0.5) / freq.clamp(min=1e-12), torch.zeros_like(freq))
    return w.float()


@torch.no_grad()
def dataset_confusion(model: LoadedModel | str | os.PathLike, data: Dataset, *,
                      device: str | torch.device = "cpu", batch_size: int = 8) -> ConfusionMatrix:
    """One confusion matrix of `model`'s predictions over every frame of labelled `data`.

    Frames go through ``model.trace`` in batches of one image size; logits are resized
    bilinearly to the label size (H, W) where it differs from the image's. `model`
    is a LoadedModel or a checkpoint dir, loaded onto `device`. Returns a ConfusionMatrix:
    ``.compute()`` is the (C,) dataset-level IoU (NaN: class absent), ``.miou()`` its mean.
    """
    model = as_model(model, device)
    cm = ConfusionMatrix(model.classes.num_classes, model.classes.ignore_index)
    for frames in iter_batches(data, range(len(data)), batch_size):
        unlabelled = [f.frame_id for f in frames if f.label is None]
        if unlabelled:
            raise DataError(f"dataset_confusion: expected labelled frames in {data.spec}, but "
                            f"frame {unlabelled[0]!r} has no label.")
        logits, _ = model.trace(frames)
        for f, frame_logits in zip(frames, logits):
            if frame_logits.shape[-2:] != f.label.shape:
                frame_logits = F.interpolate(frame_logits[None], size=f.label.shape, mode="bilinear",
                                             align_corners=model.align_corners)[0]
            cm.update(frame_logits.argmax(0).cpu(), np.asarray(f.label, dtype=np.int64))
    return cm


@torch.no_grad()
def _val_confusion(net, frames: _Frames, mean, std, classes, device, batch_size: int,
                   fmt: torch.memory_format) -> ConfusionMatrix:
    """The confusion matrix of `net`'s predictions on the decoded validation frames."""
    net.eval()
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    step = batch_size if frames.size is not None else 1
    for start in range(0, len(frames.images), step):
        x = (torch.stack(frames.images[start:start + step]).to(device).float() / 255).to(memory_format=fmt)
        y = torch.stack(frames.labels[start:start + step]).to(device).long()
        cm.update(net((x - mean_t) / std_t).argmax(1), y)
    return cm


def _lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 3% of steps, then poly decay (power 0.9) to 0."""
    warm = max(1, int(0.03 * total))
    return min(1.0, (step + 1) / warm) * (1.0 - step / total) ** 0.9


def train(
    train_data: Dataset,
    out_dir: str | os.PathLike,
    *,
    arch: str = "small",
    arch_kwargs: dict | None = None,
    pretrained: bool = True,
    val_data: Dataset | None = None,
    val_every: int = 1,
    epochs: int = 30,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    pretrained_lr_scale: float = 0.1,
    image_size: tuple[int, int] | None = None,
    crop_size: tuple[int, int] | None = None,
    scale_range: tuple[float, float] = (0.75, 1.25),
    hflip: bool = True,
    color_jitter: float = 0.0,
    class_weights: str | Sequence[float] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    channels_last: bool = True,
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train ``arch`` on ``train_data`` and write a checkpoint to ``out_dir`` after every epoch.

    Parameters
    ----------
    train_data, val_data : saseg Dataset
        Labelled frames; ``val_data`` gives the validation mIoU every ``val_every`` epochs
        and after the last (on the CPU, validating CamVid's 101 frames at 480x360 costs about
        as much as a training epoch at batch 8 x 192 x 256).
    arch, arch_kwargs, pretrained
        Passed to :func:`saseg.models.build_model`; ``pretrained`` loads backbone weights
        where the architecture has them, and those train at ``lr * pretrained_lr_scale``.
    epochs, batch_size, lr, weight_decay
        AdamW (no decay on norms and biases), linear warm-up then poly decay per step.
    image_size : (H, W) or None
        Resize all frames (train and val) once, when loading; recorded as ``input_size``.
    crop_size : (h, w) or None
        Random crop after random scaling; None keeps the frame size.
    scale_range, hflip
        Random scale factor range and random horizontal flip.
    color_jitter : float in [0, 1)
        Random brightness, contrast and saturation factors in ``[1 - j, 1 + j]``; 0 is off.
    class_weights : None, "median_freq", "sqrt_median_freq" or sequence of float
        Cross-entropy class weights; ``ignore_index`` pixels never count. The square root
        of median-frequency weights balances less hard: fewer false positives of rare
        classes, which IoU punishes as much as misses.
    seed : int
        Same seed, data and settings give the same weights on the CPU.
    channels_last : bool
        NHWC memory layout: about 1.5x faster for EfficientNet's depthwise convolutions
        on the CPU (oneDNN); numerically not identical to NCHW, so resuming needs the same.
    resume : bool
        Continue from ``train_state.pt`` in ``out_dir`` when present (the settings must
        match); otherwise start over.

    Returns
    -------
    TrainResult
        ``out_dir``, epochs done, seconds trained, final validation mIoU (None without
        ``val_data``) and the per-epoch history.
    """
    out_dir = Path(out_dir)
    device = torch.device(device)
    classes = train_data.classes
    arch_kwargs = dict(arch_kwargs or {})
    if epochs < 1 or batch_size < 1 or not (math.isfinite(lr) and lr > 0):
        raise ModelError(f"train: expected epochs >= 1, batch_size >= 1 and lr > 0, but got {epochs}, {batch_size}, {lr}.")
    if not 0 <= color_jitter < 1:
        raise ModelError(f"train: expected color_jitter in [0, 1), but got {color_jitter}.")
    if isinstance(class_weights, str) and class_weights not in CLASS_WEIGHTINGS:
        raise ModelError(f"train: expected class_weights None, 'median_freq', 'sqrt_median_freq' or a list, "
                         f"but got {class_weights!r}.")

    if val_data is not None and val_data.classes.names != classes.names:
        raise DataError(f"train: expected val_data with the classes of train_data {list(classes.names)}, "
                        f"but got {list(val_data.classes.names)}.")
    frames = _Frames(train_data, image_size, "train_data")
    if crop_size is None and frames.size is None and batch_size > 1:
        raise DataError("train: frames differ in size; expected crop_size or image_size to batch them.")
    val_frames = _Frames(val_data, image_size, "val_data") if val_data is not None else None
    settings = dict(arch=arch, arch_kwargs=arch_kwargs, pretrained=pretrained, classes=list(classes.names),
                    n_train=len(frames.images), train_sha256=frames.sha256(),
                    val_sha256=val_frames.sha256() if val_frames is not None else None, epochs=epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, pretrained_lr_scale=pretrained_lr_scale,
                    image_size=image_size, crop_size=crop_size, scale_range=scale_range, hflip=hflip,
                    color_jitter=color_jitter,
                    class_weights=class_weights, seed=seed, channels_last=channels_last)

    caller_rng = torch.get_rng_state()  # restored at the end: seeding here must not leak out
    try:
        return _train(frames, val_frames, out_dir, settings, classes=classes, device=device,
                      num_workers=num_workers, resume=resume, progress=progress, val_every=val_every)
    finally:
        torch.set_rng_state(caller_rng)


def _train(frames: _Frames, val_frames: _Frames | None, out_dir: Path, settings: dict, *, classes,
           device: torch.device, num_workers: int, resume: bool, progress: bool,
           val_every: int) -> TrainResult:
    fingerprint = json.dumps(settings, sort_keys=True, default=list)
    arch, arch_kwargs, seed, epochs, batch_size, class_weights, image_size = (
        settings[k] for k in ("arch", "arch_kwargs", "seed", "epochs", "batch_size", "class_weights", "image_size"))
    num_classes, ignore = classes.num_classes, classes.ignore_index
    mean, std = input_normalisation(arch)
    torch.manual_seed(seed)
    fmt = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    net = build_model(arch, num_classes, pretrained=settings["pretrained"], **arch_kwargs)
    net = net.to(device, memory_format=fmt)
    optimizer = torch.optim.AdamW(param_groups(net, lr=settings["lr"], weight_decay=settings["weight_decay"],
                                               pretrained_lr_scale=settings["pretrained_lr_scale"]))
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    weight = _class_weights(class_weights, frames, num_classes)
    weight = weight.to(device) if weight is not None else None

    start_epoch, step, history, seconds = 0, 0, [], 0.0
    state_path = out_dir / STATE_FILE
    if resume and state_path.is_file():
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise FormatError(f"{state_path}: expected a training state, but loading failed: {exc}") from None
        saved = state.get("fingerprint")
        compare_settings(json.loads(saved) if isinstance(saved, str) else None, settings, state_path,
                         what="training settings", fresh="pass resume=False or use a new out_dir")
        load_state(net, state["model"], str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, history, seconds = state["epoch"], state["step"], list(state["history"]), state["seconds"]
        log.info("Resuming training in %s after epoch %d of %d.", out_dir, start_epoch, epochs)

    config = {"arch": arch, "arch_kwargs": arch_kwargs, "classes": classes, "mean": list(mean), "std": list(std),
              "input_size": list(image_size) if image_size else (list(frames.size) if frames.size else None)}
    crop_size = settings["crop_size"]
    aug = dict(crop_size=tuple(crop_size) if crop_size else None, scale_range=tuple(settings["scale_range"]),
               hflip=settings["hflip"])
    dataset = _TrainSet(frames, mean, std, ignore if ignore is not None else -100, aug,
                        settings["color_jitter"], seed)
    drop_last = len(dataset) > batch_size
    per_epoch = len(dataset) // batch_size if drop_last else 1
    total = per_epoch * epochs

    bar = progress_bar(total=epochs, initial=start_epoch, desc="train", unit="epoch", enabled=progress, leave=True)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        dataset.epoch = epoch
        torch.manual_seed(_seed(seed, epoch, 2))  # dropout, stochastic depth
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(_seed(seed, epoch, 0)))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order.tolist(),
                                             num_workers=num_workers, drop_last=drop_last)
        batches = progress_bar(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", enabled=progress)
        losses, step = _train_epoch(net, batches, optimizer, weight, step, total, device, fmt)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else math.nan,
               "lr": max(g["lr"] for g in optimizer.param_groups)}
        if val_frames is not None and ((epoch + 1) % max(val_every, 1) == 0 or epoch + 1 == epochs):
            cm = _val_confusion(net, val_frames, mean, std, classes, device, batch_size, fmt)
            row["val_miou"] = cm.miou()
            row.update({f"iou_{name}": float(v) for name, v in zip(classes.names, cm.compute().tolist())})
        row["seconds"] = time.perf_counter() - t0
        seconds += row["seconds"]
        history.append(row)
        _save_epoch(out_dir, net, optimizer, config, epoch + 1, step, history, seconds, fingerprint)
        # figures first: a plain progress line is printed by update() and must carry this epoch's
        bar.set_postfix({k: f"{row[k]:.3f}" for k in ("train_loss", "val_miou") if k in row})
        bar.update(1)
        log.info("epoch %d/%d: %s", epoch + 1, epochs,
                 ", ".join(f"{k}={row[k]:.4g}" for k in ("train_loss", "val_miou", "seconds") if k in row))
    bar.close()
    if start_epoch >= epochs:  # nothing left: make sure the checkpoint matches the state
        save_checkpoint(out_dir, net, {**config, "trained_epochs": epochs})
    final = history[-1].get("val_miou") if history else None
    return TrainResult(out_dir=out_dir, epochs=len(history), seconds=seconds, val_miou=final, history=history)


def _class_weights(class_weights, frames: _Frames, num_classes: int) -> torch.Tensor | None:
    if class_weights is None:
        return None
    if class_weights in CLASS_WEIGHTINGS:
        weight = median_frequency_weights(frames.labels, num_classes)
        return weight.sqrt() if class_weights == "sqrt_median_freq" else weight
    weight = torch.as_tensor(class_weights, dtype=torch.float32)
    if weight.shape != (num_classes,):
        raise ModelError(f"train: expected {num_classes} class weights, but got shape {tuple(weight.shape)}.")
    return weight


def _train_epoch(net, batches, optimizer, weight, step: int, total: int, device,
                 fmt: torch.memory_format) -> tuple[list[float], int]:
    """One pass over the batches; the learning rate is set per step. Returns losses and step."""
    net.train()
    losses = []
    for x, y in batches:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * _lr_factor(step, total)
        x, y = x.to(device, memory_format=fmt), y.to(device)
        loss = F.cross_entropy(net(x), y, weight=weight, ignore_index=-100)
        if not torch.isfinite(loss):  # stop before the step: no NaN weights, no checkpoint of them
            raise ModelError(f"train: expected a finite loss, but got {loss.item()} at step {step + 1} "
                             f"(learning rate {max(g['lr'] for g in optimizer.param_groups):.3g}); lower "
                             "--lr or check the data. Nothing was saved for this epoch.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(loss.item())
        batches.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses, step


def _save_epoch(out_dir: Path, net, optimizer, config, epoch, step, history, seconds, fingerprint) -> None:
    """State first, then checkpoint: a kill in between leaves a state that resumes correctly."""
    state = {"epoch": epoch, "step": step, "seconds": seconds, "history": history, "fingerprint": fingerprint,
             "model": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
             "optimizer": optimizer.state_dict()}
    with atomic_path(out_dir / STATE_FILE) as tmp:
        torch.save(state, tmp)
    save_checkpoint(out_dir, net, {**config, "trained_epochs": epoch})
    write_csv(out_dir / "history.csv", pd.DataFrame(history))
