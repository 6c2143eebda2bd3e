"""Per connected-component quality proxies, aggregated to the class (MetaSeg).

MetaSeg (Rottmann, Colling, Hack, Chan, Hüger, Schlicht, Gottschalk; IJCNN 2020) predicts
the IoU of each *connected component* of a predicted class from its own dispersion and
geometry. Here each 8-connected component ``K`` of ``pred == c`` gets

- ``E_K``: mean entropy ``-sum_c p_c log p_c`` over its pixels (nats),
- ``M_K``: mean margin dispersion ``1 - (p_top1 - p_top2)`` over its pixels,
- ``B_K``: boundary share, its pixels within `boundary_px` of another predicted class
  (`saseg.quality.features.boundary_mask`) over ``|K|``,
- ``|K|``: its size in pixels,

and the class row gets the **worst** component and the **area-weighted** component:

- ``comp_worst_entropy = max_K E_K``, ``comp_worst_margin = max_K M_K``,
  ``comp_worst_boundary_share = max_K B_K``, ``comp_min_size = min_K |K|``;
- ``comp_aw_size = sum_K |K|^2 / sum_K |K|``: the size of the component a random pixel of
  the class falls in. (The area-weighted means of ``E_K``, ``M_K`` and ``B_K`` equal the
  class means the features already hold, so they are not repeated.)

A class that is not predicted gets NaN for all five. The geometry counts of
`saseg.quality.features` (``n_components``, ``largest_component``, ``mean_component``) come
from the same labelling, so each frame is labelled once.

The labelling has two backends with the same output, picked by `default_backend`:
``"scipy"`` (`scipy.ndimage.label`, once per class, on the host) and ``"torch"`` (min-label
propagation with pointer jumping, `component_roots`, on any device and batched). The
aggregation is torch bincounts and scatter reductions on the maps' device either way.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..errors import DataError

__all__ = ["BACKENDS", "COMPONENT_COLUMNS", "component_roots", "component_stats", "component_stats_batch",
           "default_backend", "label_components", "label_components_batch"]

COMPONENT_COLUMNS = ("comp_worst_entropy", "comp_worst_margin", "comp_worst_boundary_share",
                     "comp_min_size", "comp_aw_size")
"""The per-class columns `component_stats` returns beyond the geometry counts."""

BACKENDS = ("scipy", "torch")
"""The labelling backends; `default_backend` picks one per device."""

_EIGHT = np.ones((3, 3), dtype=bool)
# half of the 8-neighbourhood; each offset d links a pixel p with p + d and p + d with p
_HALF = ((0, 1), (1, -1), (1, 0), (1, 1))


def default_backend(device: torch.device) -> str:
    """The labelling backend for maps on `device`: ``"scipy"`` on the CPU, ``"torch"`` elsewhere.

    Measured with ``benchmarks/bench_components.py --cpu-time`` (480x360, 8 frames, best of
    5, one thread of a shared 2-core CPU, two runs): scipy labels a frame in 4.7-8.6 ms, torch on the
    CPU in 17-51 ms (2.7-7x slower; road scenes 3x, the maze 7x), so the CPU keeps scipy.
    On CUDA the scipy path adds a copy to the host and a sync per frame, while torch runs
    ~30 small kernels per propagation step and needs 3-8 steps here (road scenes 4-5, a
    87k-pixel spiral 3, a depth-first maze 8), for a whole batch at once; so maps on a GPU
    stay there. (No GPU was at hand for that measurement: the benchmark prints the CUDA
    figures when one is.)
    """
    return "scipy" if torch.device(device).type == "cpu" else "torch"


def label_components(pred: torch.Tensor, *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One id per 8-connected component of every predicted class, on the device of `pred`.

    Ids are ordered by class, then by the raster position of each component's first pixel
    (as `scipy.ndimage.label` numbers them); both backends give the same ids.

    Parameters
    ----------
    pred : int tensor of shape (H, W), class ids
    backend : ``"scipy"``, ``"torch"`` or None for `default_backend` of ``pred.device``

    Returns
    -------
    comp : int64 tensor of shape (H, W), component id in ``0..K-1`` of each pixel
    owner : int64 tensor of shape (K,), the class of each component (ids grow with the class)
    """
    if pred.ndim != 2:
        raise DataError(f"label_components: expected pred of shape (H, W), but got {tuple(pred.shape)}.")
    comp, owner, _ = label_components_batch(pred[None], backend=backend)
    return comp[0], owner


