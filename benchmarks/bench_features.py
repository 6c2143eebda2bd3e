"""Cost of the quality features against the forward pass they ride on, at 480x360, one run.

    python benchmarks/bench_features.py [--frames 16] [--batch 8] [--repeats 3] [--cpu-time]

The forward pass is what `score` runs per batch: the README's CamVid network
(EfficientNet-Lite0 + paper head, 12 classes; weights do not change the cost, so it is built
untrained) on 480x360 frames, logits upsampled to full size. The features are
`quality_features` on each frame's logits, as `FrameScorer` computes them. Best of
interleaved repeats; prints the ratio (target <= 10 %), and the per-component columns
(`saseg.quality.components.component_stats`, inside `quality_features`) alone.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from saseg.models.networks import build_model
from saseg.quality import features as qf
from saseg.quality.agreement import class_agreement
from saseg.quality.components import component_stats


CLOCK = time.perf_counter


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def add_cpu_time_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--cpu-time", action="store_true",
                    help="one torch thread and process CPU time: steadier on a machine shared with other jobs")


def clock(cpu_time: bool):
    """The timer: process CPU time on one torch thread with `cpu_time`, else wall-clock."""
    if cpu_time:
        torch.set_num_threads(1)
        return time.process_time
    return time.perf_counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    add_cpu_time_option(ap)
    args = ap.parse_args()
    global CLOCK
    CLOCK = clock(args.cpu_time)
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

    maps = []
    for frame in logits:
        p = torch.softmax(frame, 0)
        top2 = p.topk(2, 0).values
        pred = frame.argmax(0)
        maps.append((pred, -(p * p.clamp_min(1e-30).log()).sum(0), 1 - (top2[0] - top2[1]),
                     qf.boundary_mask(pred, 2)))

    def components():
        for pred, entropy, margin, boundary in maps:
            component_stats(pred, entropy, margin, boundary, logits.shape[1])

    preds = [(frame.argmax(0), frame.flip(-1).argmax(0)) for frame in logits]

    def agreement():  # the IoU half of flip_iou / temporal_iou (the flip's forward is a forward)
        for a, b in preds:
            class_agreement(a, b, logits.shape[1])

    t_forward = best(forward, args.repeats)
    t_agreement = best(agreement, args.repeats)
    t_features = best(features, args.repeats)
    t_components = best(components, args.repeats)
    n = args.frames
    print(f"{n} frames at 480x360, batch {args.batch}, torch threads {torch.get_num_threads()}, "
          f"{'process CPU' if args.cpu_time else 'wall-clock'} time")
    print(f"forward + upsample   {1000 * t_forward / n:8.1f} ms/frame")
    print(f"quality_features     {1000 * t_features / n:8.1f} ms/frame")
    print(f"  of which components {1000 * t_components / n:8.1f} ms/frame")
    print(f"class_agreement      {1000 * t_agreement / n:8.1f} ms/frame  (flip_iou = one more forward + this)")
    print(f"ratio features / forward {t_features / t_forward:6.1%}  (target <= 10 %); "
          f"components alone {t_components / t_forward:6.1%}")


if __name__ == "__main__":
    main()
