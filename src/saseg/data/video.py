"""Video files as unlabelled frame sequences, decoded by ffmpeg (via ``imageio_ffmpeg``).

Costs: opening runs ffmpeg once over the whole file to count frames exactly (packets are
decoded, nothing is kept). Reading in order (iteration, or ``ds[i]`` with growing ``i``)
streams from one ffmpeg process, decoding each frame once. Jumping backwards, or more than
`SEEK_GAP` frames ahead, starts a new process with an input ``-ss`` seek, which decodes from
the nearest keyframe before the target: a fraction of a second, not the whole video.
Seeking assumes a constant frame rate.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Dataset, Frame
from .classes import ClassInfo
from .folder import class_options, load_classes
from .images import data_error
from .spec_format import format_spec

logger = logging.getLogger(__name__)

#: read forward rather than seek when the next wanted frame is at most this many frames ahead
SEEK_GAP = 100


def select_frames(n_frames: int, native_fps: float, *, stride: int | None = None,
                  fps: float | None = None) -> list[int]:
    """Native frame numbers to keep: every `stride`-th, or the nearest to each tick at `fps`."""
    if stride is not None and fps is not None:
        raise DataError(f"Expected stride or fps, but got both (stride={stride}, fps={fps}).")
    if fps is None:
        return list(range(0, n_frames, stride or 1))
    if fps > native_fps:
        raise DataError(f"Expected fps at most the video's {native_fps:g} fps, but got {fps:g}.")
    step = native_fps / fps
    nearest = {math.floor(k * step + 0.5) for k in range(math.ceil(n_frames / step))}
    return sorted(nearest - {n_frames})


class VideoDataset(Dataset):
    """Frames of one video file; ids ``{stem}/{frame_number:06d}``, labels None.

    ``classes`` is None unless given: an unlabelled video borrows the model's classes when
    it is scored.
    """

    def __init__(self, path: Path, frame_numbers: list[int], native_fps: float,
                 size: tuple[int, int], *, classes: ClassInfo | None, spec: str,
                 on_error: str = "raise"):
        super().__init__(classes=classes, spec=spec, on_error=on_error)
        self.path = path
        self.frame_numbers = frame_numbers
        self.native_fps = native_fps
        self.size = size  # (W, H)
        self._reader = None
        self._next = 0  # native number of the frame the reader yields next

    def __len__(self) -> int:
        return len(self.frame_numbers)

    @property
    def has_labels(self) -> bool:
        return False

    def frame_id(self, i: int) -> str:
        return f"{self.path.stem}/{self.frame_numbers[i]:06d}"

    def sequence(self, i: int) -> str:
        return self.path.stem

    def _start(self, number: int) -> None:
        """(Re)start decoding so that the next frame read is `number`."""
        import imageio_ffmpeg

        self.close()
        # Half a frame early: frames before the seek point are dropped, so this lands on
        # `number` despite rounding of timestamps.
        params = ["-ss", f"{(number - 0.5) / self.native_fps:.6f}"] if number > 0 else None
        self._reader = imageio_ffmpeg.read_frames(str(self.path), input_params=params)
        next(self._reader)  # metadata
        self._next = number

    def _load(self, i: int) -> Frame:
        number, frame_id = self.frame_numbers[i], self.frame_id(i)
        try:
            if self._reader is None or not self._next <= number <= self._next + SEEK_GAP:
                self._start(number)
            while self._next <= number:
                data = next(self._reader)
                self._next += 1
        except StopIteration:
            self.close()
            raise data_error(f"Expected frame {number} in {self.path}, but the video ended "
                             f"before it.", frame_id) from None
        except (RuntimeError, OSError) as exc:
            self.close()
            raise data_error(f"Expected to decode frame {number} of {self.path}, but ffmpeg "
                             f"failed: {exc}", frame_id) from None
        w, h = self.size
        image = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3).copy()
        return Frame(frame_id=frame_id, index=i, image=image, label=None, source=str(self.path),
                     timestamp=number / self.native_fps)

    def close(self) -> None:
        """Stop the ffmpeg process, if one is running."""
        if getattr(self, "_reader", None) is not None:
            self._reader.close()
            self._reader = None

    def __del__(self):
        self.close()


def open_video(path: str | Path, *, stride: int | None = None, fps: float | None = None,
               classes: str | Path | None = None, names: str | None = None,
               ignore_index: int | None = 255, on_error: str = "raise") -> VideoDataset:
    """Open a video file (anything the bundled ffmpeg decodes).

    Parameters
    ----------
    stride : int, optional
        Keep every `stride`-th frame (0, stride, 2*stride, ...).
    fps : float, optional
        Resample to this rate (at most the native rate) by keeping the nearest frames.
    classes, names, ignore_index
        Optional class metadata (see `saseg.data.folder.load_classes`).
    """
    import imageio_ffmpeg

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"Expected a video file at {path}, but there is none.")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
        n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, StopIteration) as exc:
        last = (str(exc).strip().splitlines() or [repr(exc)])[-1]
        raise DataError(
            f"Expected a video that ffmpeg can read at {path}, but got: {last}") from None
    native = float(meta.get("fps") or 0)
    if not native > 0 or not n_frames:
        raise DataError(f"Expected a video with frames and a frame rate at {path}, but got "
                        f"{n_frames} frames at {native:g} fps.")
    numbers = select_frames(n_frames, native, stride=stride, fps=fps)
    info = load_classes(classes, names, ignore_index)
    options = {"stride": stride, "fps": fps, **class_options(classes, names, ignore_index)}
    logger.info("Video %s: %d frames at %g fps, %d selected.", path, n_frames, native, len(numbers))
    return VideoDataset(path, numbers, native, tuple(meta["size"]), classes=info,
                        on_error=on_error,
                        spec=format_spec("video", [os.path.abspath(path)], options))
