"""Which pixels to trace: a per-class sample per image, and a capped per-class reservoir.

Paper sec. 5.1: SA models are fitted on up to 100 pixels per class per training image, and
at most 10,000 ATs per class; at scoring time pixels are grouped by *predicted* class.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from .errors import DataError, DegenerateDataError, UnknownClassError

logger = logging.getLogger(__name__)


def _as_mask(mask, fn: str) -> Tensor:
    mask = mask if torch.is_tensor(mask) else torch.as_tensor(np.asarray(mask))
    if mask.ndim != 2 or mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise DataError(f"{fn}: expected mask as integer class ids of shape (H, W), but got "
                        f"{mask.dtype} of shape {tuple(mask.shape)}.")
    return mask.long()


def _generator(generator, fn: str) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise DataError(f"{fn}: expected generator as a torch.Generator, an int seed or None, "
                    f"but got {type(generator).__name__}.")


def _labelled(mask: Tensor, ignore_index, classes, fn: str) -> tuple[Tensor | None, Tensor]:
    """Flat indices (ascending) and class ids of the pixels that may be sampled; indices None
    when every pixel may (then they are ``arange(H * W)``, not built)."""
    flat = mask.reshape(-1)
    if ignore_index is None and classes is None:
        idx, cls = None, flat
    else:
        ok = torch.ones_like(flat, dtype=torch.bool)
        if ignore_index is not None:
            ok &= flat != int(ignore_index)
        if classes is not None:
            wanted = classes if torch.is_tensor(classes) else list(classes)  # sets too
            ok &= torch.isin(flat, torch.as_tensor(wanted, dtype=torch.long, device=flat.device).reshape(-1))
        idx = ok.nonzero().squeeze(1)
        cls = flat[idx]
    if cls.numel() and int(cls.min()) < 0:
        raise DataError(f"{fn}: expected class ids >= 0"
                        + (f" or ignore index {ignore_index}" if ignore_index is not None else "")
                        + f", but got {torch.unique(cls[cls < 0]).tolist()}.")
    return idx, cls


def stable_argsort(keys: Tensor) -> Tensor:
    """The stable argsort of int `keys` (a unique result: ties keep their order).

    On the CPU, numpy's radix sort when the keys fit 16 bits (class ids, (frame, class)
    groups): linear time, 5-10x faster than torch's or numpy's merge sort on 170k shuffled
    class ids; elsewhere torch's stable sort."""
    if keys.device.type != "cpu":
        return torch.sort(keys, stable=True).indices
    array = keys.numpy()
    if array.size and 0 <= array.min() and array.max() < 2**16:
        array = array.astype(np.uint8 if array.max() < 2**8 else np.uint16)
    return torch.from_numpy(np.argsort(array, kind="stable"))


def sample_pixels(mask, k: int | None, *, generator: torch.Generator | int | None = None,
                  ignore_index: int | None = None, classes=None) -> tuple[Tensor, Tensor, Tensor]:
    """Up to `k` pixels per class of one image, uniformly without replacement.

    Loop-free: the labelled pixels are put in a random order, stably sorted by class, and
    the first `k` of each class are kept, which is a uniform sample of each class.

    Parameters
    ----------
    mask : tensor or ndarray of shape (H, W), integer
        Class per pixel: the label when fitting, the prediction when scoring.
    k : int or None
        Pixels per class; None or ``k <= 0`` takes every pixel.
    generator : torch.Generator, int or None
        Randomness source; an int is a seed (the same seed gives the same pixels on every
        device), None uses torch's global generator.
    ignore_index : int or None
        Label value never sampled.
    classes : sequence of int or None
        Only sample these class ids.

    Returns
    -------
    ys, xs, cls : int64 tensors of shape (N,)
        Row, column and class of each sampled pixel, on the mask's device, sorted by class
        and, within a class, by position (row-major).
    """
    fn = "sample_pixels"
    mask = _as_mask(mask, fn)
    gen = _generator(generator, fn)
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer))):
        raise DataError(f"{fn}: expected k as an int or None, but got {k!r}.")
    H, W = mask.shape
    idx, cls = _labelled(mask, ignore_index, classes, fn)
    if k is not None and k > 0 and cls.numel():
        device = gen.device if gen is not None else torch.device("cpu")
        perm = torch.randperm(cls.numel(), generator=gen, device=device).to(cls.device)
        cls, idx = cls[perm], (perm if idx is None else idx[perm])
        order = stable_argsort(cls)
        cls, idx = cls[order], idx[order]
        counts = torch.bincount(cls)  # cls is sorted: class c's pixels start at sum(counts[:c])
        starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        keep = torch.arange(idx.numel(), device=idx.device) - starts < k
        idx, cls = idx[keep], cls[keep]
        order = torch.argsort(cls * (H * W) + idx)  # keys are unique: any sort gives this order
    else:  # every pixel, already in position order: a stable sort by class is the order
        idx = torch.arange(cls.numel(), device=cls.device) if idx is None else idx
        order = stable_argsort(cls)
    idx, cls = idx[order], cls[order]
    return idx // W, idx % W, cls


