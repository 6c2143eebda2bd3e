"""Write review frames to an H.264 MP4 that plays in browsers and common players."""

from __future__ import annotations

import logging
import numbers
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
from ..io import atomic_path
from ..progress import progress_bar

logger = logging.getLogger(__name__)


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, *, fps: float = 10,
                progress: bool = True, total: int | None = None) -> Path:
    """Encode frames, in the order given, as an H.264 MP4.

    Uses the ffmpeg binary bundled with ``imageio-ffmpeg`` (libx264, yuv420p, ``+faststart`` so
    browsers start playing before the download ends). yuv420p needs even sizes, so frames of odd
    height or width are padded with one black row or column rather than rescaled. The file is
    written to a temporary name and renamed at the end: on any error no partial video is left.

    Parameters
    ----------
    frames : iterable of ndarray of shape (H, W, 3), uint8 RGB
        All the same size; consumed lazily, so a generator of rendered frames keeps memory flat.
    path : str or path-like
        Output ``.mp4`` file.
    fps : float
        Frames per second.
    progress : bool
        Show progress (a bar on a terminal, plain lines otherwise).
    total : int or None
        Number of frames, for the progress bar when ``frames`` has no length.

    Returns
    -------
    Path
        ``path``.
    """
    import imageio_ffmpeg

    path = Path(path)
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (np.isfinite(fps) and fps > 0):
        raise DataError(f"write_video({path}): expected a number fps > 0, but got {fps!r}.")
    fps = fps if isinstance(fps, Fraction) else float(fps)  # e.g. Fraction(30000, 1001) stays exact
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)

    size = None
    writer = None
    n = 0
    with atomic_path(path) as tmp:
        try:
            for frame in progress_bar(frames, total=total, enabled=progress, desc=f"video {path.name}",
                                      unit="frame"):
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise DataError(
                        f"write_video({path}): expected frame {n} as uint8 of shape (H, W, 3), "
                        f"but got {frame.dtype} of shape {frame.shape}."
                    )
                if size is None:
                    size = frame.shape[:2]
                    pad = ((0, size[0] % 2), (0, size[1] % 2), (0, 0))
                    h, w = size[0] + pad[0][1], size[1] + pad[1][1]
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24",
                        pix_fmt_out="yuv420p", macro_block_size=1, ffmpeg_log_level="error",
                        output_params=["-movflags", "+faststart", "-f", "mp4"],
                    )
                    writer.send(None)
                elif frame.shape[:2] != size:
                    raise DataError(
                        f"write_video({path}): expected every frame of size {size} like frame 0, "
                        f"but frame {n} is {frame.shape[:2]}."
                    )
                if pad[0][1] or pad[1][1]:
                    frame = np.pad(frame, pad)
                writer.send(np.ascontiguousarray(frame))
                n += 1
            if writer is None:
                raise DataError(f"write_video({path}): expected at least one frame, but got none.")
        finally:
            if writer is not None:
                writer.close()  # waits for ffmpeg to finish the file, or stops it on error
    logger.info("Wrote %d frames (%s) at %g fps to %s.", n, "x".join(map(str, size)), fps, path)
    return path