def label_components_batch(pred: torch.Tensor, *, backend: str | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`label_components` of each frame of a batch (one propagation for all with ``"torch"``).

    Parameters
    ----------
    pred : int tensor of shape (B, H, W), class ids
    backend : ``"scipy"``, ``"torch"`` or None for `default_backend` of ``pred.device``

    Returns
    -------
    comp : int64 tensor of shape (B, H, W), component ids of each frame, ``0..K_b-1``
    owner : int64 tensor of shape (sum_b K_b,), the class of each component, frame after frame
    n_components : int64 tensor of shape (B,), ``K_b``; frame b's owners start at
        ``n_components[:b].sum()``
    """
    if pred.ndim != 3 or pred.dtype.is_floating_point or pred.dtype == torch.bool:
        raise DataError(f"label_components: expected int class ids of shape (B, H, W), but got "
                        f"{pred.dtype} of shape {tuple(pred.shape)}.")
    backend = default_backend(pred.device) if backend is None else backend
    if backend == "scipy":
        frames = [_label_scipy(p) for p in pred.cpu().numpy()]
        comp = torch.from_numpy(np.stack([c for c, _ in frames]) if frames else np.zeros(pred.shape, np.int64))
        owner = torch.from_numpy(np.concatenate([o for _, o in frames] + [np.zeros(0, np.int64)]))
        counts = torch.tensor([len(o) for _, o in frames], dtype=torch.int64)
        return comp.to(pred.device), owner.to(pred.device), counts.to(pred.device)
    if backend != "torch":
        raise DataError(f"label_components: expected backend 'scipy' or 'torch', but got {backend!r}.")
    return _label_torch(pred)


def _label_scipy(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) class ids -> (comp (H, W), owner (K,)) by `scipy.ndimage.label`, once per class
    inside the class's bounding box (`scipy.ndimage.find_objects`): the same components and,
    since row-major order inside a box is the image's, the same numbering, for a third of
    the work of labelling every class over the whole frame (and no ``np.unique``)."""
    comp = np.zeros(pred.shape, dtype=np.int64)
    owners, offset = [], 0
    low = int(pred.min()) if pred.size else 0
    for k, box in enumerate(ndimage.find_objects(pred.astype(np.int64) - (low - 1))):
        if box is None:  # no pixel of this class
            continue
        labels, n = ndimage.label(pred[box] == k + low, structure=_EIGHT)
        inside = labels > 0
        comp[box][inside] = labels[inside] + (offset - 1)
        owners.append(np.full(n, k + low, dtype=np.int64))
        offset += n
    return comp, (np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64))


def component_roots(pred: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Each pixel's component root: the smallest flat index ``b*H*W + y*W + x`` in its component.

    Min-label propagation with hooking and pointer jumping (union-find, Shiloach-Vishkin
    style). ``L`` starts as the flat index; a step takes ``m_i = min(L_i, L_j)`` over the
    8-neighbours ``j`` of the same class, sets ``L_i <- m_i`` and hooks the old root,
    ``L[L_i] <- min(L[L_i], m_i)``, then jumps ``L <- L[L]`` until nothing changes. ``L_i <= i``
    and ``L_i`` in i's component hold throughout; at the fixed point ``L`` is constant on
    each component, so it is its smallest index. A step hooks every tree that has a smaller
    neighbouring tree onto one, so the steps do not grow with a path's length: 3-8 at
    480x360 (`default_backend`), where propagation alone needs one step per pixel of a snake.

    Parameters
    ----------
    pred : int tensor of shape (B, H, W), class ids

    Returns
    -------
    root : int64 tensor of shape (B * H * W,), flat index of each pixel's root
    steps : int, propagation steps until nothing changed (the last one included)
    """
    b, h, w = pred.shape
    label = torch.arange(b * h * w, device=pred.device)
    # same[d]: pixel p and p + d have the same class, over the region where p + d is in frame
    links = [(_region(dy, dx, h, w), _region(-dy, -dx, h, w)) for dy, dx in _HALF]
    same = [pred[(slice(None), *here)] == pred[(slice(None), *there)] for here, there in links]
    steps = 0
    while True:
        steps += 1
        grid = label.view(b, h, w)
        low = grid.clone()
        for (here, there), s in zip(links, same):
            for a, z in ((here, there), (there, here)):
                target = low[(slice(None), *a)]
                torch.minimum(target, torch.where(s, grid[(slice(None), *z)], target), out=target)
        low = low.flatten()
        new = low.clone()
        new.scatter_reduce_(0, label, low, "amin")  # hook the old root below the new minimum
        while not torch.equal(jumped := new[new], new):
            new = jumped
        if torch.equal(new, label):
            return label, steps
        label = new


def _region(dy: int, dx: int, h: int, w: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels p whose neighbour p + (dy, dx) lies in an (h, w) frame."""
    return slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))


