"""`saseg score` throughput of this checkout against another checkout, measured in one run.

    git worktree add /tmp/saseg-base <commit>     # the code to compare against
    python benchmarks/bench_engines.py --baseline /tmp/saseg-base [--frames 200] [--repeats 2]
        [--engines local ray]

Each (code, engine) pair scores the same generated 480x360 pool in a fresh process that
imports saseg from that checkout's ``src`` (Ray, where asked, is started in that process
before the clock starts, as in ``bench_scale.py``). Pairs run in turns, ``--repeats`` times,
and the best wall time of each is kept, so the machine's noise hits both codes alike.
Prints frames per second, the ratio new / baseline per engine, and the stage shares the run
recorded in ``score.json`` (forward pass, sampling, SA, aggregation, features, masks).

The model and SA model are made once, by this checkout (the paper-head SmallCNN, width 16,
d 64, one quick epoch; MDSA on 16 frames), as in ``bench_scale.py``; the settings are the
CLI defaults (1,000 px per class, features and predictions on, batch 8).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_scale import small_model_and_sa

HERE = Path(__file__).resolve().parents[1]

RUN = r"""
import json, sys, time
engine, model, sa, spec, out, cpus = sys.argv[1:7]
import saseg
from saseg.pipeline import score
kwargs = {}
if engine == "ray":
    import ray
    from saseg.distributed import RayOptions
    ray.init(num_cpus=int(cpus), include_dashboard=False, log_to_driver=False)
    kwargs = dict(engine="ray", ray_options=RayOptions(workers=1, cpus_per_worker=int(cpus)))
t0 = time.perf_counter()
score(model, sa, spec, out, progress=False, resume=False, **kwargs)
seconds = time.perf_counter() - t0
timing = json.load(open(out.rsplit("/", 1)[0] + "/score.json"))["timing_this_session"]
print(json.dumps({"seconds": seconds, "timing": timing, "saseg": saseg.__file__}))
"""


def shares(timing: dict) -> str:
    total = sum(v for k, v in timing.items() if k.endswith("_s"))
    return ", ".join(f"{k[:-2]} {v / total:.0%}" for k, v in sorted(timing.items(), key=lambda kv: -kv[1])
                     if k.endswith("_s") and total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="another checkout of saseg (its src/ is imported)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--engines", nargs="+", default=["local"], choices=["local", "ray"])
    ap.add_argument("--workdir", default=None, help="Keep the runs here (default: a temp dir).")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_engines_"))
    model, sa = small_model_and_sa(work)
    spec = f"synthetic:n={args.frames},seed=7,size=480x360,split=test"
    codes = {"baseline": Path(args.baseline).resolve() / "src", "new": HERE / "src"}
    cpus = os.cpu_count() or 1
    print(f"{args.frames} generated 480x360 frames, {cpus} CPUs; baseline {codes['baseline']}, new {codes['new']}")
    best: dict[tuple[str, str], dict] = {}
    for repeat in range(args.repeats):
        for engine in args.engines:
            for code, src in codes.items():
                out = work / f"{code}-{engine}" / "scores.parquet"
                env = {**os.environ, "PYTHONPATH": str(src)}
                done = subprocess.run([sys.executable, "-c", RUN, engine, str(model), str(sa), spec, str(out), str(cpus)],
                                      env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{code} {engine} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                assert Path(result["saseg"]).resolve().is_relative_to(src), result["saseg"]
                print(f"  repeat {repeat + 1}: {code:8s} {engine:5s} {args.frames / result['seconds']:6.2f} frames/s")
                key = (code, engine)
                if key not in best or result["seconds"] < best[key]["seconds"]:
                    best[key] = result
    print()
    print("| engine | code | frames/s (best) | ratio | stage shares |")
    print("|---|---|---|---|---|")
    for engine in args.engines:
        base = args.frames / best[("baseline", engine)]["seconds"]
        for code in codes:
            fps = args.frames / best[(code, engine)]["seconds"]
            print(f"| {engine} | {code} | {fps:.2f} | {fps / base:.2f}x | {shares(best[(code, engine)]['timing'])} |")


if __name__ == "__main__":
    main()
