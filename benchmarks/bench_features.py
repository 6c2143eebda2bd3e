"""Cost of everything `saseg score` does after the forward pass, against the forward pass, one run.

    python benchmarks/bench_features.py [--model runs/camvid/model] [--sa runs/camvid_triage/sa]
        [--data camvid:../shared/data/camvid] [--frames 32] [--batch 8] [--repeats 3] [--cpu-time]

`FrameScorer.score_batch` with `score`'s defaults (1,000 px per class, the softmax baselines,
the quality features, no TTA) on 480x360 frames, timed by its own stages: the forward pass
(the traced network, logits upsampled to full size, the finiteness check) and each stage
after it (pixel sampling, each SA estimator, aggregation, features). Prints ms per frame of
each, and the ratio of everything after the forward to the forward (issue 27's target:
<= 10 %). Best of `--repeats` passes over the same frames.

With a trained network (`--model`, e.g. `benchmarks/camvid_train.py`'s) and its SA model
(`--sa`, e.g. `camvid_triage.py`'s; MDSA only unless `--estimators`) on real frames, the
components and likely-present classes are those of a real segmentation. Without one, the
README's CamVid network is built untrained and its logits sharpened (`--untrained`; the
cost of the network does not depend on its weights, that of the features does).

On a GPU machine (`--device cuda`) it prints the frames per second and the share of the
stages after the forward in the total (issue 27's GPU target: <= 25 %); stages are timed
after a device synchronisation. The same script runs against another checkout's code for a before/after comparison in one
session: ``PYTHONPATH=/tmp/saseg-base/src python benchmarks/bench_features.py ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from saseg.data import open_dataset
from saseg.scoring import FrameScorer


def add_cpu_time_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--cpu-time", action="store_true",
                    help="one torch thread and process CPU time: steadier on a machine shared with other jobs")


def clock(cpu_time: bool):
    """The timer: process CPU time on one torch thread with `cpu_time`, else wall-clock."""
    if cpu_time:
        torch.set_num_threads(1)
        return time.process_time
    return time.perf_counter


class _Sharpened(torch.nn.Module):
    """An untrained network's logits scaled to look like a segmentation's, not noise."""

    def __init__(self, inner, scale: float = 8.0):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        out = self.inner(x)
        return out * (self.scale / out.std())


def untrained_model(device: str = "cpu"):
    """The README's CamVid network, untrained, with sharpened logits, as a `LoadedModel`."""
    from saseg.data.classes import from_names
    from saseg.models import LoadedModel
    from saseg.models.networks import build_model

    torch.manual_seed(0)
    names = [f"c{i}" for i in range(12)]
    net = build_model("efficientnet_lite0", 12)
    model = LoadedModel.from_module(net, from_names(names))
    return dataclasses.replace(model, net=_Sharpened(net).eval().to(device), layer=f"inner.{model.layer}",
                               device=torch.device(device))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/camvid/model")
    ap.add_argument("--sa", default="runs/camvid_triage/sa")
    ap.add_argument("--estimators", default="mdsa")
    ap.add_argument("--data", default="camvid:../shared/data/camvid")
    ap.add_argument("--split", default="test")
    ap.add_argument("--untrained", action="store_true", help="the untrained network, no SA model")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="e.g. cuda: the same code path on a GPU")
    add_cpu_time_option(ap)
    args = ap.parse_args()
    timer = clock(args.cpu_time)

    if args.untrained or not Path(args.model).exists():
        model, fitted, what = untrained_model(args.device), {}, "untrained EfficientNet-Lite0 (sharpened logits), no SA"
        frames = [f for f in open_dataset("synthetic:n=%d,seed=7,size=480x360,split=test" % args.frames)]
    else:
        from saseg.estimators.sa_model import load_sa_model
        from saseg.models import load_model

        model = load_model(args.model, device=args.device)
        fitted, _ = load_sa_model(args.sa, args.estimators.split(","))
        data = open_dataset(args.data, split=args.split)
        frames = [data[i] for i in range(min(args.frames, len(data)))]
        what = f"{args.model} (trained), SA {args.sa} ({args.estimators})"
    scorer = FrameScorer(model, fitted)
    batches = [frames[i:i + args.batch] for i in range(0, len(frames), args.batch)]
    scorer.score_batch(batches[0])  # warm-up
    best = None
    for _ in range(args.repeats):
        scorer.timing = {"frames": 0}
        start = timer()
        for batch in batches:
            scorer.score_batch(batch)
        total = timer() - start
        if best is None or total < best[0]:
            best = (total, dict(scorer.timing))
    total, timing = best
    n = len(frames)
    size = frames[0].image.shape
    print(f"{n} frames at {size[1]}x{size[0]}, batch {args.batch}, device {model.device}, torch threads "
          f"{torch.get_num_threads()}, {'process CPU' if args.cpu_time else 'wall-clock'} time; {what}")
    stages = {k[:-2]: v for k, v in timing.items() if k.endswith("_s")}
    for name, seconds in stages.items():
        print(f"  {name:12s} {1000 * seconds / n:8.1f} ms/frame")
    after = sum(v for k, v in stages.items() if k != "forward")
    print(f"  (untimed)    {1000 * (total - sum(stages.values())) / n:8.1f} ms/frame  (building the rows)")
    after += total - sum(stages.values())
    print(f"after the forward / forward: {after / stages['forward']:6.1%}  (CPU target <= 10 %), "
          f"{1000 * after / n:.1f} against {1000 * stages['forward'] / n:.1f} ms/frame; "
          f"after the forward / total: {after / total:6.1%}  (GPU target <= 25 %); {n / total:.1f} frames/s")


if __name__ == "__main__":
    main()
