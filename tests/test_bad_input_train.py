"""Bad input to training: run folders in use or already holding a run, resumed settings, leftovers of a killed run, hostile YAML,
numbers out of range, broken datasets and a diverging LFAE. Each must end in one clear error (or a warning and a clean start)
before anything is written, never in a traceback, a hang or a silently changed run.

Small runs: 32² frames, batch 4, one or two LFAE steps (see `small_config` in 09_train).
"""
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lfdm.cli import main
from lfdm.core import InputError
from lfdm.train import (Config, LFAEStage, RunLock, apply_overrides, check_config, config_from_yaml, make_dataset, resume_config,
                        save_config, train)

SMALL = ["data.size=32", "data.num_clips=16", "data.num_appearances=4", "data.max_gap=4", "lfae.image_size=32", "lfae.batch_size=4",
         "lfae_train.steps=2", "lfae_train.save_every=1", "lfae_train.log_every=1", "lfae_train.device=cpu", "dm_train.device=cpu"]
CLI_SMALL = [a for s in SMALL for a in ("--set", s)] + ["--no-progress"]
LFDM = str(Path(sys.executable).parent / "lfdm")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")


def small(*over: str) -> Config:
    return apply_overrides(Config.tiny(), SMALL + list(over))


def digest(root: Path) -> dict:
    "Every file under `root` with the hash of its bytes (hidden files included)."
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def expect(fn, *needles, error=InputError) -> str:
    with pytest.raises(error) as info: fn()
    msg = str(info.value)
    for n in needles: assert str(n) in msg, f"{n!r} not in the message: {msg}"
    assert "\n" not in msg, f"the message should be one line: {msg}"
    return msg


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def write_lock(run: Path, pid: int, host: str | None = None):
    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_text(json.dumps(dict(pid=pid, host=host or socket.gethostname())))


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    "A finished two-step LFAE run (lfae.lr=1e-3, not the preset's), to copy."
    run = tmp_path_factory.mktemp("finished") / "run"
    train("lfae", small("lfae.lr=1e-3"), run, progress=False)
    return run


@pytest.fixture
def run_copy(finished, tmp_path):
    dst = tmp_path / "run"
    subprocess.run(["cp", "-a", str(finished), str(dst)], check=True)
    return dst


# ---------------------------------------------------------------- one trainer per folder

