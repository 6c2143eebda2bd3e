"""Segmentation networks with the paper's head, checkpoint I/O and CPU-friendly training."""

from .checkpoint import LoadedModel, as_model, load_model, save_checkpoint
from .networks import (
    PaperHead,
    Segmenter,
    SmallCNN,
    available_models,
    build_model,
    input_normalisation,
    register_model,
)
from .train import TrainResult, train

__all__ = [
    "LoadedModel",
    "as_model",
    "load_model",
    "save_checkpoint",
    "PaperHead",
    "Segmenter",
    "SmallCNN",
    "available_models",
    "build_model",
    "input_normalisation",
    "register_model",
    "TrainResult",
    "train",
]
