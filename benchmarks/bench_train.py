"""Benchmark: training iterations per second and peak memory of each stage, at `tiny` and `paper` sizes, on this device.

    python benchmarks/bench_train.py [--sizes tiny paper] [--stages lfae dm] [--steps 5] [--threads 2] [--device cpu]

Each (stage, size) runs in its own process so that its peak memory is its own: on CUDA the peak of allocated tensor memory
(`torch.cuda.max_memory_allocated`), on the CPU the process's peak resident set (`ru_maxrss`), which includes ~0.4 GB of
Python + torch that any run pays (printed as `baseline`). The timed steps are full optimisation steps of the real training
modules of 09_train (`LFAEStage`, `DMStage`: forward, backward, Adam) on random data of the right shapes, after one warm-up step.
Batch sizes: the preset's on CUDA; on the CPU the paper sizes use batch 2 (LFAE) and 1 (DM), or --batch, and it/s are for that batch.
"""
import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def one(stage: str, size: str, steps: int, threads: int, device: str, batch: int | None) -> dict:
    import torch
    from lfdm.lfae import LFAE, LFAEConfig
    from lfdm.lfdm import LFDM, LFDMConfig
    from lfdm.train import DMStage, LFAEStage
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    lcfg = LFAEConfig.tiny(region_scale_factor=0.5) if size == "tiny" else LFAEConfig.paper()
    lfae = LFAE(lcfg).to(dev)
    if stage == "lfae":
        module, net = LFAEStage(lfae), lfae
        b = batch or (lcfg.batch_size if dev.type == "cuda" or size == "tiny" else 2)
        s = lcfg.image_size
        make = lambda: dict(source=torch.rand(b, 3, s, s), driving=torch.rand(b, 3, s, s))
    else:
        dcfg = LFDMConfig.tiny() if size == "tiny" else LFDMConfig.paper()
        model = LFDM(lfae, dcfg).to(dev)
        module, net = DMStage(model), model.unet
        b = batch or (dcfg.batch_size if dev.type == "cuda" or size == "tiny" else 1)
        h = lcfg.latent_size
        c = dcfg.unet.cond_channels
        cond = dict(label=torch.zeros(b, dtype=torch.long)) if dcfg.unet.cond_mode == "class" else None
        if cond is None:                                   # the paper DM is text-conditioned: pass random 768-d embeddings
            def forward(batch, gen, part, gb):
                return dict(total=model(states=batch["states"].to(dev), features=batch["features"].to(dev),
                                        class_embeddings=torch.randn(gb, dcfg.unet.cond_dim, device=dev)))
            module.forward = forward
            cond = {}
        make = lambda: dict(states=torch.rand(b, 3, dcfg.num_frames, h, h) * 2 - 1, features=torch.randn(b, c, h, h), **cond)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    module.train()

    def step(i):
        out = module(make(), torch.Generator().manual_seed(i), slice(0, b), b)
        opt.zero_grad(set_to_none=True); out["total"].backward(); opt.step()

    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
    step(0)                                                # warm-up
    if dev.type == "cuda": torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for i in range(steps): step(i + 1)
    if dev.type == "cuda": torch.cuda.synchronize(dev)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(stage=stage, size=size, batch=b, params_M=round(sum(p.numel() for p in params) / 1e6, 2), steps=steps,
                it_per_s=round(steps / dt, 3), samples_per_s=round(steps * b / dt, 2), peak_GiB=round(peak, 2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "paper"], choices=["tiny", "paper"])
    ap.add_argument("--stages", nargs="+", default=["lfae", "dm"], choices=["lfae", "dm"])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 1 warm-up step)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--device", default="cuda" if "--device" not in sys.argv and _has_cuda() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--one", nargs=2, metavar=("STAGE", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.steps, args.threads, args.device, args.batch))); return
    base = subprocess.run([sys.executable, "-c", "import resource, torch, lfdm.train; "
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)"], capture_output=True, text=True)
    print(f"# {platform.processor() or platform.machine()}, {args.device}, torch threads {args.threads}; "
          f"baseline (python + torch + lfdm) {float(base.stdout):.2f} GiB resident")
    print(f"{'stage':6} {'size':6} {'params':>8} {'batch':>5} {'it/s':>8} {'samples/s':>10} {'peak GiB':>9}")
    rows = []
    for size in args.sizes:
        for stage in args.stages:
            cmd = [sys.executable, __file__, "--one", stage, size, "--steps", str(args.steps), "--threads", str(args.threads),
                   "--device", args.device] + (["--batch", str(args.batch)] if args.batch else [])
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode: print(f"{stage} {size}: failed\n{p.stderr[-2000:]}"); continue
            r = json.loads(p.stdout.strip().splitlines()[-1]); rows.append(r)
            print(f"{r['stage']:6} {r['size']:6} {r['params_M']:>7}M {r['batch']:>5} {r['it_per_s']:>8} {r['samples_per_s']:>10} {r['peak_GiB']:>9}")
    if args.json:
        with open(args.json, "w") as f: json.dump(rows, f, indent=1)


def _has_cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception: return False


if __name__ == "__main__":
    main()
