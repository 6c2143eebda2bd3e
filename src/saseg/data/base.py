"""What every reader yields: frames with a stable id, an image and (maybe) a label."""

from __future__ import annotations

import threading
from queue import Full, Queue

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..columns import ids_sha256
from ..errors import DataError
from .classes import ClassInfo


@dataclass
class Frame:
    """One video frame or still image.

    Attributes
    ----------
    frame_id : str
        Stable id, unique within a dataset (e.g. ``0001TP_006690`` or ``drive0/000012``).
    index : int
        Position in sequence order (0-based).
    image : ndarray of shape (H, W, 3), uint8 RGB
    label : ndarray of shape (H, W), int64, or None
        Class ids; the dataset's ignore index marks unlabelled pixels.
    source : str
        Where the frame came from (file path, or spec plus index).
    timestamp : float or None
        Seconds from the start of the video, when known.
    """

    frame_id: str
    index: int
    image: np.ndarray
    label: np.ndarray | None = None
    source: str = ""
    timestamp: float | None = None


class Dataset:
    """Random-access sequence of frames plus the class metadata that explains their labels.

    Subclasses implement ``__len__`` and ``_load(i)``. ``skipped`` records frames dropped
    under ``on_error="skip"`` as ``(frame_id or path, reason)`` so nothing vanishes silently.
    """

    classes: ClassInfo
    spec: str = ""

    def __init__(self, *, classes: ClassInfo, spec: str = "", on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise DataError(f"Expected on_error to be 'raise' or 'skip', but got {on_error!r}.")
        self.classes = classes
        self.spec = spec
        self.on_error = on_error
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, i: int) -> Frame:
        raise NotImplementedError

    def frame_id(self, i: int) -> str:
        """Id of frame i without decoding it (override when cheaper than loading)."""
        return self._load(i).frame_id

    def __getitem__(self, i: int) -> Frame:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self._load(i % len(self))

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in sequence order; with on_error="skip", record and skip bad ones."""
        for i in range(len(self)):
            try:
                yield self._load(i)
            except DataError as exc:
                self.skip(i, exc)

    def skip(self, i: int, exc: Exception) -> None:
        """Record frame i as skipped because of `exc`, or re-raise it under on_error="raise"."""
        if self.on_error == "raise":
            raise exc
        self.skipped.append((str(getattr(exc, "where", None) or self.frame_id(i)), str(exc)))

    @property
    def has_labels(self) -> bool:
        return True

    def fingerprint(self) -> dict:
        """What identifies the frames without decoding them: their count and a hash of their ids.

        Recorded by resumable runs, so a resumed run refuses data that changed underneath it
        (another seed, files added or renamed) even when the frame count is the same.
        """
        ids = (self.frame_id(i) for i in range(len(self)))
        return {"n_frames": len(self), "ids_sha256": ids_sha256(ids)}


def iter_batches(dataset: Dataset, indices: Iterable[int], batch_size: int) -> Iterator[list[Frame]]:
    """Frames ``dataset[i]`` for `indices`, in order, in lists of at most `batch_size`.

    A batch never mixes image sizes (a network takes one size per forward pass), so a size
    change ends the batch early. Unreadable frames go through ``dataset.skip``: recorded and
    left out under ``on_error="skip"``, raised otherwise.
    """
    if int(batch_size) < 1:
        raise DataError(f"Expected a batch size of at least 1, but got {batch_size}.")
    batch: list[Frame] = []
    for i in indices:
        try:
            frame = dataset[i]
        except DataError as exc:
            dataset.skip(i, exc)
            continue
        if batch and (len(batch) == batch_size or frame.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


def prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """`items` in order, the next `depth` produced ahead on a thread.

    Reading and decoding frames (file reads, PIL and numpy, which release the GIL) then
    overlaps the scoring of the batch before. An error raised while producing an item comes
    out where that item would have, after every item before it; a consumer that stops early
    stops the thread at its next item.
    """
    done, stop = object(), threading.Event()
    queue: Queue = Queue(maxsize=max(1, int(depth)))

    def produce() -> None:
        try:
            for item in items:
                if not _put(queue, (item, None), stop):
                    return
        except BaseException as exc:  # delivered to the consumer, in order
            _put(queue, (None, exc), stop)
            return
        _put(queue, (done, None), stop)

    thread = threading.Thread(target=produce, name="saseg-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = queue.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _put(queue: Queue, entry, stop: threading.Event) -> bool:
    """Put `entry` unless `stop` is set first; whether it was put."""
    while not stop.is_set():
        try:
            queue.put(entry, timeout=0.1)
            return True
        except Full:
            continue
    return False


class InMemoryDataset(Dataset):
    """A dataset over frames already in memory (tests, generated data, subsets)."""

    def __init__(self, frames: Sequence[Frame], classes: ClassInfo, spec: str = "memory"):
        super().__init__(classes=classes, spec=spec)
        self.frames = list(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def _load(self, i: int) -> Frame:
        return self.frames[i]

    def frame_id(self, i: int) -> str:
        return self.frames[i].frame_id

    @property
    def has_labels(self) -> bool:
        return all(f.label is not None for f in self.frames)
