"""Frames per second of the embedded road-scene generator, per condition and size.

    python benchmarks/bench_generator.py [--frames 40] [--sizes 480x360 240x180 160x120]

Renders `--frames` consecutive frames (image + label, one core, numpy only) of several
drives per condition, after one warm-up frame per drive (it fills the drive and texture
caches). Reports frames per second from the median CPU time per frame (process time: on a
shared, oversubscribed machine it leaves out the time spent waiting for a core), the
median wall-clock rate, and the CPU rate against the target of 100 frames/s at 480x360.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from saseg.data.synthetic import CONDITIONS, render_frame

TARGET_FPS, TARGET_SIZE = 100.0, (360, 480)


def frame_times(condition: str, size: tuple[int, int], frames: int, drives: int = 4):
    """(cpu, wall) seconds per frame, each of shape (frames,)."""
    cpu, wall = [], []
    for seed in range(drives):
        render_frame(seed, 0, size=size, condition=condition)
        for k in range(1, frames // drives + 1):
            c0, t0 = time.process_time(), time.perf_counter()
            render_frame(seed, k, size=size, condition=condition)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
    return np.array(cpu), np.array(wall)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames per condition and size")
    parser.add_argument("--sizes", nargs="+", default=["480x360", "240x180", "160x120"],
                        help="frame sizes as WxH")
    args = parser.parse_args(argv)
    print(f"target: {TARGET_FPS:.0f} frames/s at {TARGET_SIZE[1]}x{TARGET_SIZE[0]} on one core")
    print(f"{'size':>9} {'condition':>9} {'cpu fps':>8} {'wall fps':>9} {'vs target':>10}")
    for text in args.sizes:
        w, h = (int(s) for s in text.lower().split("x"))
        for condition in CONDITIONS:
            cpu, wall = frame_times(condition, (h, w), args.frames)
            fps, wall_fps = 1 / np.median(cpu), 1 / np.median(wall)
            ratio = f"{fps / TARGET_FPS:9.2f}x" if (h, w) == TARGET_SIZE else ""
            print(f"{text:>9} {condition:>9} {fps:8.0f} {wall_fps:9.0f} {ratio:>10}")


if __name__ == "__main__":
    main()