def test_a_second_trainer_on_a_running_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([LFDM, "train-lfae", "--run-dir", str(run), *CLI_SMALL, "--set", "lfae_train.steps=100000",
                             "--set", "lfae_train.save_every=100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        t0 = time.time()
        while not (run / "config.yaml").exists():                            # written after the lock was taken
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() - t0 < 120, "the first trainer did not start"
            time.sleep(0.05)
        assert json.loads((run / ".lock").read_text())["pid"] == proc.pid
        before = digest(run)
        expect(lambda: train("lfae", small(), run, progress=False), f"{run} is in use by another trainer (pid {proc.pid}")
        expect(lambda: train("lfae", None, run, resume=True, progress=False), f"pid {proc.pid}")
        code, _, err = cli("train-lfae", "--run-dir", run, *CLI_SMALL)
        assert code == 2 and f"pid {proc.pid}" in err and "Traceback" not in err, err
        assert digest(run) == before
    finally:
        proc.kill(); proc.communicate()
    # SIGKILL leaves the lock behind: the next trainer finds it stale and takes over (here into a fresh run: --overwrite)
    with pytest.warns(UserWarning, match=f"stale lock of pid {proc.pid}"):
        r = train("lfae", small("lfae_train.steps=1"), run, overwrite=True, progress=False)
    assert r.step == 1 and not (run / ".lock").exists()


def test_a_live_pid_in_the_lock_file_is_respected(tmp_path):
    "A lock written by a process that holds no kernel lock (another version, a filesystem without flock) still counts while it runs."
    run = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(run, sleeper.pid)
        expect(lambda: train("lfae", small(), run, progress=False), f"pid {sleeper.pid}", "in use by another trainer")
        assert sorted(p.name for p in run.iterdir()) == [".lock"]           # nothing else written
    finally:
        sleeper.kill(); sleeper.wait()


def test_the_kernel_lock_of_this_process_is_respected(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        expect(lambda: train("lfae", small(), run, progress=False), f"pid {os.getpid()}")
    assert not run.exists()                                                 # created by the lock, removed with it


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    run = tmp_path / "run"
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()                                                             # finished and reaped: its pid runs nothing
    write_lock(run, done.pid)
    with pytest.warns(UserWarning, match=f"stale lock of pid {done.pid}"):
        r = train("lfae", small("lfae_train.steps=1"), run, progress=False)
    assert r.step == 1 and not (run / ".lock").exists()


def test_a_lock_from_another_host_names_that_host(tmp_path):
    run = tmp_path / "run"
    write_lock(run, 12345, host="other-machine.example")
    expect(lambda: train("lfae", small(), run, progress=False), "pid 12345 on host other-machine.example", f"delete {run / '.lock'}")


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_the_lock_is_held_while_training_and_released_on_a_stop_signal(tmp_path, monkeypatch, request, signame):
    "Ctrl-C, `docker stop` / Slurm (SIGTERM) and a closed terminal (SIGHUP) each save a checkpoint at the step they arrive in."
    run, original, seen, signum = tmp_path / "run", LFAEStage.forward, [], getattr(signal, signame)
    if signal.getsignal(signum) == signal.SIG_IGN:          # the suite runs under nohup (or in a background job): train() rightly
        signal.signal(signum, lambda *a: None)              # keeps an ignored signal ignored, so give it a handler for this test
        request.addfinalizer(lambda: signal.signal(signum, signal.SIG_IGN))
    before = signal.getsignal(signum)

    def interrupt(self, *a, **k):
        seen.append(json.loads((run / ".lock").read_text())["pid"])
        if len(seen) == 2: os.kill(os.getpid(), signum)                    # the signal arrives during the second step
        return original(self, *a, **k)

    monkeypatch.setattr(LFAEStage, "forward", interrupt)
    r = train("lfae", small("lfae_train.steps=5", "lfae_train.save_every=100"), run, progress=False)
    assert seen == [os.getpid()] * 2 and r.interrupted and r.step == 2 and r.signal == signum
    assert r.checkpoint is not None and r.checkpoint.name == "step_0000002.pt" and r.checkpoint.is_file()
    assert not (run / ".lock").exists()
    assert signal.getsignal(signum) == before, "train() left its handler installed"

# ---------------------------------------------------------------- an existing run is never silently replaced

def test_an_existing_run_is_refused_and_left_byte_identical(run_copy):
    before = digest(run_copy)
    expect(lambda: train("lfae", small(), run_copy, progress=False),
           f"{run_copy} already holds a run (2 checkpoints, last step 2); continue it with --resume, or pass --overwrite to move it aside to "
           f"{run_copy}.old-<timestamp>")
    code, out, err = cli("train-lfae", "--run-dir", run_copy, *CLI_SMALL)
    assert code == 2 and err.count("\n") == 1 and "already holds a run" in err, err
    assert digest(run_copy) == before


def test_a_run_that_saved_no_checkpoint_yet_is_refused_too(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_config(small(), run / "config.yaml")
    before = digest(run)
    expect(lambda: train("lfae", small(), run, progress=False), "saved no checkpoint (config.yaml); pass --overwrite")
    assert digest(run) == before
    (run / "config.yaml").unlink()
    (run / "notes.txt").write_text("my notes")                             # a folder without run files is fine
    assert train("lfae", small("lfae_train.steps=1"), run, progress=False).step == 1
    assert (run / "notes.txt").read_text() == "my notes"


def test_overwrite_moves_the_old_run_aside(run_copy):
    before = digest(run_copy)
    r = train("lfae", small("lfae_train.steps=1"), run_copy, overwrite=True, progress=False)
    aside = sorted(run_copy.parent.glob("run.old-*"))
    assert len(aside) == 1 and digest(aside[0]) == before                  # moved, not deleted
    assert r.step == 1 and sorted(p.name for p in (run_copy / "checkpoints").glob("step_*")) == ["step_0000001.pt"]
    expect(lambda: train("lfae", small(), run_copy, resume=True, overwrite=True, progress=False), "pass one of them")


# ---------------------------------------------------------------- resuming keeps the run's settings

def test_a_bare_resume_keeps_the_runs_settings(run_copy, capsys):
    r = train("lfae", None, run_copy, resume=True, overrides=["lfae_train.steps=3"], progress=False)
    assert f"resuming with {run_copy / 'config.yaml'}; changed: lfae_train.steps 2 -> 3" in capsys.readouterr().out
    saved = config_from_yaml(run_copy / "config.yaml")
    assert (r.step, saved.lfae.lr, saved.lfae_train.steps) == (3, 1e-3, 3)   # the run's lr, not the preset's 2e-4
    ck = torch.load(r.checkpoint, map_location="cpu", weights_only=True)
    assert ck["train"]["run_config"]["lfae"]["lr"] == 1e-3


def test_a_resume_given_other_settings_is_refused(run_copy):
    before = digest(run_copy)
    expect(lambda: train("lfae", small("lfae_train.steps=3"), run_copy, resume=True, progress=False),
           "differs from", "lfae.lr 0.001 -> 0.0002", "overrides=")
    assert digest(run_copy) == before
    config, changes = resume_config(run_copy, ["lfae_train.steps=5"])
    assert changes == ["lfae_train.steps 2 -> 5"] and config.lfae.lr == 1e-3
    expect(lambda: train("lfae", config, run_copy, resume=True, progress=False), "lfae_train.steps 2 -> 5")   # a change not asked for
    r = train("lfae", config, run_copy, resume=True, overrides=["lfae_train.steps=5"], progress=False)        # the same, asked for
    assert r.step == 5 and config_from_yaml(run_copy / "config.yaml") == config


# ---------------------------------------------------------------- leftovers of a killed run

def test_leftover_temporaries_are_removed_on_start(run_copy, capsys):
    temps = [run_copy / "checkpoints" / ".step_0000003.lfdm-tmp-k2j4x9_a.pt", run_copy / "checkpoints" / ".best.lfdm-tmp-0a1b2c3d.pt",
             run_copy / ".flows.lfdm-tmp-q1w2e3r4.pt", run_copy / ".config.lfdm-tmp-abcdefgh.yaml", run_copy / ".log.lfdm-tmp-zz_zz_zz.csv"]
    for t in temps: t.write_bytes(b"half written")
    keep = [run_copy / ".gitignore", run_copy / "checkpoints" / ".notes", run_copy / ".config.backup.yaml", run_copy / ".log.mine.csv",
            run_copy / "checkpoints" / ".best.old1.pt"]                     # a user's own hidden files, named like ours but unmarked
    for k in keep: k.write_text("mine")
    train("lfae", None, run_copy, resume=True, overrides=["lfae_train.steps=3"], progress=False)
    assert "removed 5 temporary file(s) left by an interrupted run" in capsys.readouterr().out
    assert not any(t.exists() for t in temps) and all(k.read_text() == "mine" for k in keep)


# ---------------------------------------------------------------- hostile YAML

_LEVELS = ["&a [" + ", ".join(["x"] * 9) + "]"] + [f"&{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
BOMB = "data:\n  test_subjects: [" + ", ".join(_LEVELS) + "]\n"          # 9**9 = 387 million x's from a few hundred bytes


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 600 and BOMB.count("*") >= 70
    t0 = time.perf_counter()
    expect(lambda: config_from_yaml(path), "bomb.yaml", "anchor/alias 'a' (line 2)")
    code, _, err = cli("train-lfae", "--run-dir", tmp_path / "run", "--config", path, *CLI_SMALL)
    assert code == 2 and "bomb.yaml" in err and not (tmp_path / "run").exists()
    assert time.perf_counter() - t0 < 5
    t0 = time.perf_counter()                                                 # an override's value is not expanded either
    expect(lambda: apply_overrides(Config.tiny(), ["data.test_subjects=" + BOMB.split("test_subjects: ")[1].strip()]),
           "config.data.test_subjects must be tuple")
    assert time.perf_counter() - t0 < 5


def test_a_huge_config_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("lfae:\n  lr: 1e-4\n" + "# padding\n" * 200_000)
    expect(lambda: config_from_yaml(path), "huge.yaml", "a run config is a few kilobytes")


# ---------------------------------------------------------------- numbers out of range

BAD_NUMBERS = [
    ("lfae.lr=nan", "config.lfae.lr must be a finite number > 0, got nan."),
    ("lfae.lr=-1e-4", "config.lfae.lr must be a finite number > 0, got -0.0001."),
    ("lfae.lr=.inf", "config.lfae.lr must be a finite number > 0, got inf."),
    ("dm.lr=0", "config.dm.lr must be a finite number > 0, got 0.0."),
    ("lfae.batch_size=0", "config.lfae.batch_size must be an integer >= 1, got 0."),
    ("dm.batch_size=-2", "config.dm.batch_size must be an integer >= 1, got -2."),
    ("data.num_workers=-1", "config.data.num_workers must be an integer from 0 to 1024"),
    ("lfae.betas=[0.9, 1.0]", "config.lfae.betas must be two numbers in [0, 1)"),
    ("lfae.betas=[0.9]", "config.lfae.betas must be two numbers in [0, 1)"),
    ("lfae_train.ema_decay=1", "config.lfae_train.ema_decay must be a finite number in [0, 1)"),
    ("lfae_train.grad_clip=inf", "config.lfae_train.grad_clip must be a finite number >= 0"),
    ("lfae_train.seed=-1", "config.lfae_train.seed must be an integer from 0 to 2**63 - 1"),
    ("data.seed=9223372036854775808", "config.data.seed must be an integer from 0 to 2**63 - 1"),
    ("dm_train.max_clips=0", "config.dm_train.max_clips must be an integer >= 1 (or null), got 0."),
    ("lfae_train.save_every=0", "config.lfae_train.save_every must be an integer >= 1, got 0."),
    ("data.size=4", "config.data.size must be an integer from 8 to 4096"),
    ("dm.null_cond_prob=nan", "config.dm.null_cond_prob must be a finite number in [0, 1)"),
]


@pytest.mark.parametrize("item, needle", BAD_NUMBERS, ids=[b[0] for b in BAD_NUMBERS])
def test_numbers_out_of_range_are_named(tmp_path, item, needle):
    expect(lambda: apply_overrides(small(), [item]), needle)
    key, value = item.split("=", 1)
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: {value}\n")
    expect(lambda: config_from_yaml(path), needle)


def test_none_is_a_string_where_the_field_takes_no_null():
    "`--set dm_train.amp=none` (float32) must reach amp as the string; 'none' meant null only where a field takes null."
    assert apply_overrides(small(), ["dm_train.amp=none"]).dm_train.amp == "none"
    assert apply_overrides(small(), ["dm_train.max_clips=None"]).dm_train.max_clips is None
    expect(lambda: apply_overrides(small(), ["dm_train.amp=null"]), "config.dm_train.amp must be str")

@pytest.mark.parametrize("section, name, value, needle", [
    ("lfae", "lr", float("nan"), "config.lfae.lr must be a finite number > 0, got nan."),
    ("lfae", "batch_size", 0, "config.lfae.batch_size must be an integer >= 1, got 0."),
    ("data", "num_workers", -1, "config.data.num_workers must be an integer from 0 to 1024"),
])
def test_a_bad_python_config_is_refused_before_anything_is_written(tmp_path, section, name, value, needle):
    c = small()
    setattr(getattr(c, section), name, value)                               # edited in Python: no YAML, no --set
    expect(lambda: check_config(c), needle)
    expect(lambda: train("lfae", c, tmp_path / "run", progress=False), needle)
    assert not (tmp_path / "run").exists()


def test_bad_numbers_on_the_command_line_write_nothing(tmp_path):
    for item in ("lfae.lr=nan", "lfae.batch_size=0", "data.num_workers=-1"):
        code, _, err = cli("train-lfae", "--run-dir", tmp_path / "run", *CLI_SMALL, "--set", item)
        assert code == 2 and item.split("=")[0] in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- datasets

@pytest.fixture
def videos(tmp_path):
    return make_dataset(tmp_path / "videos", num_clips=8, size=32, length=4, num_appearances=2)


def on_disk(folder: Path) -> Config:
    return small(f"data.dataset={folder}", "data.layout=folders", "data.split=null")


def test_a_corrupt_clip_among_good_ones_is_named_before_training(tmp_path, videos):
    clips = sorted(videos.rglob("*.gif"))
    clips[6].write_bytes(clips[6].read_bytes()[:30])                         # a GIF cut short in its header
    expect(lambda: train("lfae", on_disk(videos), tmp_path / "run", progress=False), str(clips[6]), "replace or remove it")
    assert not (tmp_path / "run").exists()
    clips[6].write_text("not a video at all")
    expect(lambda: train("lfae", on_disk(videos), tmp_path / "run", progress=False), str(clips[6]))
    assert not (tmp_path / "run").exists()


def test_a_symlink_loop_in_the_dataset_is_an_input_error(tmp_path, videos):
    os.symlink(videos / "zz", videos / "zz")                                # a link onto itself
    expect(lambda: train("lfae", on_disk(videos), tmp_path / "run", progress=False), f"{videos / 'zz'} is a symbolic link that loops")
    os.unlink(videos / "zz")
    wave = videos / "wave"
    os.symlink(wave, wave / "again")                                        # a folder that contains itself
    expect(lambda: train("lfae", on_disk(videos), tmp_path / "run", progress=False), f"{wave / 'again'} is a symbolic link to")
    code, _, err = cli("train-lfae", "--run-dir", tmp_path / "run", *CLI_SMALL, "--set", f"data.dataset={videos}", "--set", "data.split=null")
    assert code == 2 and "symbolic link" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a diverging LFAE

def test_a_diverging_lfae_stops_with_the_nan_guard(tmp_path, monkeypatch):
    original, calls = LFAEStage.forward, []

    def diverge(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:                                                  # after one good step, the weights are NaN
            with torch.no_grad():
                for p in self.model.parameters(): p.fill_(float("nan"))
        return original(self, *a, **k)

    monkeypatch.setattr(LFAEStage, "forward", diverge)
    run = tmp_path / "run"
    msg = expect(lambda: train("lfae", small("lfae_train.steps=3"), run, progress=False),
                 "The lfae loss is not finite at step 1 (", "nothing was saved for this step",
                 f"The last good checkpoint: {run / 'checkpoints' / 'step_0000001.pt'}", "Lower the learning rate", error=FloatingPointError)
    assert "LinAlgError" not in msg
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_0000001.pt"]
    assert not (run / ".lock").exists()


def test_a_non_finite_gradient_stops_before_the_update(tmp_path, monkeypatch):
    original = LFAEStage.forward

    def nan_gradient(self, *a, **k):                                         # a finite loss whose gradient is NaN: 0 * d sqrt(0)
        out = original(self, *a, **k)
        p = next(self.model.parameters())
        out["total"] = out["total"] + (torch.sqrt(p.abs() * 0) * 0).sum()
        return out

    monkeypatch.setattr(LFAEStage, "forward", nan_gradient)
    expect(lambda: train("lfae", small(), tmp_path / "run", progress=False), "The lfae gradient is not finite at step 0",
           "The last good checkpoint: none yet", error=FloatingPointError)
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))


# ---------------------------------------------------------------- run folders that heal (or say what is wrong)

MISPLACED = [("config.yaml", "folder"), ("log.csv", "folder"), ("loss.png", "folder"), (".lock", "folder"), ("flows.pt", "folder"),
             ("checkpoints/best.pt", "folder"), ("checkpoints", "file")]


@pytest.mark.parametrize("name, kind", MISPLACED, ids=[f"{n}-is-a-{k}" for n, k in MISPLACED])
@pytest.mark.parametrize("resume", [True, False], ids=["resume", "new"])
def test_a_folder_where_a_file_belongs_is_named_and_nothing_changes(run_copy, name, kind, resume):
    target = run_copy / name
    if target.is_dir(): subprocess.run(["rm", "-rf", str(target)], check=True)
    else: target.unlink(missing_ok=True)
    if kind == "folder": target.mkdir(); (target / "user.txt").write_text("mine")
    else: target.write_text("mine")
    before = digest(run_copy)
    expect(lambda: train("lfae", None if resume else small(), run_copy, resume=resume, progress=False),
           str(target), f"is a {kind}", "nothing was changed")
    assert digest(run_copy) == before


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_that_loads(run_copy, capsys):
    ckpts = sorted((run_copy / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == ["step_0000001.pt", "step_0000002.pt"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:5000])                      # a save cut short by a full disk or a power cut
    r = train("lfae", None, run_copy, resume=True, overrides=["lfae_train.steps=3"], progress=False)
    out = capsys.readouterr().out
    assert "step_0000002.pt cannot be read" in out and "resuming from step_0000001.pt" in out, out
    assert r.step == 3 and torch.load(ckpts[-1], weights_only=True)["train"]["step"] == 2      # step 2 was trained again and saved whole
    for p in (run_copy / "checkpoints").glob("step_*.pt"): p.write_bytes(b"")
    expect(lambda: train("lfae", None, run_copy, resume=True, progress=False), "None of the", "can be read", "without --resume")


# ---------------------------------------------------------------- datasets checked for real before the first step

def _two_frame_gif_with_a_frame_outside_its_canvas(path: Path):
    from PIL import Image
    frames = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 0, 200))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    data = bytearray(path.read_bytes())
    second = data.index(b"\x2c\x00\x00\x00\x00", data.index(b"\x2c\x00\x00\x00\x00") + 1)    # the second frame's descriptor
    data[second + 1:second + 5] = (20).to_bytes(2, "little") * 2                               # moved to (20, 20): outside 32 x 32
    path.write_bytes(bytes(data))


def _flaw(videos: Path, flaw: str) -> tuple[str, list[str]]:
    "Damage the dataset `videos` (make_dataset's folders + clips.csv) in one way; returns (layout to train with, needles)."
    gif = sorted(videos.rglob("*.gif"))[3]
    csv_file = videos / "clips.csv"
    if flaw == "gif-cut-at-a-frame-boundary":
        gif.write_bytes(gif.read_bytes()[:-1]); return "folders", [str(gif), "is cut short"]
    if flaw == "gif-frame-outside-its-canvas":
        _two_frame_gif_with_a_frame_outside_its_canvas(gif); return "folders", [str(gif), "reaches outside the GIF's canvas"]
    if flaw == "csv-in-latin-1":
        csv_file.write_bytes(csv_file.read_bytes() + "wave/caf\xe9.gif,wave,train000\n".encode("latin-1"))
        return "auto", [str(csv_file), "is not UTF-8 text", "byte 0xe9 on line 10"]
    if flaw == "csv-duplicate-row":
        lines = csv_file.read_text().splitlines(); csv_file.write_text("\n".join(lines + [lines[2]]) + "\n")
        return "csv", [str(csv_file), "lines 3 and 10 list the same clip"]
    if flaw == "csv-unbalanced-quote":
        lines = csv_file.read_text().splitlines(); lines.insert(3, '"' + lines[3]); csv_file.write_text("\n".join(lines) + "\n")
        return "csv", [str(csv_file), "line 4: a quote", "never closed"]
    if flaw == "two-layouts-fit":
        os.rename(gif, gif.with_name("a1_s1_t1.gif")); return "auto", ["fits more than one layout (utd_mhad, csv)", "data.layout=utd_mhad"]
    raise ValueError(flaw)


FLAWS = ["gif-cut-at-a-frame-boundary", "gif-frame-outside-its-canvas", "csv-in-latin-1", "csv-duplicate-row", "csv-unbalanced-quote",
         "two-layouts-fit"]


@pytest.mark.parametrize("flaw", FLAWS)
def test_a_flawed_dataset_is_named_before_the_first_step(tmp_path, videos, flaw):
    layout, needles = _flaw(videos, flaw)
    config = small(f"data.dataset={videos}", f"data.layout={layout}", "data.split=null")
    expect(lambda: train("lfae", config, tmp_path / "run", progress=False), *needles)
    assert not (tmp_path / "run").exists()


def test_a_symlink_cycle_between_sibling_folders_is_walked_once(tmp_path):
    "Layouts that search a tree (utd_mhad, natops) follow symlinks; two folders linking each other must not loop."
    from lfdm.folders import VideoFolder
    root = tmp_path / "utd"
    for d in ("a", "b"): (root / d).mkdir(parents=True)
    for i, d in enumerate("ab"):
        for t in (1, 2): make_clip = sorted(make_dataset(tmp_path / f"src{i}{t}", num_clips=1, size=32, length=4).rglob("*.gif"))[0]; \
            os.rename(make_clip, root / d / f"a{i + 1}_s{t}_t1.gif")
    os.symlink(root / "b", root / "a" / "to_b"); os.symlink(root / "a", root / "b" / "to_a")
    from lfdm.folders import _walk
    visited = [os.path.realpath(here) for here, _, _ in _walk(root)]
    assert sorted(visited) == sorted(os.path.realpath(p) for p in (root, root / "a", root / "b"))   # each real folder once, no loop
    assert len(VideoFolder(root, layout="utd_mhad", size=32)) == 4


def test_the_largest_seeds_train(tmp_path):
    "Seeds up to 2**63 - 1 are accepted (checked), so every seed derived from them must stay in torch's range too."
    top = 2 ** 63 - 1
    r = train("lfae", small(f"data.seed={top}", f"lfae_train.seed={top}", "lfae_train.steps=1"), tmp_path / "run", progress=False)
    assert r.step == 1



def test_rotation_deletes_only_checkpoints_lfdm_wrote(run_copy):
    "A user's own step_N.pt in checkpoints/ is neither deleted nor counted among the checkpoints kept."
    ck = run_copy / "checkpoints"
    (ck / "step_0000001.pt").write_text("my notes"); (ck / "step_0000099.pt").write_text("hello")    # at names of old steps, and later
    train("lfae", None, run_copy, resume=True, overrides=["lfae_train.steps=5"], progress=False)
    assert (ck / "step_0000001.pt").read_text() == "my notes" and (ck / "step_0000099.pt").read_text() == "hello"
    assert sorted(p.name for p in ck.glob("step_*.pt")) == ["step_0000001.pt", "step_0000004.pt", "step_0000005.pt", "step_0000099.pt"]


def test_a_run_file_that_is_a_symlink_is_refused(run_copy, tmp_path):
    precious = tmp_path / "precious.csv"; precious.write_text("user precious,1\n")
    (run_copy / "log.csv").unlink(); os.symlink(precious, run_copy / "log.csv")
    expect(lambda: train("lfae", None, run_copy, resume=True, overrides=["lfae_train.steps=3"], progress=False),
           "log.csv is a symbolic link", "will not write through a link")
    assert precious.read_text() == "user precious,1\n"


def test_an_lfae_for_other_than_rgb_is_refused_by_its_key(tmp_path):
    expect(lambda: train("lfae", small("lfae.num_channels=1"), tmp_path / "run", progress=False),
           "lfae.num_channels must be 3: lfdm reads every clip as RGB")
