"""Connected-component labelling per frame at 480x360: scipy against torch (CPU, and CUDA if present).

    python benchmarks/bench_components.py [--frames 8] [--repeats 5] [--cpu-time]

`saseg.quality.components.label_components` has two backends with the same output:
``scipy`` (`scipy.ndimage.label` once per class, on the host) and ``torch`` (min-label
propagation with hooking and pointer jumping, `component_roots`). Scenes:

- ``road``: the labels of generated road scenes (``synthetic:...,split=test``), 11 classes;
- ``road+noise``: the same as a noisy prediction, the argmax of ``3 * onehot(label)`` plus a
  smooth and a per-pixel Gaussian field (98 % of pixels right, ~1000 components, mostly
  speckle along the edges);
- ``spiral``: one 1-pixel-wide path of ~87k pixels winding to the centre, and its corridor;
- ``maze``: the passages of a random depth-first maze (a tree of paths; the most
  propagation steps we found).

The last two are the hard cases of ``tests/quality/test_components.py``, at full size.

For each: ms per frame of ``label_components`` (scipy; torch frame by frame; torch on the
whole batch) and of ``component_stats`` (labels plus the per-class aggregation that
`quality_features` runs), the ratio to scipy measured in the same run, and the propagation
steps. On CUDA the scipy path includes the copy to the host. Best of interleaved repeats.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_features import add_cpu_time_option, clock
from saseg.data.synthetic import SyntheticDataset
from saseg.quality.components import component_roots, component_stats, label_components, label_components_batch
from saseg.quality.features import boundary_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "quality"))
from test_components import _maze, _spiral  # noqa: E402  (the hard cases the tests check)

H, W = 360, 480


def best_times(fns: dict, repeats: int, sync, timer) -> dict:
    """Best time of each function; rounds interleave them so all see the same noise."""
    best = {}
    for name, fn in fns.items():
        fn()  # warm-up
        sync()
        best[name] = float("inf")
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = timer()
            fn()
            sync()
            best[name] = min(best[name], timer() - t0)
    return best


def road(n: int, noise: bool) -> torch.Tensor:
    """(n, H, W) class ids of generated road scenes, or a noisy prediction of them."""
    labels = torch.stack([torch.as_tensor(f.label) for f in SyntheticDataset(n, size=(H, W), split="test")])
    if not noise:
        return labels
    g = torch.Generator().manual_seed(0)
    c = int(labels.max()) + 1
    smooth = F.interpolate(torch.randn(n, c, H // 8, W // 8, generator=g), size=(H, W), mode="bilinear")
    pixel = torch.randn(n, c, H, W, generator=g)
    logits = 3.0 * F.one_hot(labels, c).permute(0, 3, 1, 2) + 1.0 * smooth + 0.25 * pixel
    return logits.argmax(1)


def repeat(make, n: int) -> torch.Tensor:
    """(n, H, W): n copies of a test's hard case ``make(H, W)``."""
    return torch.as_tensor(make(H, W)).expand(n, H, W).contiguous()


def run(name: str, preds: torch.Tensor, device: torch.device, repeats: int, timer) -> None:
    preds = preds.to(device)
    n, n_classes = len(preds), int(preds.max()) + 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(1)
    maps = [(p, torch.rand(H, W, generator=g).to(device), torch.rand(H, W, generator=g).to(device),
             boundary_mask(p, 2)) for p in preds]
    for backend in ("scipy", "torch"):  # the two backends agree here too
        got = label_components_batch(preds, backend=backend)
        if backend == "scipy":
            want = got
        elif not all(torch.equal(a, b) for a, b in zip(got, want)):
            raise SystemExit(f"{name}: torch labels differ from scipy's")

    fns = {"label scipy": lambda: [label_components(p, backend="scipy") for p in preds],
           "label torch": lambda: [label_components(p, backend="torch") for p in preds],
           "label torch batch": lambda: label_components_batch(preds, backend="torch"),
           "stats scipy": lambda: [component_stats(*m, n_classes, backend="scipy") for m in maps],
           "stats torch": lambda: [component_stats(*m, n_classes, backend="torch") for m in maps]}
    times = best_times(fns, repeats, sync, timer)
    steps = [component_roots(p[None])[1] for p in preds]
    print(f"{name} on {device.type}: {len(want[1]) / n:.0f} components/frame, propagation steps "
          f"{min(steps)}-{max(steps)} per frame, {component_roots(preds)[1]} for the batch of {n}")
    for key, t in times.items():
        base = times[key.split()[0] + " scipy"]
        print(f"  {key:<18} {1000 * t / n:8.2f} ms/frame  x{t / base:6.2f} vs scipy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    add_cpu_time_option(ap)
    args = ap.parse_args()
    timer = clock(args.cpu_time)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    scenes = {"road": road(args.frames, False), "road+noise": road(args.frames, True),
              "spiral": repeat(_spiral, args.frames), "maze": repeat(lambda h, w: _maze(h, w, 0), args.frames)}
    print(f"{args.frames} frames at {W}x{H}, torch threads {torch.get_num_threads()}, "
          f"{'process CPU' if args.cpu_time else 'wall-clock'} time, best of {args.repeats}")
    for device in devices:
        for name, preds in scenes.items():
            run(name, preds, device, args.repeats, timer)


if __name__ == "__main__":
    main()
