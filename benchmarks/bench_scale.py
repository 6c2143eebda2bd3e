"""The Ray engine against the local engine on generated 480x360 frames, ratios from one run.

    python benchmarks/bench_scale.py [--frames 200] [--memory-frames 200 2000] [--gpus-per-worker 0]

Prints, all measured here, in this run, on one local Ray cluster started first (its start-up
is not counted; each `score` call's own actor start-up is):
- throughput (frames/s) of `score` with the local engine, Ray with 1 worker and Ray with
  2 workers, and the ratios Ray-1/local (target >= 0.85) and Ray-2/Ray-1;
- the stage shares inside the workers (forward pass, SA, features, ...) from score.json;
- the driver's peak RSS when scoring `--memory-frames` pools with Ray: each pool in a fresh
  driver process joined to the same cluster, so only the driver is measured.

The model is the paper-head SmallCNN (width 16, d 64), trained for one quick epoch so its
predictions have regions; the SA model is MDSA on 16 frames. Settings are the CLI defaults
(1,000 px per class, features and predictions on, batch 8). On a GPU machine pass
``--gpus-per-worker 1`` (the local engine then runs on ``cuda``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def timed_score(model, sa, spec, out, **kwargs) -> tuple[float, dict]:
    from saseg.pipeline import score

    t0 = time.perf_counter()
    score(model, sa, spec, out, progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    return seconds, json.loads((Path(out).parent / "score.json").read_text())["timing_this_session"]


def shares(timing: dict) -> str:
    total = sum(v for k, v in timing.items() if k.endswith("_s"))
    return ", ".join(f"{k[:-2]} {v / total:.0%}" for k, v in sorted(timing.items(), key=lambda kv: -kv[1])
                     if k.endswith("_s") and total)


DRIVER = """
import resource, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
from saseg.pipeline import score
from saseg.distributed import RayOptions
score(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], engine="ray", progress=False,
      ray_options=RayOptions(workers=int(sys.argv[6]), cpus_per_worker=float(sys.argv[7]),
                             gpus_per_worker=float(sys.argv[8])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def small_model_and_sa(work: Path) -> tuple[Path, Path]:
    """The benchmark's model and SA model under `work`, made once: the paper-head SmallCNN
    (width 16, d 64) after one quick epoch, and MDSA on 16 frames."""
    from saseg.data import open_dataset
    from saseg.models.train import train
    from saseg.pipeline import fit

    model, sa = work / "model", work / "sa"
    if not (model / "model.json").exists():
        train(open_dataset("synthetic:n=16,seed=1,size=160x120,split=train"), model, arch="small",
              arch_kwargs={"width": 16, "d": 64}, epochs=1, batch_size=8, seed=0, progress=False)
    if not (sa / "sa.json").exists():
        fit(model, "synthetic:n=16,seed=1,size=480x360,split=train", sa, pixels_per_class=100,
            progress=False)
    return model, sa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--memory-frames", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--workdir", default=None, help="Keep the runs here (default: a temp dir).")
    args = ap.parse_args()

    import ray

    from saseg.distributed import RayOptions

    cpus = os.cpu_count() or 1
    gpus = args.gpus_per_worker
    local_device = "cuda" if gpus > 0 else "cpu"
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    model, sa = small_model_and_sa(work)
    spec = f"synthetic:n={args.frames},seed=7,size=480x360,split=test"
    print(f"{args.frames} generated 480x360 frames, {cpus} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}, torch threads {torch.get_num_threads()}")

    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, num_gpus=1 if gpus > 0 else 0, include_dashboard=False, log_to_driver=False)
    print(f"ray cluster start-up: {time.perf_counter() - t0:.1f} s (not counted below)")
    one = RayOptions(workers=1, cpus_per_worker=cpus if gpus == 0 else 1, gpus_per_worker=gpus)
    two = RayOptions(workers=2, cpus_per_worker=max(1, cpus // 2) if gpus == 0 else 1,
                     gpus_per_worker=gpus / 2 if gpus else 0)
    runs = {
        "local": dict(device=local_device),
        f"ray, 1 worker x {one.cpus_per_worker:g} CPU": dict(engine="ray", ray_options=one),
        f"ray, 2 workers x {two.cpus_per_worker:g} CPU": dict(engine="ray", ray_options=two),
    }
    fps = {}
    for k, (name, kwargs) in enumerate(runs.items()):
        seconds, timing = timed_score(model, sa, spec, work / f"run{k}" / "scores.parquet", resume=False, **kwargs)
        fps[name] = args.frames / seconds
        print(f"  {name:28s} {fps[name]:6.2f} frames/s  ({seconds:.1f} s; {shares(timing)})")
    names = list(fps)
    print(f"ray 1 worker / local: {fps[names[1]] / fps[names[0]]:.2f}x  (target >= 0.85x)")
    print(f"ray 2 workers / 1 worker: {fps[names[2]] / fps[names[1]]:.2f}x  (on {cpus} CPUs)")

    address = ray.get_runtime_context().gcs_address
    peaks = {}
    for n in args.memory_frames:
        pool = f"synthetic:n={n},seed=8,size=480x360,split=test"
        out = work / f"memory{n}" / "scores.parquet"
        done = subprocess.run([sys.executable, "-c", DRIVER, address, str(model), str(sa), pool, str(out),
                               str(one.workers), str(one.cpus_per_worker), str(one.gpus_per_worker)],
                              capture_output=True, text=True, check=True)
        peaks[n] = int(done.stdout.split()[-1]) / 1024
        print(f"  driver peak RSS, {n:5d} frames: {peaks[n]:7.1f} MiB")
    small, large = min(peaks), max(peaks)
    print(f"driver peak RSS {large} / {small} frames: {peaks[large] / peaks[small]:.2f}x "
          f"({large / small:.0f}x the frames)")
    ray.shutdown()


if __name__ == "__main__":
    main()