def class_pixel_counts(mask, *, ignore_index: int | None = None, minlength: int = 0) -> Tensor:
    """Pixels per class of one mask (the ``n_pixels`` that scores record).

    Returns
    -------
    counts : int64 tensor of shape (max(minlength, max class + 1),)
        ``counts[c]`` is the number of pixels of class c, ignored pixels excluded.
    """
    _, cls = _labelled(_as_mask(mask, "class_pixel_counts"), ignore_index, None, "class_pixel_counts")
    return torch.bincount(cls, minlength=minlength)


class ClassReservoir:
    """A uniform sample of at most `capacity` ATs per class from a stream of any length.

    Every AT gets an independent uniform random key and each class keeps the `capacity`
    ATs with the smallest keys seen so far: a uniform sample without replacement of that
    class's stream (each AT is kept with probability ``capacity / seen``), reproducible
    from `seed` for the same sequence of ``update`` calls.

    Parameters
    ----------
    capacity : int
        Maximum ATs kept per class (paper: 10,000).
    seed : int
        Seed of the key generator.
    dtype, device
        How ATs are stored (float32 on CPU by default, to spare accelerator memory).

    Attributes
    ----------
    seen_ : dict of int to int
        ATs offered per class so far.
    classes_ : list of int
        Classes held, ascending.
    n_features_ : int or None
        AT dimension d, fixed by the first update.
    """

    def __init__(self, capacity: int = 10_000, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu"):
        self.capacity = capacity
        self.seed = seed
        self.dtype = dtype
        self.device = device
        self.seen_: dict[int, int] = {}
        self.n_features_: int | None = None
        self._ats: dict[int, Tensor] = {}
        self._keys: dict[int, Tensor] = {}
        self._gen: torch.Generator | None = None

    def update(self, ats: Tensor, classes: Tensor, *, keys: Tensor | None = None) -> "ClassReservoir":
        """Offer a batch of ATs.

        Parameters
        ----------
        ats : tensor of shape (N, d)
        classes : int tensor of shape (N,)
        keys : float64 tensor of shape (N,), in [0, 1), optional
            The ATs' random keys; default: drawn from this reservoir's seeded stream. Keys
            that depend only on the AT's frame (e.g. drawn from a generator seeded by the
            frame id) make the sample independent of the order frames arrive in, so
            reservoirs filled apart and `merge`-d equal one filled with everything.
        """
        where = "ClassReservoir.update"
        cap = self.capacity
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap <= 0:
            raise DataError(f"ClassReservoir: expected capacity as a positive int, but got {cap!r}.")
        ats, classes = torch.as_tensor(ats), torch.as_tensor(classes)
        if ats.ndim != 2 or not ats.is_floating_point():
            raise DataError(f"{where}: expected ats as a float tensor of shape (N, d), but got "
                            f"{ats.dtype} of shape {tuple(ats.shape)}.")
        if classes.shape != ats.shape[:1] or classes.is_floating_point() or classes.dtype == torch.bool:
            raise DataError(f"{where}: expected classes as int ids of shape ({len(ats)},), but got "
                            f"{classes.dtype} of shape {tuple(classes.shape)}.")
        if self.n_features_ is not None and ats.shape[1] != self.n_features_:
            raise DataError(f"{where}: expected ATs of dimension {self.n_features_} as before, "
                            f"but got {ats.shape[1]}.")
        if keys is None:
            if self._gen is None:
                self._gen = torch.Generator().manual_seed(int(self.seed))
            keys = torch.rand(len(ats), generator=self._gen, dtype=torch.float64)
        else:
            keys = torch.as_tensor(keys, dtype=torch.float64).cpu()
            if keys.shape != classes.shape or not bool(((keys >= 0) & (keys < 1)).all()):
                raise DataError(f"{where}: expected keys in [0, 1) of shape ({len(ats)},), but got "
                                f"shape {tuple(keys.shape)}.")
        self.n_features_ = int(ats.shape[1])
        ats = ats.detach().to(device=self.device, dtype=self.dtype)
        classes = classes.detach().cpu().long()
        for c in torch.unique(classes).tolist():
            sel = classes == c
            self._insert(c, ats[sel.to(ats.device)], keys[sel])
            self.seen_[c] = self.seen_.get(c, 0) + int(sel.sum())
        return self

    def _insert(self, c: int, ats: Tensor, keys: Tensor) -> None:
        old_ats, old_keys = self._ats.get(c), self._keys.get(c)
        if old_ats is None:
            old_ats, old_keys = ats[:0], keys[:0]
        n_old, cap = len(old_keys), int(self.capacity)
        if n_old + len(keys) <= cap:
            self._ats[c], self._keys[c] = torch.cat([old_ats, ats]), torch.cat([old_keys, keys])
            return
        if n_old < cap:  # fills up in this batch
            all_keys = torch.cat([old_keys, keys])
            order = torch.topk(all_keys, cap, largest=False).indices
            self._ats[c] = torch.cat([old_ats, ats])[order.to(ats.device)]
            self._keys[c] = all_keys[order]
            return
        # Full: newcomers with keys below the largest kept key evict it, in place.
        cand = keys < old_keys.max()
        if not bool(cand.any()):
            return
        keys, ats = keys[cand], ats[cand.to(ats.device)]
        drop = torch.topk(torch.cat([old_keys, keys]), len(keys)).indices  # the largest go
        kept_new = torch.ones(len(keys), dtype=torch.bool)
        kept_new[drop[drop >= n_old] - n_old] = False
        free = drop[drop < n_old]
        old_keys[free] = keys[kept_new]
        old_ats[free.to(ats.device)] = ats[kept_new.to(ats.device)]

    def merge(self, other: "ClassReservoir") -> "ClassReservoir":
        """Add another reservoir's sample (e.g. a worker's): per class, the `capacity` ATs with
        the smallest keys of both, and the seen counts summed. With the same keys per AT, the
        result is the sample one reservoir would hold after seeing both streams.

        Returns
        -------
        self
        """
        if other.capacity != self.capacity:
            raise DataError(f"ClassReservoir.merge: expected the same capacity, but got "
                            f"{other.capacity} and {self.capacity}.")
        if None not in (self.n_features_, other.n_features_) and self.n_features_ != other.n_features_:
            raise DataError(f"ClassReservoir.merge: expected ATs of dimension {self.n_features_}, "
                            f"but the other holds {other.n_features_}.")
        for c in other.classes_:
            self._insert(c, other._ats[c].to(device=self.device, dtype=self.dtype),
                         other._keys[c].clone())
            self.seen_[c] = self.seen_.get(c, 0) + other.seen_[c]
        if self.n_features_ is None:
            self.n_features_ = other.n_features_
        return self

    @property
    def classes_(self) -> list[int]:
        return sorted(self._ats)

    def ats(self, class_id: int) -> Tensor:
        """A copy of the ATs held for one class, shape (n_c, d) with n_c <= capacity."""
        if int(class_id) not in self._ats:
            raise UnknownClassError(f"ClassReservoir: expected a class id in {self.classes_}, "
                                    f"but got {class_id}.")
        return self._ats[int(class_id)].clone()

    def to_arrays(self) -> tuple[Tensor, Tensor]:
        """All held ATs, for an estimator's ``fit``.

        Returns
        -------
        ats : tensor of shape (n, d)
            Grouped by class, ascending, and by key within a class: the same sample gives
            the same arrays whichever order it arrived or was merged in.
        classes : int64 tensor of shape (n,)
        """
        if not self._ats:
            raise DegenerateDataError("ClassReservoir: expected at least one AT, but got none "
                                      "(update() was never called with data).")
        cs = self.classes_
        order = {c: torch.argsort(self._keys[c], stable=True) for c in cs}
        ats = torch.cat([self._ats[c][order[c].to(self._ats[c].device)] for c in cs])
        classes = torch.cat([torch.full((len(self._ats[c]),), c, dtype=torch.long) for c in cs])
        return ats, classes.to(ats.device)
