"""``--engine ray``: score and fit on a Ray cluster with Ray Data, the rows of one process.

The pipeline is Ray Data's batch-inference shape::

    from_items(batches of frame indices) -> map_batches(decode, CPU tasks)
                                         -> map_batches(actor per worker: FrameScorer / PixelCollector)
                                         -> one result row per batch, streamed back to the driver

Each actor builds its `FrameScorer` / `PixelCollector` once, in ``__init__``, from
object-store references to the model and the SA estimators (the driver puts each once) and
the worker's settings (``get_params()``), and runs the same `FrameScorer.score_batch` /
`PixelCollector.add_batch` as the local engine, so rows are equal by construction; pixels
are seeded per frame id, so worker order cannot change them. An input row is one batch of
the local engine (several frames): its forward pass then sees the same frames as the local
engine's, which byte-identical files need, and Ray Data cannot split it across blocks. Only
the batch's rows (one Arrow IPC table), its predicted masks (PNG bytes, encoded on the
workers) and skip notes travel back - no feature or softmax map does. The driver writes
what comes back with the local engine's writer (`saseg.writer.ScoreWriter`): a chunk's part
is written once all its frames are in, so a run killed anywhere resumes from its finished
chunks. For `fit`, each actor returns one `FitSample` per batch and the driver merges them
(`FitSample.merge`).

Ray is an optional extra (``pip install 'saseg[ray]'``), imported only here, inside the
functions that need it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from .collect import FitSample, PixelCollector
from .data import Dataset, Frame
from .errors import DataError, SasegError
from .models import LoadedModel
from .progress import progress_bar
from .layout import encode_prediction
from .scoring import FrameScorer
from .writer import ScoreWriter

__all__ = ["RayOptions", "require_ray", "connect", "probe_address", "check_resources", "score_chunks", "collect_pixels"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'saseg[ray]' (or pip install 'ray[data]')"


@dataclass
class RayOptions:
    """Where and how wide the Ray engine runs.

    Attributes
    ----------
    address : str or None
        An existing cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None joins
        ``$RAY_ADDRESS`` if set, else starts a private local Ray (or uses the one already
        started in this process); never a cluster found in ``/tmp/ray``.
    workers : int, scoring actors (one model copy each)
    gpus_per_worker : float, GPUs per actor (then the actor runs on ``cuda``)
    cpus_per_worker : float, CPUs per actor
    """

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def __post_init__(self):
        if not all(math.isfinite(v) for v in (self.gpus_per_worker, self.cpus_per_worker)):
            raise DataError(f"Expected finite --gpus-per-worker and --cpus-per-worker, but got "
                            f"{self.gpus_per_worker} and {self.cpus_per_worker}.")
        if int(self.workers) < 1:
            raise DataError(f"Expected --workers >= 1, but got {self.workers}.")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise DataError(f"Expected --gpus-per-worker and --cpus-per-worker >= 0, but got "
                            f"{self.gpus_per_worker} and {self.cpus_per_worker}.")
        if self.gpus_per_worker == 0 and self.cpus_per_worker == 0:
            raise DataError("Expected each worker to reserve some CPU or GPU, but got 0 of both.")

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_worker > 0 else "cpu"


def require_ray():
    """The `ray` module with Ray Data, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data], not bare ray)
    except ImportError as exc:
        raise SasegError(f"Expected Ray Data for --engine ray, but it is not installed ({exc}); "
                         f"install it with: {INSTALL_HINT}.") from None
    return ray


