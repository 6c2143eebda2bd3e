"""Seeing it: SA heatmaps, review frames, videos and analysis plots (heavy imports are lazy)."""

from .heatmap import SAColourScale, pixel_sa_map, scale_from_values, threshold_mask
from .review_frame import review_frame, save_png
from .video import write_video

__all__ = ["SAColourScale", "pixel_sa_map", "review_frame", "save_png", "scale_from_values",
           "threshold_mask", "write_video"]
