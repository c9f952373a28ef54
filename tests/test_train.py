"""Training runs as real subprocesses: SIGKILL then --resume, SIGINT, and DDP with 2 processes (gloo) against 1 process.

Each compares the final weights with an uninterrupted single-process run of the same settings (09_train explains why they must match).
"""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
LFDM = str(BIN / "lfdm")
SMALL = ["--set", "data.size=32", "--set", "data.num_clips=16", "--set", "data.num_appearances=4", "--set", "data.max_gap=4",
         "--set", "lfae.image_size=32", "--set", "lfae.batch_size=4", "--set", "dm.num_frames=4", "--set", "dm.batch_size=4",
         "--set", "dm.unet.dim=16", "--set", "dm.unet.dim_mults=[1, 2]", "--set", "dm.unet.attn_heads=2", "--set", "dm_train.max_clips=8",
         "--set", "lfae_train.device=cpu", "--set", "dm_train.device=cpu", "--no-progress"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")


def run(*args, check=True, **kw):
    p = subprocess.run([LFDM, *args, *SMALL], capture_output=True, text=True, env=ENV, timeout=600, **kw)
    if check: assert p.returncode == 0, f"lfdm {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}"
    return p


def train_state(path):
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return ck["train"]


def assert_same_weights(a, b, atol=0.0):
    ta, tb = train_state(a), train_state(b)
    assert ta["step"] == tb["step"]
    for k, v in ta["model"].items():
        assert torch.allclose(v.float(), tb["model"][k].float(), atol=atol, rtol=0), f"{k} differs: {a} vs {b}"


def newest(run_dir):
    found = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    return found[-1] if found else None


def start(*args):
    return subprocess.Popen([LFDM, *args, *SMALL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for_checkpoint(proc, run_dir, timeout=300):
    t0 = time.time()
    while newest(run_dir) is None:
        assert proc.poll() is None, f"the run ended before its first checkpoint:\n{proc.communicate()[1][-3000:]}"
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    "An uninterrupted 12-step LFAE run (checkpoint every 2 steps)."
    d = tmp_path_factory.mktemp("reference")
    run("train-lfae", "--run-dir", str(d), "--set", "lfae_train.steps=12", "--set", "lfae_train.save_every=2")
    return d / "checkpoints" / "step_0000012.pt"


def test_sigkill_then_resume_is_exact(tmp_path, reference):
    d = tmp_path / "killed"
    proc = start("train-lfae", "--run-dir", str(d), "--set", "lfae_train.steps=12", "--set", "lfae_train.save_every=2")
    wait_for_checkpoint(proc, d)
    time.sleep(random.uniform(0, 1.0))                                  # somewhere in the middle of a later step (or save)
    proc.send_signal(signal.SIGKILL); proc.communicate()
    survivor = newest(d)
    assert survivor is not None and train_state(survivor)["step"] < 12, "kill the run before it finishes (make the run longer)"
    lost = train_state(survivor)["step"]
    run("train-lfae", "--run-dir", str(d), "--resume", "--set", "lfae_train.steps=12", "--set", "lfae_train.save_every=2")
    assert_same_weights(d / "checkpoints" / "step_0000012.pt", reference)
    assert not list((d / "checkpoints").glob(".step_*")), "half-written temporaries were left behind"
    assert not (d / ".lock").exists(), "the resumed run kept its lock"
    print(f"killed after step {lost}; resumed to 12; identical to the uninterrupted run")


@pytest.fixture(scope="session")
def dm_reference(tmp_path_factory, reference):
    "An uninterrupted 12-step DM run on the reference LFAE (checkpoint every 2 steps)."
    d = tmp_path_factory.mktemp("dm_reference")
    run("train-dm", "--run-dir", str(d), "--lfae", str(reference), "--set", "dm_train.steps=12", "--set", "dm_train.save_every=2")
    return d / "checkpoints" / "step_0000012.pt"


def test_dm_sigkill_then_resume_is_exact(tmp_path, reference, dm_reference):
    "Stage two too: killed mid-run, resumed from its last checkpoint, it ends with the raw weights, EMA and optimiser of the uninterrupted run."
    d = tmp_path / "dm_killed"
    settings = ["--lfae", str(reference), "--set", "dm_train.steps=12", "--set", "dm_train.save_every=2"]
    proc = start("train-dm", "--run-dir", str(d), *settings)
    wait_for_checkpoint(proc, d)
    time.sleep(random.uniform(0, 1.0))
    proc.send_signal(signal.SIGKILL); proc.communicate()
    survivor = newest(d)
    assert survivor is not None and train_state(survivor)["step"] < 12, "kill the run before it finishes (make the run longer)"
    lost = train_state(survivor)["step"]
    run("train-dm", "--run-dir", str(d), "--resume", *settings)
    final = d / "checkpoints" / "step_0000012.pt"
    assert_same_weights(final, dm_reference)
    ta, tb = train_state(final), train_state(dm_reference)
    assert ta["ema"].keys() == tb["ema"].keys() and all(torch.equal(v, tb["ema"][k]) for k, v in ta["ema"].items()), "the EMA differs"
    for k, v in ta["optimizer"]["state"].items():
        assert all(torch.equal(v[n], tb["optimizer"]["state"][k][n]) for n in v if torch.is_tensor(v[n])), f"optimiser state {k} differs"
    assert not (d / ".lock").exists(), "the resumed run kept its lock"
    print(f"DM killed after step {lost}; resumed to 12; identical to the uninterrupted run")


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_signal_saves_and_exits_cleanly(tmp_path, reference, signame, code):
    d = tmp_path / "interrupted"
    settings = ["--set", "lfae_train.steps=12", "--set", "lfae_train.save_every=100", "--set", "lfae_train.log_every=1"]
    proc = start("train-lfae", "--run-dir", str(d), *settings)
    t0 = time.time()
    while not (d / "log.csv").exists():                                # the first step is done: the loop is running
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < 300
        time.sleep(0.02)
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, f"the run finished before {signame} arrived: make the run longer (more steps) for this machine"
    assert proc.returncode == code, f"exit code {proc.returncode}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert f"Interrupted by {signame}: saved" in out
    saved = newest(d)
    assert saved is not None and 0 < train_state(saved)["step"] < 12
    assert not (d / ".lock").exists(), "the interrupted run kept its lock"
    run("train-lfae", "--run-dir", str(d), "--resume", *settings)
    assert_same_weights(d / "checkpoints" / "step_0000012.pt", reference)


def test_ddp_two_processes_match_one(tmp_path, reference):
    dm_args = ["--lfae", str(reference), "--set", "dm_train.steps=3", "--set", "dm_train.save_every=3",
               "--set", "dm_train.amp=none"]                                  # float32: bf16 autocast rounds differently per batch split
    run("train-dm", "--run-dir", str(tmp_path / "one"), *dm_args)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", LFDM, "train-dm",
                        "--run-dir", str(tmp_path / "two"), *dm_args, *SMALL], capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    one, two = tmp_path / "one/checkpoints/step_0000003.pt", tmp_path / "two/checkpoints/step_0000003.pt"
    t2 = train_state(two)
    assert t2["world_size"] == 2 and len(t2["fingerprints"]) == 2
    assert t2["fingerprints"][0] == t2["fingerprints"][1], "the two ranks ended with different weights"
    assert_same_weights(two, one, atol=1e-5)                           # the same global batch: the same training, up to rounding
    assert not (tmp_path / "two" / "checkpoints" / "step_0000003.pt.rank1").exists()
