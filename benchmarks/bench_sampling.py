"""Benchmark: sampling time against quality, DDPM-1000 vs DDIM at several step counts and guidance scales.

    python benchmarks/bench_sampling.py                                   # the full grid, 4 clips per class (long on a CPU)
    python benchmarks/bench_sampling.py --clips-per-class 1 --steps 2 --guidance 1 --no-ddpm --out outputs/bench_quick

Every setting generates the same clips (same held-out first frames, classes and seed) with the LFDM checkpoint, and is scored
with lfdm.eval's motion classifier against one set of real held-out clips: classifier FVD (Fréchet distance on the classifier's
features; the 'real held-out' row is its floor at this clip count), KID and conditional accuracy. Seconds per video are
wall-clock, decoding included, on the chosen device. Writes a Markdown table to stdout, and sampling.json and sampling.png to --out.

Costs on a 2-core CPU with the bundled tiny model (one thread, about 1.3 s per U-Net call on a batch of 8 clips): DDPM-1000 takes
about 22 minutes per batch of 8 clips (measured: 164.5 s per video; the whole default grid at --clips-per-class 1 took 45 min); guidance w != 1 doubles the cost of every step. On a GPU the whole grid takes minutes.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="LFDM checkpoint (default: data_samples/lfdm_tiny.pt)")
    ap.add_argument("--classifier", default=None, help="motion classifier (default: data_samples/motion_classifier.pt)")
    ap.add_argument("--clips-per-class", type=int, default=4, help="generated clips per class and setting (default: %(default)s)")
    ap.add_argument("--steps", type=int, nargs="*", default=[10, 25, 50, 100], help="DDIM step counts (default: %(default)s)")
    ap.add_argument("--guidance", type=float, nargs="*", default=[1.0, 2.0, 4.0], help="DDIM guidance scales (default: %(default)s)")
    ap.add_argument("--ddpm-guidance", type=float, nargs="*", default=[1.0], help="guidance scales for DDPM-1000 (default: %(default)s)")
    ap.add_argument("--no-ddpm", action="store_true", help="skip DDPM-1000 (the slowest setting by far)")
    ap.add_argument("--batch-size", type=int, default=8, help="clips per sampling call (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the held-out test clips (default: %(default)s)")
    ap.add_argument("--device", default=None, help="cpu, cuda, mps (default: $LFDM_DEVICE, else the best available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="outputs/bench_sampling", help="folder for sampling.json and sampling.png (default: %(default)s)")
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    from lfdm.core import InputError, atomic_write, get_device
    from lfdm.eval import (benchmark_sampling, format_benchmark, load_motion_classifier, plot_benchmark, sampling_configs,
                           checkpoint_sha256, jsonable)
    from lfdm.lfdm import bundled_checkpoint, load_lfdm

    if args.threads: torch.set_num_threads(args.threads)
    try:
        device = get_device(args.device)
        checkpoint = Path(args.checkpoint) if args.checkpoint else bundled_checkpoint()
        model = load_lfdm(checkpoint, device)
        classifier = load_motion_classifier(args.classifier, device)
        configs = sampling_configs(args.steps, args.guidance, [] if args.no_ddpm else args.ddpm_guidance)
        if not configs: raise InputError("Nothing to run: give --steps and --guidance, or allow DDPM.")
    except InputError as e:
        print(f"bench_sampling: error: {e}", file=sys.stderr)
        return 2
    print(f"# sampling benchmark: {checkpoint} ({checkpoint_sha256(checkpoint)}), {8 * args.clips_per_class} clips per setting, "
          f"{len(configs)} settings, {device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}", flush=True)
    t0 = time.perf_counter()
    rows = benchmark_sampling(model, configs, classifier, n_per_class=args.clips_per_class, seed=args.seed, batch_size=args.batch_size,
                              data_seed=args.data_seed)
    print()
    print(format_benchmark(rows))
    out = Path(args.out)
    meta = dict(checkpoint=str(checkpoint), checkpoint_sha256=checkpoint_sha256(checkpoint), clips_per_setting=8 * args.clips_per_class,
                seed=args.seed, data_seed=args.data_seed, batch_size=args.batch_size, device=str(device), threads=torch.get_num_threads(), torch=torch.__version__,
                machine=platform.processor() or platform.machine(), seconds=time.perf_counter() - t0)
    with atomic_write(out / "sampling.json") as tmp:
        tmp.write_text(json.dumps(jsonable(dict(meta=meta, rows=rows)), indent=1), encoding="utf-8")
    fig = plot_benchmark(rows, f"{checkpoint.name}: {8 * args.clips_per_class} clips per setting, {device}")
    with atomic_write(out / "sampling.png") as tmp: fig.savefig(tmp, dpi=120)
    print(f"\nwrote {out / 'sampling.json'} and {out / 'sampling.png'} ({meta['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
