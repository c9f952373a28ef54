"""Benchmark: how fast stage two learns under each training objective and loss weighting, on equal runs from the same start.

    python benchmarks/bench_objectives.py                                  # eps, v, eps + min-SNR-5: 1,000 steps each, scored at 500 and 1,000
    python benchmarks/bench_objectives.py --options eps eps+min_snr --steps 400 --save-every 200 --clips-per-class 2   # a quick look

Every option trains the tiny DM (`Config.tiny()`, `lfdm train-dm`) from scratch, with the same seed, batches, data and LFAE
(default: the bundled one), for the same number of steps; only `dm.objective` and `dm.loss_weighting` differ. The runs share one
flow cache (`dm_train.flows_cache`), so the clips are encoded once: the first run encodes, the others start when the cache is
written. Each saved checkpoint is then scored by `lfdm.eval.evaluate` on the same held-out clips (default 64: 8 per class, data
seed 0, DDIM-25, guidance 1 so that the objectives are compared without the help of guidance): generated conditional accuracy and
classifier FVD, beside the LFAE reconstructions' of the same clips (the ceiling of any DM on this LFAE; scored once, since every
option shares the LFAE), and the DM's own frame 0. The wall time of a checkpoint is the
training time the run's log.csv records at that step, without the encoding (paid once, and shared).

Options are `OBJECTIVE[+min_snr]`, OBJECTIVE one of eps, v, x0. Runs and evaluations that already finished are reused, so an
interrupted benchmark continues where it stopped. Writes objectives.json, objectives.md and objectives.png to --out.
"""
import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_option(opt: str) -> tuple[str, str | None]:
    objective, _, weighting = opt.partition("+")
    if objective not in ("eps", "v", "x0") or weighting not in ("", "min_snr"):
        raise SystemExit(f"unknown option {opt!r}: use OBJECTIVE or OBJECTIVE+min_snr, OBJECTIVE one of eps, v, x0")
    return objective, weighting or None


def lfdm_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "import sys; from lfdm.cli import main; sys.exit(main())", *args]


def train_cmd(args, opt: str, run: Path) -> list[str]:
    objective, weighting = parse_option(opt)
    sets = [f"dm_train.steps={args.steps}", f"dm_train.save_every={args.save_every}", "dm_train.keep_last=1000",
            f"dm_train.seed={args.seed}", f"dm_train.flows_cache={args.run_root.resolve() / 'flows.pt'}",
            f"dm.objective={objective}", f"dm.loss_weighting={'null' if weighting is None else weighting}"] + args.set
    resume = ["--resume"] if (run / "checkpoints").is_dir() and any((run / "checkpoints").glob("step_*.pt")) else []
    return lfdm_cmd("train-dm", "--run-dir", str(run), "--lfae", str(args.lfae), "--no-progress", *resume,
                    *[x for s in sets for x in ("--set", s)])


def run_parallel(jobs: list[tuple[list[str], Path]], parallel: int, env: dict, wait_for: Path | None = None):
    "Run (command, log file) jobs, `parallel` at a time; with `wait_for`, the jobs after the first start once that file exists."
    pending, running = list(jobs), []
    while pending or running:
        first_done = wait_for is None or wait_for.exists()
        while pending and len(running) < parallel and (first_done or not running):
            cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            print("  $", " ".join(cmd[3:] if "lfdm.cli" in cmd[2] else cmd[2:3]), f"> {log}", flush=True)
            running.append((subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env), log))
            first_done = wait_for is None or wait_for.exists()
        time.sleep(2)
        for p, log in list(running):
            if p.poll() is not None:
                running.remove((p, log))
                if p.returncode != 0: raise SystemExit(f"failed (exit {p.returncode}); see {log}:\n" + log.read_text()[-2000:])


