"""Benchmark: training iterations per second and peak memory of each stage, at `tiny` and `paper` sizes, in several precisions.

    python benchmarks/bench_train.py [--sizes tiny paper] [--stages lfae dm] [--modes fp32 bf16 bf16-cl bf16-compile]
                                     [--steps 5] [--threads 2] [--device cpu] [--loss-check 200]

Modes (each a separate process, all in one run, so that the ratios compare like with like):
- `fp32`: float32 everywhere (`TrainConfig.amp="none"`);
- `bf16`: `torch.autocast(device, dtype=torch.bfloat16)` around forward and loss (`amp="bf16"`, what `amp="auto"` picks on CPUs
  with native bf16 instructions and on GPUs that support it);
- `bf16-cl`: bf16 plus `channels_last` memory format (`channels_last_3d` for the DM's 3D tensors) for weights and inputs;
- `bf16-compile`: bf16 plus `torch.compile` of the stage module; its compile time is reported separately (`compile_s`).
The `ratio` column is it/s divided by the fp32 it/s of the same stage and size, measured in the same run.

Each (stage, size, mode) runs in its own process so that its peak memory is its own: on CUDA the peak of allocated tensor memory
(`torch.cuda.max_memory_allocated`), on the CPU the process's peak resident set (`ru_maxrss`), which includes ~0.4 GB of
Python + torch that any run pays (printed as `baseline`). The timed steps are full optimisation steps of the real training
modules of 09_train (`LFAEStage`, `DMStage`: forward, backward, Adam) on random data of the right shapes, after warm-up steps.
Batch sizes: the preset's on CUDA; on the CPU the paper sizes use batch 2 (LFAE) and 1 (DM), or --batch, and it/s are for that batch.

`--loss-check N` also trains the `tiny` LFAE for N real steps (procedural data, `lfdm.train.train`) once in float32 and once in bf16
from the same seed, and writes the two loss curves to `benchmarks/results/loss_fp32_vs_bf16.png` with their mean relative gap.

The README quotes two runs, each stored in its own pair of files in `benchmarks/results/` (`--json` for the .json, the printout for
the .txt; tests/test_readme_numbers.py reads both), so that re-running one never overwrites the other:
- `train_sizes.*`: the training table (`--sizes tiny paper --steps 3 --threads 1`, float32, written by this script as of commit
  ac7ee75, before it had modes: a list of rows without `mode`);
- `train.*`: the precision and layout table (`--sizes tiny --threads 1 --steps 10 --modes fp32 bf16 bf16-cl`, plus the compile run).
"""
import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("fp32", "bf16", "bf16-cl", "bf16-compile")


def one(stage: str, size: str, mode: str, steps: int, threads: int, device: str, batch: int | None) -> dict:
    import torch
    from lfdm.lfae import LFAE, LFAEConfig
    from lfdm.lfdm import LFDM, LFDMConfig
    from lfdm.train import DMStage, LFAEStage
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    lcfg = LFAEConfig.tiny(region_scale_factor=0.5) if size == "tiny" else LFAEConfig.paper()
    lfae = LFAE(lcfg).to(dev)
    fmt = None
    if stage == "lfae":
        module, net = LFAEStage(lfae), lfae
        b = batch or (lcfg.batch_size if dev.type == "cuda" or size == "tiny" else 2)
        s = lcfg.image_size
        fmt = torch.channels_last
        make = lambda: dict(source=torch.rand(b, 3, s, s), driving=torch.rand(b, 3, s, s))
    else:
        dcfg = LFDMConfig.tiny() if size == "tiny" else LFDMConfig.paper()
        model = LFDM(lfae, dcfg).to(dev)
        module, net = DMStage(model), model.unet
        b = batch or (dcfg.batch_size if dev.type == "cuda" or size == "tiny" else 1)
        h = lcfg.latent_size
        c = dcfg.unet.cond_channels
        fmt = torch.channels_last_3d
        cond = dict(label=torch.zeros(b, dtype=torch.long)) if dcfg.unet.cond_mode == "class" else None
        if cond is None:                                   # the paper DM is text-conditioned: pass random 768-d embeddings
            def forward(batch, gen, part, gb):
                return dict(total=model(states=batch["states"].to(dev), features=batch["features"].to(dev),
                                        class_embeddings=torch.randn(gb, dcfg.unet.cond_dim, device=dev)))
            module.forward = forward
            cond = {}
        make = lambda: dict(states=torch.rand(b, 3, dcfg.num_frames, h, h) * 2 - 1, features=torch.randn(b, c, h, h), **cond)
    if mode == "bf16-cl":
        for prm in net.parameters():                       # 4-D weights channels_last, 5-D channels_last_3d
            if prm.ndim == 4: prm.data = prm.data.contiguous(memory_format=torch.channels_last)
            elif prm.ndim == 5: prm.data = prm.data.contiguous(memory_format=torch.channels_last_3d)
        base = make
        def make():
            d = base()
            return {k: (v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else
                        v.contiguous(memory_format=torch.channels_last_3d) if v.ndim == 5 else v) for k, v in d.items()}
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    module.train()
    run = module
    compile_s = None
    if mode == "bf16-compile": run = torch.compile(module)
    autocast = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=mode != "fp32")

    def step(i):
        with torch.autocast(**autocast):
            out = run(make(), torch.Generator().manual_seed(i), slice(0, b), b)
        opt.zero_grad(set_to_none=True); out["total"].float().backward(); opt.step()

    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    step(0)                                                # warm-up (and compilation)
    if mode == "bf16-compile": compile_s = round(time.perf_counter() - t0, 1)
    step(1)
    if dev.type == "cuda": torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for i in range(steps): step(i + 2)
    if dev.type == "cuda": torch.cuda.synchronize(dev)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(stage=stage, size=size, mode=mode, batch=b, params_M=round(sum(p.numel() for p in params) / 1e6, 2), steps=steps,
                it_per_s=round(steps / dt, 3), samples_per_s=round(steps * b / dt, 2), peak_GiB=round(peak, 2), compile_s=compile_s)


