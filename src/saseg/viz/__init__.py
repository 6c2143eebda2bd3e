"""Seeing it: SA heatmaps (`heatmap`), review frames (`review_frame`), MP4s (`video`) and the
analysis plots (`plots`, and `retrain` for RQ3). Heavy imports (matplotlib, PIL, ffmpeg) happen inside functions."""
