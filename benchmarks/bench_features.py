"""Cost of the quality features against the forward pass they ride on, at 480x360, one run.

    python benchmarks/bench_features.py [--frames 16] [--batch 8] [--repeats 3]

The forward pass is what `score` runs per batch: the README's CamVid network
(EfficientNet-Lite0 + paper head, 12 classes; weights do not change the cost, so it is built
untrained) on 480x360 frames, logits upsampled to full size. The features are
`quality_features` on each frame's logits, as `FrameScorer` computes them. Best of
interleaved repeats; prints the ratio (target <= 10 %) and each feature group's share.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from saseg.models.networks import build_model
from saseg.quality import features as qf


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", 12).eval()
    frames = torch.rand(args.frames, 3, 360, 480)

    def forward():
        out = []
        with torch.inference_mode():
            for start in range(0, args.frames, args.batch):
                x = frames[start:start + args.batch]
                logits = model(x)
                out.append(F.interpolate(logits, size=(360, 480), mode="bilinear", align_corners=False))
        return torch.cat(out)

    logits = forward()
    # A trained model's logits are peaked; scale the untrained ones so the softmax, the
    # predicted regions and their components look like a segmentation, not noise.
    logits = logits * (8.0 / logits.std())

    def features():
        for frame in logits:
            qf.quality_features(frame)

    t_forward = best(forward, args.repeats)
    t_features = best(features, args.repeats)
    n = args.frames
    print(f"{n} frames at 480x360, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"forward + upsample   {1000 * t_forward / n:8.1f} ms/frame")
    print(f"quality_features     {1000 * t_features / n:8.1f} ms/frame")
    print(f"ratio features / forward {t_features / t_forward:6.1%}  (target <= 10 %)")


if __name__ == "__main__":
    main()