def loss_check(steps: int, threads: int, out_png: Path) -> dict:
    "Train the tiny LFAE for `steps` real steps in fp32 and in bf16 (same seed); plot both loss curves."
    import csv
    import numpy as np
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from lfdm.train import apply_overrides, preset, train
    torch.set_num_threads(threads)
    curves, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for amp in ("none", "bf16"):
            cfg = apply_overrides(preset("tiny"), [f"lfae_train.steps={steps}", "lfae_train.log_every=10", f"lfae_train.save_every={steps}",
                                                   f"lfae_train.amp={amp}"])
            t0 = time.perf_counter()
            train("lfae", cfg, Path(tmp) / amp, progress=False)
            seconds[amp] = time.perf_counter() - t0
            with open(Path(tmp) / amp / "log.csv") as f:
                rows = list(csv.DictReader(f))
            curves[amp] = (np.array([int(r["step"]) for r in rows]), np.array([float(r["total"]) for r in rows]))
    (s32, l32), (s16, l16) = curves["none"], curves["bf16"]
    gap = float(np.mean(np.abs(l16 - l32) / l32))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(s32, l32, label=f"float32 ({seconds['none']:.0f} s)")
    ax.plot(s16, l16, label=f"bf16 autocast ({seconds['bf16']:.0f} s)")
    ax.set(xlabel="step", ylabel="LFAE loss (mean of 10 steps)", title=f"tiny LFAE, same seed: mean relative gap {gap:.1%}")
    ax.legend(); fig.tight_layout(); fig.savefig(out_png, dpi=100)
    return dict(steps=steps, mean_relative_gap=gap, seconds_fp32=round(seconds["none"], 1), seconds_bf16=round(seconds["bf16"], 1),
                final_fp32=float(l32[-3:].mean()), final_bf16=float(l16[-3:].mean()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "paper"], choices=["tiny", "paper"])
    ap.add_argument("--stages", nargs="+", default=["lfae", "dm"], choices=["lfae", "dm"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--device", default="cuda" if "--device" not in sys.argv and _has_cuda() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="override the batch size")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--loss-check", type=int, default=0, metavar="N", help="also train the tiny LFAE N steps in fp32 and bf16 and plot the losses")
    ap.add_argument("--one", nargs=3, metavar=("STAGE", "SIZE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.steps, args.threads, args.device, args.batch))); return
    base = subprocess.run([sys.executable, "-c", "import resource, torch, lfdm.train; "
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)"], capture_output=True, text=True)
    from lfdm.train import cpu_supports_bf16
    print(f"# {platform.processor() or platform.machine()}, {args.device}, torch threads {args.threads}, native bf16: {cpu_supports_bf16()}; "
          f"baseline (python + torch + lfdm) {float(base.stdout):.2f} GiB resident")
    print(f"{'stage':6} {'size':6} {'mode':13} {'params':>8} {'batch':>5} {'it/s':>8} {'ratio':>6} {'samples/s':>10} {'peak GiB':>9} {'compile s':>9}")
    rows, fp32 = [], {}
    for size in args.sizes:
        for stage in args.stages:
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--one", stage, size, mode, "--steps", str(args.steps), "--threads", str(args.threads),
                       "--device", args.device] + (["--batch", str(args.batch)] if args.batch else [])
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode: print(f"{stage} {size} {mode}: failed\n{p.stderr[-2000:]}"); continue
                r = json.loads(p.stdout.strip().splitlines()[-1])
                if mode == "fp32": fp32[(stage, size)] = r["it_per_s"]
                r["ratio"] = round(r["it_per_s"] / fp32[(stage, size)], 2) if (stage, size) in fp32 else None
                rows.append(r)
                print(f"{r['stage']:6} {r['size']:6} {r['mode']:13} {r['params_M']:>7}M {r['batch']:>5} {r['it_per_s']:>8} "
                      f"{'' if r['ratio'] is None else r['ratio']:>6} {r['samples_per_s']:>10} {r['peak_GiB']:>9} {'' if r['compile_s'] is None else r['compile_s']:>9}")
    out = dict(rows=rows)
    if args.loss_check:
        res = Path(__file__).parent / "results"
        res.mkdir(exist_ok=True)
        out["loss_check"] = lc = loss_check(args.loss_check, args.threads, res / "loss_fp32_vs_bf16.png")
        print(f"loss check, tiny LFAE {lc['steps']} steps: fp32 {lc['seconds_fp32']} s, bf16 {lc['seconds_bf16']} s, final loss "
              f"{lc['final_fp32']:.3f} vs {lc['final_bf16']:.3f}, mean relative gap of the curves {lc['mean_relative_gap']:.1%} "
              f"(plot: benchmarks/results/loss_fp32_vs_bf16.png)")
    if args.json:
        with open(args.json, "w") as f: json.dump(out, f, indent=1)


def _has_cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except Exception: return False


if __name__ == "__main__":
    main()