def _label_torch(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`label_components_batch` from `component_roots`: roots sorted by (frame, class, index)."""
    b, h, w = pred.shape
    root, _ = component_roots(pred)
    flat = torch.arange(root.numel(), device=pred.device)
    first = flat[root == flat]  # ascending: by frame, then raster order within the frame
    owner = pred.flatten()[first].long()
    frame = first // max(h * w, 1)
    order = torch.sort(owner, stable=True).indices
    order = order[torch.sort(frame[order], stable=True).indices]
    counts = torch.bincount(frame, minlength=b)
    rank = torch.empty_like(root)
    rank[first[order]] = torch.arange(order.numel(), device=pred.device)
    start = torch.cumsum(counts, 0) - counts
    comp = rank[root].view(b, h, w) - start[:, None, None]
    return comp, owner[order], counts


def component_stats(pred: torch.Tensor, entropy: torch.Tensor, margin: torch.Tensor, boundary: torch.Tensor,
                    num_classes: int, *, backend: str | None = None) -> dict[str, torch.Tensor]:
    """Per-class aggregates of per-component proxies of one frame (formulas in the module doc):
    `component_stats_batch` of a batch of one; shapes without the batch dim."""
    if pred.ndim != 2:
        raise DataError(f"component_stats: expected pred of shape (H, W), but got {tuple(pred.shape)}.")
    stats = component_stats_batch(pred[None], entropy[None], margin[None], boundary[None], num_classes,
                                  backend=backend)
    return {name: values[0] for name, values in stats.items()}


def component_stats_batch(pred: torch.Tensor, entropy: torch.Tensor, margin: torch.Tensor,
                          boundary: torch.Tensor, num_classes: int, *, backend: str | None = None
                          ) -> dict[str, torch.Tensor]:
    """Per-(frame, class) aggregates of per-component proxies (formulas in the module doc), on
    pred's device: every frame's components are numbered after the previous frame's and each
    is keyed by ``frame * num_classes + class``, so one bincount per proxy serves the batch.

    Parameters
    ----------
    pred : int tensor (B, H, W), predicted class ids in ``0..num_classes-1``
    entropy, margin : float tensors (B, H, W), per-pixel entropy and margin dispersion, finite
        (a NaN makes its class's worst component NaN)
    boundary : bool tensor (B, H, W), the boundary mask
    num_classes : int
    backend : the labelling backend, as in `label_components`

    Returns
    -------
    dict of float64 tensors of shape (B, num_classes): ``n_components``, ``largest_component``,
    ``mean_component`` and `COMPONENT_COLUMNS`; 0 components, 0 largest and NaN elsewhere
    for a class that is not predicted. Sums run in float64 (on CUDA in atomic order, so the
    means may differ from the CPU's in the last bits).
    """
    comp, owner, n_comp = label_components_batch(pred, backend=backend)
    batch = pred.shape[0]
    first = (n_comp.cumsum(0) - n_comp).view(batch, 1, 1)
    flat = (comp + first).flatten()
    frame_of = torch.repeat_interleave(torch.arange(batch, device=owner.device), n_comp)
    owner = frame_of * num_classes + owner
    k, keys = owner.numel(), batch * num_classes
    size = torch.bincount(flat, minlength=k).double()

    def per_component(values: torch.Tensor) -> torch.Tensor:
        return torch.bincount(flat, weights=values.flatten().double(), minlength=k) / size

    n_components = torch.bincount(owner, minlength=keys).double()
    area = torch.bincount(owner, weights=size, minlength=keys)
    zeros = size.new_zeros(keys)
    nan = size.new_full((keys,), float("nan"))
    out = {
        "n_components": n_components,
        "largest_component": zeros.scatter_reduce(0, owner, size, "amax"),
        "mean_component": torch.where(n_components > 0, area / n_components, nan),
        # include_self=False: a class with no component keeps the NaN it starts with
        "comp_worst_entropy": nan.scatter_reduce(0, owner, per_component(entropy), "amax", include_self=False),
        "comp_worst_margin": nan.scatter_reduce(0, owner, per_component(margin), "amax", include_self=False),
        "comp_worst_boundary_share": nan.scatter_reduce(0, owner, per_component(boundary), "amax",
                                                        include_self=False),
        "comp_min_size": nan.scatter_reduce(0, owner, size, "amin", include_self=False),
        "comp_aw_size": torch.where(area > 0, torch.bincount(owner, weights=size ** 2, minlength=keys) / area,
                                    nan),
    }
    return {name: values.reshape(batch, num_classes) for name, values in out.items()}
