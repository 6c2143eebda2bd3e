"""Issue target: EfficientNet-Lite0 trained on CamVid train in <= 30 CPU minutes, test mIoU >= 0.60.

    python benchmarks/camvid_train.py --camvid ../shared/data/camvid --out runs/camvid/model

Trains with the recipe below (resuming if OUT holds an unfinished run with the same
settings), then scores CamVid test at the labels' native 480x360 (11 classes, 11 ignored;
one confusion matrix over the whole split) and prints a Markdown summary: training
minutes, validation and test mIoU, per-class test IoU, and whether each target is met.
The same text goes to OUT/camvid_train.md. Training time is the sum of the epochs' wall
times (validation included), as recorded in history.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from saseg.data import open_dataset
from saseg.models import load_model, train
from saseg.models.train import dataset_confusion

RECIPE = dict(arch="efficientnet_lite0", epochs=60, batch_size=8, lr=2e-3, crop_size=(192, 256),
              scale_range=(0.5, 1.25), color_jitter=0.2, class_weights="sqrt_median_freq", val_every=20)
TARGET_MINUTES, TARGET_MIOU = 30.0, 0.60


def split_iou(model_dir: Path, spec: str, batch_size: int = 8) -> torch.Tensor:
    """Per-class IoU over the whole test split, at the frames' native size (one confusion matrix)."""
    return dataset_confusion(model_dir, open_dataset(spec, split="test"), batch_size=batch_size).compute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--camvid", default="../shared/data/camvid")
    ap.add_argument("--out", default="runs/camvid/model")
    ap.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    ap.add_argument("--jitter", type=float, default=RECIPE["color_jitter"], help="for ablations")
    ap.add_argument("--class-weights", default=RECIPE["class_weights"], help="for ablations")
    ap.add_argument("--seed", type=int, default=0, help="for run-to-run variation")
    args = ap.parse_args()
    out = Path(args.out)
    spec = f"camvid:{Path(args.camvid).resolve()}"

    recipe = {**RECIPE, "epochs": args.epochs, "color_jitter": args.jitter,
              "class_weights": args.class_weights, "seed": args.seed}
    result = train(open_dataset(spec, split="train"), out, val_data=open_dataset(spec, split="val"),
                   **recipe)
    iou = split_iou(out, spec)
    names = load_model(out).classes.names
    miou = float(np.nanmean(iou.numpy()))
    minutes = result.seconds / 60
    lines = [
        f"Recipe: {recipe}",
        "",
        f"Training: {result.epochs} epochs, {minutes:.1f} min "
        f"(median epoch {np.median([r['seconds'] for r in result.history]):.1f} s) "
        f"-> {'meets' if minutes <= TARGET_MINUTES else 'MISSES'} the {TARGET_MINUTES:.0f} min target",
        f"Validation mIoU: {result.val_miou:.3f}",
        f"Test mIoU (480x360, dataset confusion matrix): {miou:.3f} "
        f"-> {'meets' if miou >= TARGET_MIOU else 'MISSES'} the {TARGET_MIOU:.2f} target",
        "Per-class test IoU: " + ", ".join(f"{k} {v:.2f}" for k, v in zip(names, iou.tolist())),
    ]
    text = "\n".join(lines)
    print(text)
    (out / "camvid_train.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
