"""Benchmark: procedural clip rendering speed (clips per second) on one CPU core.

    python benchmarks/bench_data.py [--seconds 5] [--threads 1]

The foundation issue's target: >= 50 clips/s at 64x64 x 16 frames on one core, so that stage-1/2 training can render
its data on the fly instead of reading it from disk.
"""
import argparse
import platform
import time

import numpy as np
import torch

from lfdm.data import ProceduralActions


def rate(ds, frames, with_flow, seconds):
    ds.read(0, frames, with_flow=with_flow)                       # warm-up (texture pool, allocator)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds.read(n % len(ds), frames, with_flow=with_flow); n += 1
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = one core)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# procedural rendering, {args.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"| size | frames | flow + occlusion | clips/s | ms/clip |")
    print(f"|---|---|---|---|---|")
    for size, n_frames in ((64, 16), (128, 40)):
        ds = ProceduralActions(num_clips=256, size=size, length=max(32, n_frames))
        frames = np.linspace(0, ds.length(0) - 1, n_frames)
        for with_flow in (False, True):
            r = rate(ds, frames, with_flow, args.seconds)
            print(f"| {size}x{size} | {n_frames} | {'yes' if with_flow else 'no'} | {r:.1f} | {1000 / r:.1f} |")


if __name__ == "__main__":
    main()