def step_seconds(run: Path) -> tuple[dict[int, float], dict[int, float]]:
    "Training seconds at each logged step (log.csv's clock, minus the encoding before the first step)."
    rows = list(csv.DictReader(open(run / "log.csv")))
    steps = [int(r["step"]) for r in rows]
    secs = [float(r["seconds"]) for r in rows]
    first = steps[0] / float(rows[0]["it_per_s"])                    # time of the first logged steps at their own speed
    offset = secs[0] - first                                         # what came before them: encoding (or loading the cache)
    return {s: t - offset for s, t in zip(steps, secs)}, {int(r["step"]): float(r["total"]) for r in rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--options", nargs="+", default=["eps", "v", "eps+min_snr"], help="OBJECTIVE[+min_snr] (default: %(default)s)")
    ap.add_argument("--lfae", type=Path, default=ROOT / "data_samples" / "lfdm_tiny.pt", help="stage-one checkpoint (default: the bundled)")
    ap.add_argument("--steps", type=int, default=1000, help="training steps per option (default: %(default)s)")
    ap.add_argument("--save-every", type=int, default=500, help="a checkpoint, and an evaluation, every n steps (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="training seed, the same for every option (default: %(default)s)")
    ap.add_argument("--set", action="append", default=[], help="more overrides for every run, e.g. --set dm.lr=1e-4")
    ap.add_argument("--clips-per-class", type=int, default=8, help="held-out clips per class for each evaluation (default: %(default)s)")
    ap.add_argument("--data-seed", type=int, default=0, help="data seed of the held-out clips (default: %(default)s)")
    ap.add_argument("--eval-steps", type=int, default=25, help="DDIM steps when scoring (default: %(default)s)")
    ap.add_argument("--guidance", type=float, default=1.0, help="guidance when scoring (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (default: %(default)s)")
    ap.add_argument("--parallel", type=int, default=3, help="processes at once (default: %(default)s)")
    ap.add_argument("--run-root", type=Path, default=Path("runs/bench_objectives"), help="run folders (default: %(default)s)")
    ap.add_argument("--steps-per-s", type=float, default=None,
                    help="report training minutes as steps at this speed (every option costs the same per step) instead of the "
                         "runs' own clocks, e.g. when the runs shared the CPU or were paused")
    ap.add_argument("--report-only", action="store_true", help="no training or scoring: the table and figure of what is already scored")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_objectives"), help="folder for the results (default: %(default)s)")
    args = ap.parse_args(argv)
    for o in args.options: parse_option(o)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    runs = {o: args.run_root / o for o in args.options}

    t0 = time.time()
    todo = []
    for o, run in ({} if args.report_only else runs).items():
        done = (run / "checkpoints" / f"step_{args.steps:07d}.pt").exists()
        if not done: todo.append((train_cmd(args, o, run), args.run_root / f"train_{o}.log"))
    print(f"training {len(todo)} of {len(runs)} options ({args.steps} steps each)", flush=True)
    if todo: run_parallel(todo, args.parallel, env, wait_for=args.run_root / "flows.pt")
    print(f"  trained in {time.time() - t0:.0f} s", flush=True)

    t0, todo = time.time(), []
    checkpoints = [] if args.report_only else [(o, run, ck) for o, run in runs.items() for ck in (run / "checkpoints").glob("step_*.pt")]
    for o, run, ck in sorted(checkpoints, key=lambda x: -int(x[2].stem.split("_")[1])):    # the last steps first
        out = run / f"eval_{ck.stem}"
        if (out / "metrics.json").exists(): continue
        # every option shares the LFAE, so its reconstructions are scored once (with the first option's first checkpoint)
        recon = not todo and not any(args.run_root.glob("*/eval_step_*/metrics.json"))
        code = (f"from lfdm.eval import evaluate; evaluate({str(ck)!r}, out_dir={str(out)!r}, n_per_class={args.clips_per_class}, "
                f"steps={args.eval_steps}, guidance={args.guidance}, data_seed={args.data_seed}, stage1_clips=0, gifs=False, "
                f"ladder=False, reconstruction={recon}, device='cpu')")
        todo.append(([sys.executable, "-c", code], out.with_suffix(".log")))
    print(f"scoring {len(todo)} checkpoints", flush=True)
    run_parallel(todo, args.parallel, env)
    print(f"  scored in {time.time() - t0:.0f} s", flush=True)

    rows = []
    for o, run in runs.items():
        seconds, losses = step_seconds(run)
        for mj in sorted(run.glob("eval_step_*/metrics.json")):
            step = int(mj.parent.name.split("_")[-1])
            m = json.loads(mj.read_text())
            g = m["generated"]
            r = next((json.loads(p.read_text())["reconstructed"] for p in args.run_root.glob("*/eval_step_*/metrics.json")
                      if "reconstructed" in json.loads(p.read_text())), dict(accuracy=float("nan"), classifier_fvd=float("nan")))
            minutes = step / args.steps_per_s / 60 if args.steps_per_s else seconds.get(step, float("nan")) / 60
            rows.append(dict(option=o, step=step, train_min=round(minutes, 1), loss=losses.get(step),
                             accuracy=g["accuracy"], fvd=g["classifier_fvd"], min_class=min(g["per_class"]["accuracy"]),
                             recon_accuracy=r["accuracy"], recon_fvd=r["classifier_fvd"], fvd_ratio=g["classifier_fvd"] / r["classifier_fvd"],
                             own_frame0_psnr=g["identity"].get("psnr_first_own", [None])[0], clips=m["settings"]["clips"]))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = dict(machine=f"{platform.machine()}, {platform.processor() or 'cpu'}", threads=args.threads, parallel=args.parallel,
                steps=args.steps, seed=args.seed, lfae=str(args.lfae), overrides=args.set, data_seed=args.data_seed,
                eval_steps=args.eval_steps, guidance=args.guidance, clips_per_class=args.clips_per_class)
    (args.out / "objectives.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# benchmarks/bench_objectives.py: {', '.join(args.options)}; {args.steps} steps from scratch, seed {args.seed}, "
             f"{args.threads} thread(s) per run, {args.parallel} runs at once",
             f"# scored on {rows[0]['clips'] if rows else '?'} held-out clips (data seed {args.data_seed}), DDIM-{args.eval_steps}, "
             f"guidance {args.guidance}; training minutes = " + (f"steps at {args.steps_per_s} steps/s" if args.steps_per_s else
             "the runs' own clocks, training only (the shared encoding excluded)"), "",
             "| option | steps | training min | loss | generated accuracy | worst class | classifier FVD | FVD / reconstructions' | DM's own frame 0 (dB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['option']} | {r['step']} | {r['train_min']} | {r['loss']:.4f} | {r['accuracy']:.1%} | {r['min_class']:.0%} | "
                     f"{r['fvd']:.2f} | {r['fvd_ratio']:.1f}× | {r['own_frame0_psnr'] or float('nan'):.1f} |")
    if rows: lines += ["", f"LFAE reconstructions of the same clips: {rows[0]['recon_accuracy']:.1%}, classifier FVD {rows[0]['recon_fvd']:.2f}."]
    (args.out / "objectives.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    for o in args.options:
        rs = sorted((r for r in rows if r["option"] == o), key=lambda r: r["step"])
        for i, (key, label) in enumerate((("accuracy", "generated accuracy"), ("fvd", "classifier FVD"))):
            axes[i, 0].plot([r["step"] for r in rs], [r[key] for r in rs], "o-", label=o)
            axes[i, 1].plot([r["train_min"] for r in rs], [r[key] for r in rs], "o-", label=o)
            axes[i, 0].set_ylabel(label)
    if rows:
        for ax in axes[0]: ax.axhline(rows[0]["recon_accuracy"], color="gray", ls="--", lw=1, label="LFAE reconstructions")
        for ax in axes[1]: ax.axhline(rows[0]["recon_fvd"], color="gray", ls="--", lw=1, label="LFAE reconstructions")
    axes[1, 0].set_xlabel("training steps"); axes[1, 1].set_xlabel(f"training minutes (at {args.steps_per_s} steps/s)" if args.steps_per_s else
                          f"training minutes ({args.threads} thread(s), {args.parallel} runs at once)")
    axes[1, 0].set_yscale("log"); axes[0, 0].legend(fontsize=8)
    fig.suptitle("Stage two from scratch: objective and loss weighting, equal runs")
    fig.tight_layout(); fig.savefig(args.out / "objectives.png", dpi=100)
    print(f"wrote {args.out / 'objectives.json'}, objectives.md, objectives.png")


if __name__ == "__main__":
    main()
