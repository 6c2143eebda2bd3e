"""Seeing it: SA heatmaps (`heatmap`), review frames (`review_frame`), MP4s (`video`) and the
analysis plots (`plots`). Heavy imports (matplotlib, PIL, ffmpeg) happen inside functions."""