def connect(options: RayOptions):
    """Join the cluster named, or start a private one, once per process; check it is big enough.

    Only what the user names is joined: ``--address``, else ``$RAY_ADDRESS``. Without either,
    ``ray.init(address=None)`` would join whatever cluster the shared file
    ``/tmp/ray/ray_current_cluster`` names (any local user can write it) and send it the
    model, the data and the Ray token; so saseg asks for ``address="local"`` and a private
    temporary folder (removed at exit), which never read that file. A named address that
    does not answer within `CONNECT_TIMEOUT_S` is one line, not a hang. Then the cluster's
    CPUs and GPUs are compared with what the options ask for (`check_resources`).
    """
    ray = require_ray()
    if not ray.is_initialized():
        address = options.address or os.environ.get("RAY_ADDRESS") or None
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        if address is None:
            private = tempfile.mkdtemp(prefix="saseg-ray-")
            atexit.register(shutil.rmtree, private, True)  # before ray.init: runs after Ray's own exit hook
            kwargs.update(address="local", _temp_dir=private)
        else:
            probe_address(address)
            kwargs.update(address=address)
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError) as exc:
            raise SasegError(f"Expected a Ray cluster at {address}, but could not connect: "
                             f"{' '.join(str(exc).split())[:300]}") from None
    check_resources(ray.cluster_resources(), options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # saseg's own bar counts frames across the cluster
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled" notice
    return ray


CONNECT_TIMEOUT_S = 10.0


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def probe_address(address: str) -> None:
    """Check within `CONNECT_TIMEOUT_S` that ``host:port`` / ``ray://host:port`` answers as a
    gRPC server (Ray's GCS and Ray Client both are): open a connection, send HTTP/2's preface
    and an empty SETTINGS frame, and expect a frame back. Ray itself retries a silent address
    for minutes. ``auto`` (the user's explicit choice of the current-cluster file) is left to Ray."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address.strip())
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.sendall(_HTTP2_PREFACE)
            frame = sock.recv(9)
        if len(frame) < 9:
            raise ConnectionError(0, "closed without an answer")
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise SasegError(f"Expected a Ray cluster at {address}, but it does not answer ({reason}, "
                         f"{CONNECT_TIMEOUT_S:g} s); check --address or $RAY_ADDRESS.") from None


def check_resources(resources: dict, options: RayOptions) -> None:
    """Refuse, before any work, options the cluster can never satisfy: Ray would otherwise
    wait forever for an actor it cannot place (``--gpus-per-worker 1`` without a GPU)."""
    gpus = options.workers * options.gpus_per_worker
    cpus = options.workers * options.cpus_per_worker + (1.0 if options.gpus_per_worker > 0 else 0.0)
    have_cpus, have_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if cpus > have_cpus + 1e-9 or gpus > have_gpus + 1e-9:
        raise SasegError(f"Expected a Ray cluster with {cpus:g} CPUs and {gpus:g} GPUs for --workers "
                         f"{options.workers} x (--cpus-per-worker {options.cpus_per_worker:g}, "
                         f"--gpus-per-worker {options.gpus_per_worker:g}), but it has {have_cpus:g} "
                         f"CPUs and {have_gpus:g} GPUs; ask for fewer workers or resources.")


# ------------------------------------------------------------------------------ stages
def _decode_frames(batch: dict, dataset: Dataset) -> dict:
    """The CPU stage: each row is one batch of frame indices; read ``dataset[i]`` for each.

    An unreadable frame becomes a note ``[frame id, reason]``, not an error: the driver
    decides with ``on_error``.
    """
    out = {"indices": [], "frames": [], "notes": []}
    for indices in batch["indices"]:
        frames, notes = [], []
        for i in np.asarray(indices).tolist():
            try:
                frames.append(dataset[i])
            except DataError as exc:
                notes.append((i, [str(getattr(exc, "where", None) or dataset.frame_id(i)), str(exc)]))
        out["indices"].append(np.asarray(indices))
        out["frames"].append(frames)
        out["notes"].append(notes)
    return {key: _objects(value) for key, value in out.items()}


class _SkipLog:
    """Stands in for a dataset's `skip` inside an actor: records, never raises."""

    def __init__(self):
        self.skipped: list[tuple[int, list]] = []

    def skip(self, i: int, exc: Exception) -> None:
        self.skipped.append((int(i), [str(getattr(exc, "where", None) or i), str(exc)]))


def _worker_model(model: LoadedModel, options: "RayOptions") -> LoadedModel:
    """The actor's model on its device, using the CPUs it reserved."""
    torch.set_num_threads(max(1, int(round(options.cpus_per_worker))))
    device = torch.device(options.device)
    if model.device == device:
        return model
    return dataclasses.replace(model, net=model.net.to(device), device=device)


class ScoreActor:
    """A Ray Data actor: builds one `FrameScorer` in ``__init__`` from object-store references
    to the model and the fitted SA estimators (the driver puts each once) and the scorer's
    settings, so no scorer with its weights is pickled per actor.

    In: rows of decoded batches (each row one batch of the local engine). Out: one row per
    batch: its frame indices, its rows as one Arrow IPC table, its masks as
    ``[frame id, PNG bytes]`` pairs (encoded here, spread over the workers), the skip notes
    ``{index: [frame id, reason]}`` and the batch's timing (JSON).
    """

    def __init__(self, model, fitted, params: dict, options: "RayOptions", save_predictions: bool):
        ray = require_ray()
        self.scorer = FrameScorer(_worker_model(ray.get(model), options), ray.get(fitted), **params)
        self.save_predictions = save_predictions

    def __call__(self, batch: dict) -> dict:
        out = {"indices": [], "rows": [], "masks": [], "notes": [], "timing": []}
        timing = self.scorer.timing
        for indices, frames, notes in zip(batch["indices"], batch["frames"], batch["notes"]):
            skips = _SkipLog()
            before = dict(timing)
            tables, masks = [], []
            for run in _same_size_runs(list(frames)):
                scored = self.scorer.score_batch(run, skips)
                tables.append(scored.rows)
                if self.save_predictions:
                    start = time.perf_counter()
                    masks.extend([f, encode_prediction(mask)] for f, mask in scored.predictions.items())
                    timing["encode_s"] = timing.get("encode_s", 0.0) + time.perf_counter() - start
            tables = [t for t in tables if len(t)]
            out["indices"].append(np.asarray(indices))
            out["rows"].append(_table_bytes(pd.concat(tables, ignore_index=True)) if tables else b"")
            out["masks"].append(masks)
            out["notes"].append(json.dumps(dict(list(notes) + skips.skipped)))
            out["timing"].append(json.dumps({k: v - before.get(k, 0) for k, v in timing.items()}))
        return {key: _objects(value) for key, value in out.items()}


class CollectActor:
    """A Ray Data actor: builds one `PixelCollector` in ``__init__`` from an object-store
    reference to the model and its settings; one `FitSample` back per batch."""

    def __init__(self, model, params: dict, options: "RayOptions"):
        self.collector = PixelCollector(_worker_model(require_ray().get(model), options), **params)

    def __call__(self, batch: dict) -> dict:
        samples = []
        for frames, notes in zip(batch["frames"], batch["notes"]):
            skips = _SkipLog()
            sample = self.collector.empty()
            for run in _same_size_runs(list(frames)):
                self.collector.add_batch(sample, run, skips)
            sample.skipped.extend(note for _, note in sorted(list(notes) + skips.skipped, key=lambda x: x[0]))
            samples.append(sample)
        return {"indices": batch["indices"], "sample": _objects(samples)}


# ------------------------------------------------------------------------------ drivers
def score_chunks(scorer: FrameScorer, dataset: Dataset, chunks: Sequence[int], *, chunk_frames: int,
                 batch_size: int, writer: ScoreWriter, options: RayOptions,
                 progress: bool = True, on_error: str = "raise", done_frames: int = 0) -> dict:
    """Score the frames of `chunks` on Ray; `writer` writes each chunk's part once all its
    frames are in, and the masks (PNG-encoded on the workers) when it keeps them.

    Batches are the local engine's (`batch_size` frames from each chunk's start), so each
    forward pass sees the same frames. Returns the workers' timing, summed.
    """
    ray = connect(options)
    n = len(dataset)
    ranges = {c: range(c * chunk_frames, min(n, (c + 1) * chunk_frames)) for c in chunks}
    waiting = {c: len(r) for c, r in ranges.items()}
    tables: dict[int, list] = {c: [] for c in chunks}
    notes: dict[int, list] = {c: [] for c in chunks}
    timing: dict[str, float] = {}
    workers = f"{options.workers} worker{'s' if options.workers > 1 else ''}"
    bar = progress_bar(total=n, desc=f"score (ray, {workers})", unit="frame", enabled=progress,
                       initial=done_frames)
    batches = [list(r[k:k + batch_size]) for c in chunks for r in [ranges[c]]
               for k in range(0, len(r), batch_size)]
    if batches:
        stream = _pipeline(ray, batches, dataset, ScoreActor,
                           dict(model=ray.put(scorer.model), fitted=ray.put(scorer.fitted),
                                params=scorer.get_params(), options=options,
                                save_predictions=writer.run is not None),
                           options=options)
        with contextlib.closing(_stream(ray, stream)) as results:  # an early raise frees the actors
            for batch in results:
                for indices, rows, masks, noted, spent in zip(batch["indices"], batch["rows"], batch["masks"],
                                                              batch["notes"], batch["timing"]):
                    indices = np.asarray(indices).tolist()
                    noted = {int(i): note for i, note in json.loads(noted).items()}
                    if noted and on_error == "raise":
                        raise DataError(noted[min(noted)][1])
                    chunk = indices[0] // chunk_frames  # a batch lies in one chunk
                    if rows:
                        tables[chunk].append((indices[0], _table_from_bytes(rows)))
                    for frame_id, png in masks:
                        writer.write_prediction(frame_id, bytes(png))
                    notes[chunk].extend(sorted(noted.items()))
                    for key, value in json.loads(spent).items():
                        timing[key] = timing.get(key, 0.0) + value
                    bar.update(len(indices))
                    waiting[chunk] -= len(indices)
                    if waiting[chunk] == 0:  # all its frames are in: its part, atomically
                        parts = [t for _, t in sorted(tables.pop(chunk), key=lambda x: x[0])]
                        writer.write_part(chunk, pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(),
                                          notes=[note for _, note in sorted(notes.pop(chunk), key=lambda x: x[0])])
    bar.close()
    return timing


def collect_pixels(collector: PixelCollector, dataset: Dataset, indices: Sequence[int], *,
                   batch_size: int, options: RayOptions, progress: bool = True,
                   on_error: str = "raise") -> FitSample:
    """`PixelCollector` over `indices` on Ray: one sample per batch, merged on the driver.

    Samples are merged in batch order, whatever order the workers finish in (a batch that
    arrives early waits): the merged MDSA moments keep the first batch's shift, as one
    process's fit does, so the saved model is the same on every run. A frame left out
    (unreadable, NaN outputs) stops the run at its batch when `on_error` is "raise", as
    `score_chunks` does; "skip" keeps its note in the sample."""
    ray = connect(options)
    sample = collector.empty()
    bar = progress_bar(total=len(indices), desc="fit: tracing (ray)", unit="frame", enabled=progress)
    indices = [int(i) for i in indices]
    batches = [indices[k:k + batch_size] for k in range(0, len(indices), batch_size)]
    if batches:
        stream = _pipeline(ray, batches, dataset, CollectActor,
                           dict(model=ray.put(collector.model), params=collector.get_params(), options=options),
                           options=options)
        position = {b[0]: k for k, b in enumerate(batches)}
        waiting: dict[int, FitSample] = {}  # batch position -> its sample, until it is next
        merged = 0
        with contextlib.closing(_stream(ray, stream)) as results:  # an early raise frees the actors
            for batch in results:
                for first, part in zip(batch["indices"], batch["sample"]):
                    if part.skipped and on_error == "raise":
                        raise DataError(part.skipped[0][1])
                    waiting[position[int(np.asarray(first)[0])]] = part
                    bar.update(part.n_used + len(part.skipped))
                    while merged in waiting:
                        sample.merge(waiting.pop(merged))
                        merged += 1
    bar.close()
    return sample


def _pipeline(ray, batches: list[list[int]], dataset: Dataset, actor, actor_kwargs: dict, *,
              options: RayOptions):
    """from_items(batches of indices) -> decode -> actor pool. On CPU-only workers the decode
    stage asks for the actor's CPUs, so Ray fuses it into the actor (no copy of the images
    between processes); with GPUs it stays a separate CPU stage that feeds them."""
    decode_cpus = 1.0 if options.gpus_per_worker > 0 else options.cpus_per_worker
    return (ray.data.from_items([{"indices": b} for b in batches])
            .map_batches(_decode_frames, fn_kwargs={"dataset": dataset}, batch_size=1,
                         num_cpus=decode_cpus)
            .map_batches(actor, fn_constructor_kwargs=actor_kwargs, batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=int(options.workers)),
                         num_gpus=options.gpus_per_worker or None,
                         num_cpus=options.cpus_per_worker))


def _stream(ray, stream) -> Iterator[dict]:
    """The pipeline's output batches; a worker's saseg error comes out as its own one line."""
    try:
        yield from stream.iter_batches(batch_size=None, batch_format="numpy")
    except ray.exceptions.RayError as exc:
        cause = _root_cause(exc)
        if isinstance(cause, SasegError):
            raise cause.with_traceback(None) from None
        raise


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = getattr(exc, "cause", None) or exc.__cause__
        if nxt is None:
            break
        exc = nxt
    return exc


# ------------------------------------------------------------------------------ helpers
def _same_size_runs(frames: list[Frame]) -> Iterator[list[Frame]]:
    """Consecutive frames of one image size (one forward pass takes one size)."""
    run: list[Frame] = []
    for frame in frames:
        if run and frame.image.shape != run[0].image.shape:
            yield run
            run = []
        run.append(frame)
    if run:
        yield run


def _objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _table_bytes(table: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    with pa.ipc.new_stream(sink, arrow.schema) as writer:
        writer.write_table(arrow)
    return sink.getvalue()


def _table_from_bytes(data: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all().to_pandas()
