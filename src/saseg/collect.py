"""Labelled pixels' ATs as per-class statistics: the work of one fit worker.

`PixelCollector` traces frames and adds each frame's sampled ATs to a `FitSample`: MDSA's
streamed float64 moments when every sampled AT is kept, else a per-class reservoir for
LSA, DSA and capped MDSA. A frame's pixels *and* its ATs' reservoir keys come from one
generator seeded by the frame id (`frame_seed`), so samples filled apart (Ray workers,
`saseg.distributed`) and `FitSample.merge`-d equal the sample of one process: the same
reservoir exactly, the same moments to float64 rounding (Chan et al.'s pairwise update).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from .data import ClassInfo, Dataset, Frame
from .estimators import MDSA, make_estimator
from .models import LoadedModel
from .sampling import ClassReservoir, sample_pixels
from .scoring import frame_seed, trace_finite
from .tracing import sample_ats

__all__ = ["FitSample", "PixelCollector"]


@dataclass
class FitSample:
    """What fitting needs from a set of frames.

    Attributes
    ----------
    reservoir : ClassReservoir or None
        Up to ``capacity`` ATs per class, with their per-frame keys (capped fits).
    mdsa : MDSA or None
        Streamed moments of every sampled AT (``max_ats_per_class=None``), not yet finalized.
    counts : dict class id -> ATs sampled
    n_used : int, frames traced (unreadable and NaN frames are not)
    skipped : list of (frame id, reason), what was left out under ``on_error="skip"``
    """

    reservoir: ClassReservoir | None = None
    mdsa: MDSA | None = None
    counts: dict[int, int] = field(default_factory=dict)
    n_used: int = 0
    skipped: list = field(default_factory=list)

    def merge(self, other: "FitSample") -> "FitSample":
        """Add another sample (another worker's): reservoirs by smallest key, moments by
        `MDSA.merge`, counts summed. Returns self."""
        if other.reservoir is not None:
            self.reservoir = other.reservoir if self.reservoir is None else self.reservoir.merge(other.reservoir)
        if other.mdsa is not None and getattr(other.mdsa, "n_features_in_", None) is not None:
            self.mdsa = other.mdsa if self.mdsa is None else self.mdsa.merge(other.mdsa)
        for c, n in other.counts.items():
            self.counts[c] = self.counts.get(c, 0) + n
        self.n_used += other.n_used
        self.skipped.extend(other.skipped)
        return self


class PixelCollector:
    """Sample labelled pixels per class, read their ATs and add them to a `FitSample`.

    Parameters
    ----------
    model : LoadedModel
    classes : ClassInfo, of the labels (its ignore index is never sampled)
    pixels_per_class : int or None (every labelled pixel)
    seed : int, the fit seed; frame f uses ``frame_seed(seed, f.frame_id)``
    max_ats_per_class : int or None
        Reservoir capacity; None streams every AT into MDSA moments instead.
    mdsa_options : dict, MDSA's settings for the streamed moments
    """

    def __init__(self, model: LoadedModel, classes: ClassInfo, *, pixels_per_class: int | None = 100,
                 seed: int = 0, max_ats_per_class: int | None = 10_000,
                 mdsa_options: Mapping | None = None):
        self.model = model
        self.classes = classes
        self.pixels_per_class = pixels_per_class
        self.seed = seed
        self.max_ats_per_class = max_ats_per_class
        self.mdsa_options = dict(mdsa_options or {})

    def get_params(self) -> dict:
        """The settings besides the model: ``PixelCollector(model, **get_params())`` rebuilds it."""
        return dict(classes=self.classes, pixels_per_class=self.pixels_per_class, seed=self.seed,
                    max_ats_per_class=self.max_ats_per_class, mdsa_options=self.mdsa_options)

    def empty(self) -> FitSample:
        """A sample with nothing in it yet, of the kind this collector fills."""
        if self.max_ats_per_class is None:
            return FitSample(mdsa=make_estimator("mdsa", **self.mdsa_options))
        return FitSample(reservoir=ClassReservoir(capacity=self.max_ats_per_class, seed=self.seed))

    def add_batch(self, sample: FitSample, frames: list[Frame], dataset: Dataset | None = None) -> FitSample:
        """Trace frames of one size and add their sampled ATs to `sample` (returned).

        Frames with NaN/Inf outputs go through ``dataset.skip`` (`trace_finite`).
        """
        frames, _, features = trace_finite(self.model, dataset, frames)
        sample.n_used += len(frames)
        for b, frame in enumerate(frames):
            label = torch.as_tensor(frame.label, device=features.device)
            gen = torch.Generator().manual_seed(frame_seed(self.seed, frame.frame_id))
            ys, xs, cls = sample_pixels(label, self.pixels_per_class, generator=gen,
                                        ignore_index=self.classes.ignore_index)
            ats = sample_ats(features[b], ys, xs, label.shape, align_corners=self.model.align_corners)
            for c, n in zip(*torch.unique(cls, return_counts=True)):
                sample.counts[int(c)] = sample.counts.get(int(c), 0) + int(n)
            if sample.mdsa is not None:
                sample.mdsa.partial_fit(ats.double(), cls, class_names=self.classes.names)
            else:
                keys = torch.rand(len(cls), generator=gen, dtype=torch.float64)
                sample.reservoir.update(ats.float().cpu(), cls.cpu(), keys=keys)
        return sample
