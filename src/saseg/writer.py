"""The one writer of a scoring run's work in progress: predicted masks and finished chunks.

Workers (`saseg.scoring.FrameScorer`, locally or on Ray) write nothing; the driver hands
what they return to one `ScoreWriter`. Masks are encoded as PNG and written on a background
thread, off the scoring's critical path (Pillow's encoder releases the GIL). `write_part`
first waits for every mask handed in before it, so a chunk's part on disk always has its
masks: a resumed run skips finished chunks and never finds one of their masks missing. An
error on the thread (a full disk) is raised on the driver at the next call.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from .io import PartStore
from .layout import RunDir, encode_prediction

__all__ = ["ScoreWriter"]


class ScoreWriter:
    """Writes a run's predicted masks (into `run`; None: masks are not kept) and the parts
    of finished chunks (into `store`).

    Parameters
    ----------
    store : PartStore, the run's resumable parts
    run : RunDir or None, where masks go (``RUN/predictions``)
    background : bool, encode and write masks on a thread (False: at once, in the caller)

    Attributes
    ----------
    seconds : float, time spent encoding and writing masks (on whichever thread)
    """

    def __init__(self, store: PartStore, run: RunDir | None, *, background: bool = True):
        self.store, self.run = store, run
        self.seconds = 0.0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="saseg-masks") if background and run else None
        self._pending: list[Future] = []

    def write_prediction(self, frame_id: str, mask: torch.Tensor | np.ndarray | bytes) -> None:
        """One frame's predicted class ids (H, W), or the PNG bytes `encode_prediction` made."""
        if self.run is None:
            return
        if torch.is_tensor(mask):
            mask = mask.to(torch.uint8).cpu().numpy()  # a copy the scorer cannot change later
        if self._pool is None:
            self._write(frame_id, mask)
        else:
            self._pending.append(self._pool.submit(self._write, frame_id, mask))

    def write_part(self, chunk: int, rows: pd.DataFrame, notes: list | None = None) -> None:
        """A finished chunk's rows and skip notes, after every mask handed in before it."""
        self.flush()
        self.store.write(chunk, rows, notes=notes)

    def flush(self) -> None:
        """Wait for the masks handed in so far; raise the first error among them."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Flush, then stop the thread."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ScoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # an error on the driver: stop the thread without waiting to raise its errors
            self._pending = []
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def _write(self, frame_id: str, mask: np.ndarray | bytes) -> None:
        start = time.perf_counter()
        png = mask if isinstance(mask, bytes) else encode_prediction(mask)
        self.run.write_prediction_png(frame_id, png)
        self.seconds += time.perf_counter() - start
