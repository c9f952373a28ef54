"""Bad input at every public entry point: one clear `InputError` naming what is wrong, exit code 2 and no traceback on the command line,
and existing outputs and checkpoints left byte-identical.

Entry points: image loading, video reading and writing, dataset folders, the procedural dataset, config files and `--set` overrides,
`train`, checkpoint loading, `LFAE` / `LFDM.sample`, and the `lfdm` console script (`sample`, `train-*`, `make-dataset`,
`convert-official`, and `eval` once it exists). Every case here once found a real gap; all are fixed in the notebooks.
"""
import contextlib
import hashlib
import io
import os
import pickle
import resource
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfdm.cli import _parser, main
from lfdm.core import (ImageResizedWarning, InputError, check_shape, count_frames, list_frames, load_image, read_video,
                       write_video)
from lfdm.data import ProceduralActions
from lfdm.folders import VideoFolder
from lfdm.lfae import LFAE, LFAEConfig
from lfdm.lfdm import bundled_checkpoint, load_checkpoint, load_lfae, load_lfdm, save_checkpoint, save_lfae
from lfdm.train import apply_overrides, config_from_yaml, preset, train

BUNDLED = bundled_checkpoint()
STILL = BUNDLED.parent / "stills" / "turn.png"
LFDM_BIN = Path(sys.executable).parent / "lfdm"
CPU = ["--set", "lfae_train.device=cpu", "--set", "dm_train.device=cpu", "--no-progress"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")


# ---------------------------------------------------------------- helpers

def expect(f, *needles, error=InputError):
    "Call `f`: it must raise `error` with a one-line message containing every needle. Returns the message."
    with pytest.raises(error) as info: f()
    msg = str(info.value)
    for s in needles: assert str(s) in msg, f"{s!r} is not in the message: {msg}"
    assert len(msg.strip().splitlines()) == 1, f"not one line: {msg}"
    return msg


def digest(root: Path) -> dict:
    "Every file and folder under `root` (itself included if it is a file) with the hash of its bytes."
    root = Path(root)
    if root.is_file(): return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder" for p in sorted(root.rglob("*"))}


def cli(*args) -> tuple[int, str, str]:
    "Run `lfdm ARGS` in this process: (exit code, stdout, stderr). Any exception other than SystemExit fails the test."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try: code = main([str(a) for a in args])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()


def expect_cli_error(*args, needles=()):
    "`lfdm ARGS` must exit with 2 and print one `lfdm <command>: error: ...` naming every needle, without a traceback."
    code, out, err = cli(*args)
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert f"lfdm {args[0]}: error:" in err, err
    assert "Traceback" not in err and "wrote" not in out, err
    for s in needles: assert str(s) in err, f"{s!r} is not in: {err}"
    return err


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, depth: int, colour: int, rows: bytes) -> bytes:
    "A PNG file from its IHDR fields and raw rows (each starting with filter byte 0)."
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def subcommands() -> set:
    return set(next(a for a in _parser()._actions if a.dest == "command").choices)


def has_option(command: str, option: str) -> bool:
    sub = next(a for a in _parser()._actions if a.dest == "command").choices.get(command)
    return sub is not None and any(option in a.option_strings for a in sub._actions)


# ---------------------------------------------------------------- fixtures (built once)

@pytest.fixture(scope="session")
def files(tmp_path_factory):
    "Broken and unusual files of every kind, in one folder."
    d = tmp_path_factory.mktemp("files")
    (d / "zero.png").write_bytes(b""); (d / "zero.mp4").write_bytes(b""); (d / "zero.pt").write_bytes(b""); (d / "zero.yaml").write_bytes(b"")
    (d / "text.png").write_text("not an image"); (d / "text.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    (d / "text.mp4").write_text("not a video"); (d / "text.gif").write_text("not a video"); (d / "notes.txt").write_text("x")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / "ok.png")
    (d / "half.png").write_bytes((d / "ok.png").read_bytes()[:150])
    (d / "huge.png").write_bytes(png(20000, 20000, 8, 2, b"\x00" * 100))           # a 1.2 GB image in a 100-byte file
    clip = torch.rand(3, 4, 16, 16)
    write_video(clip, d / "ok.gif"); write_video(clip, d / "ok.mp4")
    (d / "half.mp4").write_bytes((d / "ok.mp4").read_bytes()[:len((d / "ok.mp4").read_bytes()) // 2])
    (d / "half.gif").write_bytes((d / "ok.gif").read_bytes()[:len((d / "ok.gif").read_bytes()) // 2])
    (d / "random.pt").write_bytes(np.random.default_rng(2).bytes(4096))
    torch.save({"weights": torch.zeros(3)}, d / "foreign.pt"); torch.save(torch.zeros(3), d / "tensor.pt")
    with open(d / "pickled.pt", "wb") as f: pickle.dump(Path("x"), f)                  # a pickle that is not weights-only
    torch.save({"format": "lfdm-checkpoint", "kind": "lfdm", "hook": Path("x")}, d / "payload.pt")   # an object torch refuses to build
    torch.save({"format": "lfdm-checkpoint", "config": {}}, d / "nokind.pt")
    raw = BUNDLED.read_bytes()
    (d / "lfdm_truncated.pt").write_bytes(raw[:len(raw) // 2])
    lfae = load_lfae(BUNDLED)
    save_lfae(lfae, d / "lfae.pt", half=True)
    raw = (d / "lfae.pt").read_bytes()
    (d / "lfae_truncated.pt").write_bytes(raw[:len(raw) // 2])
    save_checkpoint(d / "lfae_stage.pt", "lfae", lfae.config, lfae.state_dict(), half=True, train=dict(stage="lfae", step=1))
    save_checkpoint(d / "classifier.pt", "motion-classifier", LFAEConfig.tiny(), {}, half=True)
    ck = torch.load(d / "lfae.pt", weights_only=True); ck["config"]["block_expansion"] = 8; torch.save(ck, d / "lfae_mismatch.pt")
    ck = torch.load(d / "lfae.pt", weights_only=True); ck["config"]["colour_mode"] = "rgb"; torch.save(ck, d / "lfae_unknown_key.pt")
    (d / "empty_folder").mkdir()
    return d


@pytest.fixture(scope="session")
def model():
    return load_lfdm(BUNDLED)


@pytest.fixture
def existing(tmp_path):
    "An output file and a run folder (config, log, checkpoints) that a failing command must not touch."
    out = tmp_path / "out.gif"
    write_video(torch.rand(3, 2, 8, 8), out)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("lfae_train:\n  steps: 2\n")
    (run / "log.csv").write_text("step,total,grad_norm,seconds,it_per_s\n1,0.5,1.0,0.1,10\n2,0.4,1.0,0.2,10\n")
    (run / "checkpoints" / "step_0000002.pt").write_bytes(b"a checkpoint")
    (run / "checkpoints" / "best.pt").write_bytes(b"the best checkpoint")
    return dict(out=out, run=run, before={"out": digest(out), "run": digest(run)})


def assert_untouched(existing):
    assert digest(existing["out"]) == existing["before"]["out"], "the existing output file changed"
    assert digest(existing["run"]) == existing["before"]["run"], "the existing run folder changed"


# ---------------------------------------------------------------- images

@pytest.mark.parametrize("name, needles", [
    ("missing.png", ["not found", "missing.png"]),
    ("empty_folder", ["is a folder", "empty_folder"]),
    ("zero.png", ["empty (0 bytes)", "zero.png"]),
    ("text.png", ["Cannot read", "text.png"]),
    ("text.jpg", ["Cannot read", "text.jpg"]),
    ("half.png", ["Cannot read", "half.png", "complete"]),
    ("notes.txt", ["Cannot read", "notes.txt"]),
])
def test_load_image_rejects_bad_files(files, name, needles):
    expect(lambda: load_image(files / name, size=64), *needles)


def test_load_image_refuses_a_decompression_bomb_without_allocating_it(files):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss                     # KiB on Linux
    expect(lambda: load_image(files / "huge.png"), "huge.png", "too large")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 300_000, "the 20000x20000 image was allocated"


@pytest.mark.parametrize("kw, needles", [(dict(size=0), ["size must be"]), (dict(size=(8, 8, 8)), ["size must be"]),
                                         (dict(size=8, fit="zoom"), ["fit must be", "zoom"])])
def test_load_image_rejects_bad_arguments(files, kw, needles):
    expect(lambda: load_image(files / "ok.png", **kw), *needles)


def _gray(d):
    Image.fromarray(np.full((5, 6), 128, np.uint8), "L").save(d / "gray.png"); return d / "gray.png", [128 / 255] * 3

def _gray16(d):
    Image.fromarray(np.full((5, 6), 32768, np.uint16)).save(d / "gray16.png"); return d / "gray16.png", [32768 / 65535] * 3

def _rgb16(d):
    px = np.array([65535, 32768, 257], ">u2")
    (d / "rgb16.png").write_bytes(png(2, 2, 16, 2, b"".join(b"\x00" + np.tile(px, 2).tobytes() for _ in range(2))))
    return d / "rgb16.png", [1.0, 128 / 255, 1 / 255]                           # Pillow keeps 8 bits of 16-bit RGB

def _rgba(d):
    a = np.zeros((4, 4, 4), np.uint8); a[..., 0] = 255                           # red, fully transparent
    Image.fromarray(a, "RGBA").save(d / "rgba.png"); return d / "rgba.png", [1.0, 1.0, 1.0]   # composited over white

def _half_alpha(d):
    a = np.zeros((4, 4, 4), np.uint8); a[..., 2] = 255; a[..., 3] = 255         # opaque blue
    Image.fromarray(a, "RGBA").save(d / "blue.png"); return d / "blue.png", [0.0, 0.0, 1.0]

def _la(d):
    Image.fromarray(np.stack([np.full((3, 3), 0, np.uint8), np.full((3, 3), 0, np.uint8)], -1), "LA").save(d / "la.png")
    return d / "la.png", [1.0, 1.0, 1.0]                                          # black but transparent: white

def _palette(d):
    im = Image.new("P", (3, 3), 1); im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762); im.save(d / "palette.png")
    return d / "palette.png", [0.0, 1.0, 0.0]

def _bilevel(d):
    Image.new("1", (3, 3), 1).save(d / "bilevel.png"); return d / "bilevel.png", [1.0, 1.0, 1.0]

def _cmyk(d):
    Image.new("CMYK", (3, 3), (0, 0, 0, 0)).save(d / "cmyk.tif"); return d / "cmyk.tif", [1.0, 1.0, 1.0]

def _float(d):
    Image.fromarray(np.full((3, 3), 0.25, np.float32), "F").save(d / "float.tif"); return d / "float.tif", [0.25] * 3


@pytest.mark.parametrize("make", [_gray, _gray16, _rgb16, _rgba, _half_alpha, _la, _palette, _bilevel, _cmyk, _float],
                         ids=lambda f: f.__name__.strip("_"))
def test_load_image_converts_every_mode_to_rgb(tmp_path, make):
    path, rgb = make(tmp_path)
    x = load_image(path)
    assert x.dtype == torch.float32 and x.ndim == 3 and x.shape[0] == 3
    torch.testing.assert_close(x[:, 0, 0], torch.tensor(rgb), atol=1e-4, rtol=0)
    assert x.min() >= 0 and x.max() <= 1


def test_load_image_rgba_background_is_a_choice(tmp_path):
    path, _ = _rgba(tmp_path)
    torch.testing.assert_close(load_image(path, background=0.0)[:, 0, 0], torch.zeros(3))


def test_one_pixel_image_is_upsampled_with_a_warning(tmp_path):
    Image.fromarray(np.array([[[10, 20, 30]]], np.uint8)).save(tmp_path / "dot.png")
    with pytest.warns(ImageResizedWarning, match="dot.png: resized from 1x1 to 64x64"):
        x = load_image(tmp_path / "dot.png", size=64)
    assert x.shape == (3, 64, 64)
    torch.testing.assert_close(x, torch.tensor([10, 20, 30]).view(3, 1, 1).expand(3, 64, 64) / 255, atol=1e-6, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(tmp_path / "dot.png", size=64, warn=False)


# ---------------------------------------------------------------- videos

@pytest.mark.parametrize("name, needles", [
    ("zero.mp4", ["empty (0 bytes)", "zero.mp4"]),
    ("text.mp4", ["Cannot read video", "text.mp4"]),
    ("text.gif", ["Cannot read video", "text.gif"]),   # Pillow's own reason follows, never a plugin install hint
    ("half.mp4", ["Cannot read video", "half.mp4"]),
    ("notes.txt", ["unknown video extension", "notes.txt"]),
    ("missing.mp4", ["not found", "missing.mp4"]),
    ("empty_folder", ["contains no images", "empty_folder"]),
])
def test_read_video_and_count_frames_reject_bad_files(files, name, needles):
    msg = expect(lambda: read_video(files / name, size=16), *needles)
    assert "pip install" not in msg
    if name != "empty_folder": expect(lambda: count_frames(files / name), *needles[1:])


def test_truncated_gif_fails_when_read(files):
    expect(lambda: read_video(files / "half.gif"), "is cut short", "half.gif")
    expect(lambda: count_frames(files / "half.gif"), "is cut short", "half.gif")     # found before training, not mid-run


def test_frame_folders_and_indices(tmp_path, files):
    frames = tmp_path / "frames"; frames.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(frames / "1.png")
    Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(frames / "2.png")
    expect(lambda: read_video(frames), "different sizes", "frames")
    expect(lambda: list_frames(tmp_path / "nowhere"), "not found", "nowhere")
    expect(lambda: read_video(files / "ok.gif", frames=[0, 9]), "has 4 frames", "9")
    expect(lambda: read_video(files / "ok.mp4", frames=[-9]), "has 4 frames", "-9")


@pytest.mark.parametrize("video, kw, needles", [
    (torch.rand(3, 2, 8, 8), dict(name="out.png"), [".gif or .mp4"]),
    (torch.rand(2, 2, 8, 8), {}, ["1 or 3 channels"]),
    (torch.rand(3, 8, 8), {}, ["should have 4 axes"]),
    ((torch.rand(3, 2, 8, 8) * 255).to(torch.uint8), {}, ["float tensor", "uint8"]),
    (torch.full((3, 2, 8, 8), float("nan")), {}, ["NaN"]),
    ([[0.5]], {}, ["tensor", "list"]),
    (torch.rand(3, 2, 8, 8), dict(fps=0), ["fps must be a positive number"]),
    (torch.rand(3, 2, 8, 8), dict(fps=-3), ["fps must be a positive number"]),
    (torch.rand(3, 2, 8, 8), dict(fps=float("nan")), ["fps must be a positive number"]),
    (torch.rand(3, 2, 8, 8), dict(layout="h w c f"), ["layout must be"]),
    (torch.rand(3, 2, 8, 8), dict(fps=60), ["cannot play 60 frames per second", "hundredths of a second", ".mp4"]),
], ids=["extension", "channels", "axes", "uint8", "nan", "list", "fps0", "fps-3", "fps-nan", "layout", "gif-fps60"])
def test_write_video_rejects_bad_input_and_keeps_the_old_file(existing, video, kw, needles):
    out = existing["out"].with_name(kw.pop("name", existing["out"].name))
    expect(lambda: write_video(video, out, **kw), *needles)
    assert_untouched(existing)
    assert not [p.name for p in out.parent.glob(".out*")], "a temporary file was left behind"


@pytest.mark.parametrize("x, pattern, sizes, needles", [
    ([1, 2], "b c h w", {}, ["images should be a tensor", "list"]),
    (torch.zeros(2, 3), "b c h w", {}, ["should have 4 axes", "(2, 3)"]),
    (torch.zeros(2, 4, 8, 8), "b c h w", dict(c=3), ["axis 'c' is 4, expected 3"]),
    (torch.zeros(2, 3, 8, 9), "b c h h", {}, ["axis 'h' is 9, expected 8"]),
])
def test_check_shape_names_the_axis(x, pattern, sizes, needles):
    expect(lambda: check_shape(x, pattern, "images", **sizes), *needles)


# ---------------------------------------------------------------- datasets

def _dataset(root: Path, layout: str, files: Path) -> Path:
    root.mkdir()
    if layout == "class folder without clips": (root / "wave").mkdir()
    if layout == "a stray text file": (root / "wave").mkdir(); (root / "wave" / "notes.txt").write_text("x")
    if layout == "a video at the top": (root / "clip.gif").write_bytes((files / "ok.gif").read_bytes())
    if layout == "only hidden files": (root / ".DS_Store").write_bytes(b"x")
    return root


@pytest.mark.parametrize("layout, needles", [
    ("empty", ["is empty", "ds"]),
    ("only hidden files", ["is empty"]),
    ("class folder without clips", ["Class folder", "wave", "contains no clips"]),
    ("a stray text file", ["notes.txt", "unknown extension"]),
    ("a video at the top", ["clip.gif", "lies directly in the dataset folder"]),
])
def test_video_folder_rejects_bad_layouts(tmp_path, files, layout, needles):
    root = _dataset(tmp_path / "ds", layout, files)
    expect(lambda: VideoFolder(root), *needles)


def test_video_folder_rejects_missing_roots_and_bad_arguments(tmp_path, files):
    expect(lambda: VideoFolder(tmp_path / "nowhere"), "not found", "nowhere")
    expect(lambda: VideoFolder(files / "ok.gif"), "is a file, not a folder", "ok.gif")
    (tmp_path / "ds" / "wave").mkdir(parents=True); (tmp_path / "ds" / "wave" / "a.gif").write_bytes((files / "ok.gif").read_bytes())
    expect(lambda: VideoFolder(tmp_path / "ds", classes=["jump"]), "Class 'jump' has no clips", "wave")
    expect(lambda: VideoFolder(tmp_path / "ds", layout="bogus"), "Unknown layout 'bogus'")
    expect(lambda: VideoFolder(tmp_path / "ds", size=0), "size must be")
    expect(lambda: VideoFolder(tmp_path / "ds", fit="zoom"), "fit must be")
    expect(lambda: VideoFolder(tmp_path / "ds", split="val"), "split must be")
    expect(lambda: VideoFolder(tmp_path / "ds", split="train"), "splits by subject")
    ds = VideoFolder(tmp_path / "ds")
    expect(lambda: ds.read(0, [7]), "out of range", "a.gif")


@pytest.mark.parametrize("clip", ["zero.mp4", "text.gif", "text.mp4", "half.mp4"])
def test_corrupt_clip_in_a_video_folder_is_named_when_read(tmp_path, files, clip):
    (tmp_path / "ds" / "wave").mkdir(parents=True)
    (tmp_path / "ds" / "wave" / clip).write_bytes((files / clip).read_bytes())
    ds = VideoFolder(tmp_path / "ds")                                            # finding clips does not decode them
    expect(lambda: ds.lengths(), clip)
    expect(lambda: ds.read(0, [0]), clip)


@pytest.mark.parametrize("kw, needles", [
    (dict(num_clips=0), ["num_clips must be an integer >= 1"]), (dict(num_clips=None), ["num_clips must be an integer"]),
    (dict(num_clips="many"), ["num_clips", "'many'"]), (dict(num_clips=2.5), ["num_clips", "2.5"]),
    (dict(size=4), ["size must be an integer >= 8"]), (dict(length=1), ["length must be an integer >= 2"]),
    (dict(num_appearances=0), ["num_appearances"]), (dict(split="val"), ["split must be", "'val'"]),
    (dict(actions=["dance"]), ["Unknown action", "dance"]), (dict(actions=[]), ["at least one action"]),
    (dict(seed=-1), ["seed must be an integer from 0 to 2**63 - 1, got -1"]), (dict(seed=2 ** 70), ["seed must be an integer from 0"]),
    (dict(num_clips=10 ** 20), ["num_clips must be an integer from 1 to 2147483647"]),
])
def test_procedural_actions_rejects_bad_arguments(kw, needles):
    expect(lambda: ProceduralActions(**kw), *needles)


def test_procedural_actions_rejects_bad_frames():
    ds = ProceduralActions(num_clips=2, size=16, length=4)
    expect(lambda: ds.read(0, frames=[0, 9]), "has 4 frames", "9")
    expect(lambda: ds.read(0, frames=[]), "non-empty")


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("text, needles", [
    ("lfae:\n  lrr: 1e-4\n", ["Unknown key config.lfae.lrr", "did you mean config.lfae.lr"]),
    ("bogus: 1\n", ["Unknown key config.bogus"]),
    ("dm:\n  unet:\n    dimm: 3\n", ["config.dm.unet.dimm", "did you mean config.dm.unet.dim"]),
    ("lfae_train:\n  steps: many\n", ["config.lfae_train.steps must be int", "'many'"]),
    ("data:\n  size: 1.5\n", ["config.data.size must be int", "1.5"]),
    ("dm:\n  classes: 5\n", ["config.dm.classes must be tuple"]),
    ("lfae: 3\n", ["config.lfae must be a mapping"]),
    ("lfae: [1, 2\n", ["is not valid YAML"]),
    ("lfae:\n\tlr: 1\n", ["is not valid YAML"]),
    ("- 1\n- 2\n", ["must hold a mapping", "list"]),
    ("42\n", ["must hold a mapping", "int"]),
    ("lfae_train:\n  steps: 0\n", ["steps must be an integer >= 1"]),
], ids=["unknown", "unknown-top", "unknown-nested", "type", "float-for-int", "scalar-for-list", "section", "invalid", "tab", "list",
        "scalar", "value"])
def test_config_from_yaml_names_the_problem(tmp_path, text, needles):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    msg = expect(lambda: config_from_yaml(path), *needles)
    if needles[0] in ("is not valid YAML", "must hold a mapping"): assert "run.yaml" in msg


def test_config_from_yaml_missing_or_empty(tmp_path, files):
    expect(lambda: config_from_yaml(tmp_path / "nope.yaml"), "does not exist", "nope.yaml")
    expect(lambda: config_from_yaml(tmp_path), "does not exist")
    assert config_from_yaml(files / "zero.yaml") == preset("tiny")                # an empty file changes nothing


def test_config_from_yaml_binary_file(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01lfae")
    expect(lambda: config_from_yaml(tmp_path / "binary.yaml"), "binary.yaml")


@pytest.mark.parametrize("item, needles", [
    ("lfae.lrr=1", ["Unknown key 'lfae.lrr'", "did you mean 'lr'"]),
    ("bogus=1", ["Unknown key 'bogus'"]),
    ("dm.unet.dimm=3", ["dm.unet.dimm", "did you mean 'dim'"]),
    ("lfae.lr.x=1", ["Unknown key 'lfae.lr.x'"]),
    ("lfae.lr", ["must look like key.path=value"]),
    ("lfae_train.steps=many", ["config.lfae_train.steps must be int", "'many'"]),
    ("lfae_train.steps=1.5", ["config.lfae_train.steps must be int", "1.5"]),
    ("dm.unet.dim=[1, 2]", ["config.dm.unet.dim must be int"]),
    ("data.size=[", ["config.data.size must be int"]),
    ("lfae_train.amp=fp8", ["amp must be", "fp8"]),
    ("lfae.image_size=30", ["image_size 30"]),
    ("dm.classes=[]", ["classes must be a non-empty list"]),
])
def test_apply_overrides_names_the_problem(item, needles):
    expect(lambda: apply_overrides(preset("tiny"), [item]), *needles)


# ---------------------------------------------------------------- checkpoints

BAD_CHECKPOINTS = [
    ("missing.pt", ["does not exist", "missing.pt"]),
    ("empty_folder", ["is a folder; give the checkpoint file in it", "empty_folder"]),
    ("zero.pt", ["empty (0 bytes)", "zero.pt"]),
    ("lfae_truncated.pt", ["cannot be read", "truncated", "lfae_truncated.pt"]),
    ("lfdm_truncated.pt", ["cannot be read", "truncated", "lfdm_truncated.pt"]),
    ("random.pt", ["cannot be read", "random.pt"]),
    ("pickled.pt", ["cannot be read", "pickled.pt"]),
    ("payload.pt", ["holds Python objects other than tensors", "could run code", "payload.pt"]),   # said, and never loaded unsafely
    ("text.png", ["cannot be read", "text.png"]),
    ("foreign.pt", ["not an lfdm checkpoint", "foreign.pt"]),
    ("tensor.pt", ["not an lfdm checkpoint", "tensor.pt"]),
]


@pytest.mark.parametrize("loader", [load_checkpoint, load_lfae, load_lfdm], ids=lambda f: f.__name__)
@pytest.mark.parametrize("name, needles", BAD_CHECKPOINTS, ids=[n for n, _ in BAD_CHECKPOINTS])
def test_checkpoint_loaders_reject_bad_files(files, loader, name, needles):
    expect(lambda: loader(files / name), *needles)


def test_checkpoint_of_the_other_stage(files):
    expect(lambda: load_lfdm(files / "lfae.pt"), "lfae.pt", "checkpoint of the LFAE", "LFDM checkpoint is needed")
    expect(lambda: load_checkpoint(BUNDLED, "lfae"), BUNDLED.name, "checkpoint of the LFDM", "LFAE checkpoint is needed")
    expect(lambda: load_lfae(files / "classifier.pt"), "classifier.pt", "holds no LFAE")
    assert isinstance(load_lfae(BUNDLED), LFAE)                                   # an LFDM file carries its LFAE: fine


def test_checkpoint_whose_weights_do_not_fit_its_config(files):
    expect(lambda: load_lfae(files / "lfae_mismatch.pt"), "lfae_mismatch.pt", "do not fit")
    expect(lambda: load_lfae(files / "lfae_unknown_key.pt"), "Unknown lfae config key 'colour_mode'")


def test_checkpoint_without_a_kind(files):
    expect(lambda: load_lfdm(files / "nokind.pt"), "nokind.pt")


def test_classifier_checkpoint_given_for_an_lfdm(files):
    msg = expect(lambda: load_lfdm(files / "classifier.pt"), "classifier.pt", "LFDM checkpoint is needed")
    assert "stage two" not in msg


# ---------------------------------------------------------------- models

def _img(model, *shape, dtype=torch.float32):
    s = model.lfae.config.image_size
    return torch.rand(*[s if d == "S" else d for d in shape]).to(dtype)


@pytest.mark.parametrize("image, cls, needles", [
    ((1, 3, 32, 32), "wave", ["axis 'h' is 32, expected 64"]),
    ((1, 4, "S", "S"), "wave", ["axis 'c' is 4, expected 3"]),
    ((1, 1, "S", "S"), "wave", ["axis 'c' is 1, expected 3"]),
    (("S", "S"), "wave", ["should have 4 axes"]),
    ((1, 1, 3, "S", "S"), "wave", ["should have 4 axes"]),
    ("uint8", "wave", ["must be a float tensor", "uint8"]),
    ("x255", "wave", ["values must be in [0, 1]"]),
    ("negative", "wave", ["values must be in [0, 1]"]),
    ("numpy", "wave", ["must be a torch tensor", "ndarray"]),
    ((3, "S", "S"), "dance", ["Unknown class 'dance'", "wave, clap"]),
    ((3, "S", "S"), 99, ["Unknown class id 99", "0 to 7"]),
    ((3, "S", "S"), -1, ["Unknown class id -1"]),
    ((3, "S", "S"), True, ["classes must be names or integer ids"]),
    ((3, "S", "S"), None, ["Say which class"]),
    ((3, "S", "S"), torch.tensor([0.5]), ["classes must be names or integer ids", "float"]),
    ((2, 3, "S", "S"), ["wave", "clap", "jump"], ["Got 3 classes for 2 images"]),
], ids=["size", "channels4", "channels1", "2d", "5d", "uint8", "x255", "negative", "numpy", "class", "id99", "id-1", "bool", "none",
        "float-tensor", "count"])
def test_sample_rejects_bad_images_and_classes(model, image, cls, needles):
    if isinstance(image, tuple): x = _img(model, *image)
    else:
        x = _img(model, 3, "S", "S")
        x = {"uint8": (x * 255).to(torch.uint8), "x255": x * 255, "negative": x - 0.5, "numpy": x.numpy()}[image]
    expect(lambda: model.sample(x, cls, steps=1, num_frames=2), *needles)


@pytest.mark.parametrize("kw, needles", [(dict(steps=0), ["sampling steps", "got 0"]), (dict(steps=5000), ["got 5000"]),
                                         (dict(sampler="euler"), ["Unknown sampler 'euler'"]), (dict(guidance=-1), ["guidance must be"])])
def test_sample_rejects_bad_settings(model, kw, needles):
    expect(lambda: model.sample(_img(model, 3, "S", "S"), "wave", **dict(dict(steps=1, num_frames=2), **kw)), *needles)


def test_sample_accepts_float64_images(model):
    video = model.sample(_img(model, 3, "S", "S", dtype=torch.float64), "wave", steps=1, num_frames=2,
                         generator=torch.Generator().manual_seed(0))
    assert video.shape == (1, 3, 2, model.lfae.config.image_size, model.lfae.config.image_size) and video.dtype == torch.float32


@pytest.mark.parametrize("image, cls, needles", [("list", "wave", ["image must be a torch tensor", "got a list"]),
                                                 ("nan", "wave", ["image values must be in [0, 1], without NaN"]),
                                                 ("s", 1.5, ["classes must be a name, an integer id, or a list of them; got 1.5"])],
                         ids=["list", "nan", "float-class"])
def test_sample_rejects_more_bad_input(model, image, cls, needles):
    x = _img(model, 3, "S", "S")
    x = {"list": x.tolist(), "nan": x * float("nan"), "s": x}[image]
    expect(lambda: model.sample(x, cls, steps=1, num_frames=2), *needles)


@pytest.mark.parametrize("call, needles", [
    (lambda m, x: m.lfae.encode(x[:, :, :32]), ["image should have shape", "axis 'h' is 32"]),
    (lambda m, x: m.lfae.encode(x[0]), ["image should have 4 axes"]),
    (lambda m, x: m.lfae.encode(x[:, :1]), ["axis 'c' is 1, expected 3"]),
    (lambda m, x: m.lfae.encode((x * 255).byte()), ["must be a float tensor", "uint8"]),
    (lambda m, x: m.lfae.encode(x.numpy()), ["must be a torch tensor"]),
    (lambda m, x: m.lfae(x[:, :1], x), ["source should have shape"]),
    (lambda m, x: m.lfae(x, x[..., :32]), ["driving should have shape"]),
    (lambda m, x: m.lfae(x, torch.cat([x, x])), ["driving should have shape", "axis 'b' is 2, expected 1"]),
    (lambda m, x: m.lfae.flow(x, [x]), ["driving", "list"]),
    (lambda m, x: m.lfae.decode(m.lfae.encode(x), torch.zeros(1, 16, 16, 1), torch.zeros(1, 1, 16, 16)), ["flow should have shape"]),
], ids=["size", "3d", "channels", "uint8", "numpy", "source", "driving", "batch", "list", "flow"])
def test_lfae_checks_its_inputs(model, call, needles):
    expect(lambda: call(model, _img(model, 1, 3, "S", "S")), *needles)


# The same value checks at every entry point that takes pixels or options: sampling, the training forwards of both stages.
def _clips(model, b=2, f=4):
    s = model.lfae.config.image_size
    return torch.rand(b, 3, f, s, s)


API_CASES = [
    ("sample: meta image", lambda m: m.sample(torch.zeros(3, 64, 64, device="meta"), "wave", steps=1, num_frames=2), ["on the meta device"]),
    ("sample: int generator", lambda m: m.sample(_img(m, 3, "S", "S"), "wave", steps=1, num_frames=2, generator=5),
     ["generator must be a torch.Generator", "got 5"]),
    ("sample: bytes class", lambda m: m.sample(_img(m, 3, "S", "S"), b"jump", steps=1, num_frames=2), ["got bytes b'jump'", ".decode()"]),
    ("forward: NaN pixel", lambda m: m(_clips(m) * float("nan"), ["wave", "clap"]), ["videos values must be in [0, 1]", "NaN"]),
    ("forward: 0..255", lambda m: m(_clips(m) * 255, ["wave", "clap"]), ["videos values must be in [0, 1]", "from 0", "255"]),
    ("forward: uint8", lambda m: m((_clips(m) * 255).byte(), ["wave", "clap"]), ["must be a float tensor", "uint8"]),
    ("forward: meta", lambda m: m(torch.zeros(2, 3, 4, 64, 64, device="meta"), ["wave", "clap"]), ["on the meta device"]),
    ("forward: NaN cache", lambda m: m(states=torch.full((2, 3, 4, 16, 16), float("nan")), features=torch.zeros(2, 128, 16, 16),
                                       classes=["wave", "clap"]), ["cached states must be a float tensor of finite values"]),
    ("lfae losses: 0..255", lambda m: _lfae_losses(m).losses(dict(source=_img(m, 2, 3, "S", "S") * 255, driving=_img(m, 2, 3, "S", "S"))),
     ["source frames values must be in [0, 1]"]),
    ("lfae losses: NaN", lambda m: _lfae_losses(m).losses(dict(source=_img(m, 2, 3, "S", "S"), driving=_img(m, 2, 3, "S", "S") * float("nan"))),
     ["driving frames values must be in [0, 1]", "NaN"]),
]


def _lfae_losses(model):
    from lfdm.lfae import LFAETrainer
    return LFAETrainer(LFAE(model.lfae.config), device="cpu")                 # a trainable copy (the LFDM's own LFAE is frozen)


@pytest.mark.parametrize("name, call, needles", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_entry_points_check_values_and_types(model, name, call, needles):
    expect(lambda: call(model), *needles)


def test_numpy_integers_are_integers_everywhere(model):
    video = model.sample(_img(model, 3, "S", "S"), np.int64(3), steps=np.int64(1), num_frames=np.int64(2), generator=torch.Generator().manual_seed(0))
    assert video.shape[2] == 2


def test_a_bad_sampler_stored_in_a_checkpoint_is_said_to_come_from_it(tmp_path):
    def edit(ck): ck["config"]["sampler"] = "euler"
    path = _edited_checkpoint(tmp_path, "sampler.pt", edit)
    expect(lambda: load_lfdm(path), "Checkpoint", "sampler.pt", "sampler must be 'ddim' or 'ddpm', got 'euler'")

def test_lfae_casts_float64_images(model):
    x = _img(model, 1, 3, "S", "S")
    with torch.no_grad():
        torch.testing.assert_close(model.lfae.encode(x.double()).bottleneck, model.lfae.encode(x).bottleneck)
        assert model.lfae(x.double(), x.double()).generated.dtype == torch.float32


# ---------------------------------------------------------------- train()

def test_train_resume_errors_write_nothing(tmp_path, files):
    cfg = apply_overrides(preset("tiny"), ["lfae_train.device=cpu", "dm_train.device=cpu"])
    expect(lambda: train("lfae", cfg, tmp_path / "new", resume=True, progress=False), "No checkpoint to resume from", "new")
    expect(lambda: train("lfae", cfg, tmp_path / "new", resume=BUNDLED, progress=False), "checkpoint of the LFDM", "LFAE checkpoint is needed")
    expect(lambda: train("dm", cfg, tmp_path / "new", resume=files / "lfae.pt", progress=False), "checkpoint of the LFAE",
           "LFDM checkpoint is needed")
    expect(lambda: train("dm", cfg, tmp_path / "new", resume=BUNDLED, progress=False), "holds weights only", "--lfae")
    expect(lambda: train("decoder", cfg, tmp_path / "new", resume=files / "lfae_stage.pt", progress=False),
           "written by stage 'lfae', not 'decoder'")
    expect(lambda: train("dm", cfg, tmp_path / "new", lfae=files / "lfae_truncated.pt", progress=False), "lfae_truncated.pt", "cannot be read")
    expect(lambda: train("dm", cfg, tmp_path / "new", progress=False), "needs the trained stage-one model")
    expect(lambda: train("decoder", cfg, tmp_path / "new", progress=False), "needs a trained LFAE")
    expect(lambda: train("gan", cfg, tmp_path / "new", progress=False), "stage must be")
    assert not (tmp_path / "new").exists()


def test_train_empty_data_folder_is_named(tmp_path, files):
    cfg = apply_overrides(preset("tiny"), ["lfae_train.device=cpu", f"data.dataset={files / 'empty_folder'}"])
    expect(lambda: train("lfae", cfg, tmp_path / "run", progress=False), "empty_folder", "is empty")


@pytest.mark.parametrize("stage", ["lfae", "dm"])
def test_train_with_bad_data_leaves_the_run_folder_untouched(existing, files, stage):
    cfg = apply_overrides(preset("tiny"), ["lfae_train.device=cpu", "dm_train.device=cpu", f"data.dataset={files / 'empty_folder'}"])
    expect(lambda: train(stage, cfg, existing["run"], lfae=BUNDLED, progress=False), "empty_folder")
    assert_untouched(existing)


# ---------------------------------------------------------------- the command line

@pytest.mark.parametrize("args, needles", [
    (["--image", "{files}/text.png", "--class", "wave"], ["Cannot read", "text.png"]),
    (["--image", "{files}/zero.png", "--class", "wave"], ["empty (0 bytes)", "zero.png"]),
    (["--image", "{files}/missing.png", "--class", "wave"], ["not found", "missing.png"]),
    (["--image", "{files}/huge.png", "--class", "wave"], ["too large", "huge.png"]),
    (["--image", STILL, "--class", "dance"], ["Unknown class 'dance'", "wave"]),
    (["--image", STILL, "--class", "wave", "--checkpoint", "{files}/lfdm_truncated.pt"], ["cannot be read", "lfdm_truncated.pt"]),
    (["--image", STILL, "--class", "wave", "--checkpoint", "{files}/lfae.pt"], ["checkpoint of the LFAE", "lfae.pt"]),
    (["--image", STILL, "--class", "wave", "--checkpoint", "{files}/missing.pt"], ["does not exist", "missing.pt"]),
    (["--image", STILL, "--class", "wave", "--out", "{out_png}"], ["must end in .gif or .mp4", "out.png"]),
    (["--image", STILL, "--class", "wave", "--steps", "0"], ["sampling steps", "got 0"]),
    (["--image", STILL, "--class", "wave", "--guidance", "-1"], ["guidance must be"]),
    (["--image", STILL, "--class", "wave", "--device", "tpu"], ["Unknown device 'tpu'"]),
    (["--image", STILL, "--class", "wave", "--steps", "1", "--fps", "0"], ["fps must be a positive number"]),
    (["--image", STILL, "--class", "wave", "--fps", "120"], ["A GIF cannot play 120 frames per second"]),
    (["--image", STILL, "--class", "wave", "--eta", "2"], ["eta (--eta) must be a finite number"]),
], ids=["text-image", "zero-image", "missing-image", "huge-image", "class", "truncated-ckpt", "lfae-ckpt", "missing-ckpt", "extension",
        "steps", "guidance", "device", "fps", "gif-fps120", "eta"])
def test_cli_sample_errors_keep_the_output(files, existing, args, needles):
    out = existing["out"]
    args = [str(a).format(files=files, out_png=out.with_suffix(".png")) for a in args]
    if "--out" not in args: args += ["--out", out]
    expect_cli_error("sample", *args, needles=needles)
    assert_untouched(existing)
    assert not out.with_suffix(".png").exists()


@pytest.mark.parametrize("make", [_rgba, _gray16, _palette], ids=["rgba", "gray16", "palette"])
def test_cli_sample_accepts_unusual_images(tmp_path, make):
    path, _ = make(tmp_path)
    code, out, err = cli("sample", "--image", path, "--class", "wave", "--steps", "1", "--out", tmp_path / "v.gif")
    assert code == 0, err
    assert read_video(tmp_path / "v.gif").shape[1] > 1


TRAIN_ERRORS = [
    ("train-lfae", ["--config", "{tmp}/unknown.yaml"], ["Unknown key config.lfae.lrr"]),
    ("train-lfae", ["--config", "{tmp}/missing.yaml"], ["does not exist", "missing.yaml"]),
    ("train-lfae", ["--set", "lfae.bogus=1"], ["Unknown key 'lfae.bogus'"]),
    ("train-lfae", ["--set", "lfae_train.steps=many"], ["lfae_train.steps must be int"]),
    ("train-lfae", ["--set", "lfae.lr"], ["must look like key.path=value"]),
    ("train-dm", ["--config", "{tmp}/unknown.yaml", "--lfae", BUNDLED], ["Unknown key config.lfae.lrr"]),
    ("train-dm", ["--set", "dm.unet.dimm=3", "--lfae", BUNDLED], ["dm.unet.dimm"]),
    ("train-dm", ["--set", "dm_train.amp=fp8", "--lfae", BUNDLED], ["amp must be", "fp8"]),
    ("train-dm", ["--lfae", "{files}/lfae_truncated.pt"], ["cannot be read", "lfae_truncated.pt"]),
    ("train-dm", ["--lfae", "{files}/zero.pt"], ["empty (0 bytes)", "zero.pt"]),
    ("train-dm", ["--lfae", "{files}/classifier.pt"], ["holds no LFAE", "classifier.pt"]),
    ("train-dm", [], ["--lfae"]),
    ("finetune-decoder", ["--config", "{tmp}/list.yaml", "--lfae", BUNDLED], ["must hold a mapping", "list.yaml"]),
    ("finetune-decoder", ["--set", "lfae_train.bogus=1", "--lfae", BUNDLED], ["Unknown key 'lfae_train.bogus'"]),
    ("finetune-decoder", ["--lfae", "{files}/lfdm_truncated.pt"], ["cannot be read", "lfdm_truncated.pt"]),
    ("finetune-decoder", [], ["--lfae"]),
]


@pytest.mark.parametrize("command, args, needles", TRAIN_ERRORS, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(TRAIN_ERRORS)])
def test_cli_train_errors_keep_the_run(tmp_path, files, existing, command, args, needles):
    (tmp_path / "unknown.yaml").write_text("lfae:\n  lrr: 1e-4\n"); (tmp_path / "list.yaml").write_text("- 1\n")
    args = [str(a).format(tmp=tmp_path, files=files) for a in args]
    expect_cli_error(command, "--run-dir", existing["run"], *args, *CPU, needles=needles)
    assert_untouched(existing)


@pytest.mark.parametrize("command, args, needles", [
    ("train-lfae", ["--resume"], ["No checkpoint to resume from"]),
    ("train-lfae", ["--resume", BUNDLED], ["checkpoint of the LFDM", "LFAE checkpoint is needed"]),
    ("train-lfae", ["--resume", "{files}/lfae_truncated.pt"], ["cannot be read", "lfae_truncated.pt"]),
    ("train-dm", ["--resume"], ["No checkpoint to resume from"]),
    ("train-dm", ["--resume", "{files}/lfae.pt"], ["checkpoint of the LFAE", "LFDM checkpoint is needed"]),
    ("train-dm", ["--resume", BUNDLED], ["holds weights only"]),
    ("finetune-decoder", ["--resume"], ["No checkpoint to resume from"]),
    ("finetune-decoder", ["--resume", "{files}/lfae_stage.pt"], ["written by stage 'lfae', not 'decoder'"]),
], ids=["lfae-none", "lfae-other-stage", "lfae-truncated", "dm-none", "dm-other-stage", "dm-weights-only", "decoder-none",
        "decoder-other-stage"])
def test_cli_resume_errors_create_nothing(tmp_path, files, command, args, needles):
    args = [str(a).format(files=files) for a in args]
    expect_cli_error(command, "--run-dir", tmp_path / "new", *args, *CPU, needles=needles)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command, args, needles", [
    ("train-lfae", ["--init", "{files}/lfae_truncated.pt"], ["cannot be read", "lfae_truncated.pt"]),
    ("train-lfae", ["--init", BUNDLED], ["checkpoint of the LFDM", "LFAE checkpoint is needed"]),
    ("train-dm", ["--init", "{files}/lfae.pt"], ["checkpoint of the LFAE", "LFDM checkpoint is needed"]),
    ("train-dm", ["--init", "{files}/lfdm_truncated.pt"], ["cannot be read", "lfdm_truncated.pt"]),
], ids=["lfae-truncated", "lfae-other-stage", "dm-other-stage", "dm-truncated"])
def test_cli_init_errors_keep_the_run(files, existing, command, args, needles):
    assert has_option(command, "--init"), f"lfdm {command} has lost its --init option"
    args = [str(a).format(files=files) for a in args]
    expect_cli_error(command, "--run-dir", existing["run"], *args, *CPU, needles=needles)
    assert_untouched(existing)


@pytest.mark.parametrize("command, args", [("train-lfae", ["--set", "data.dataset={files}/empty_folder"]),
                                           ("finetune-decoder", ["--data", "{files}/empty_folder", "--lfae", BUNDLED])],
                         ids=["train-lfae", "finetune-decoder"])
def test_cli_empty_data_folder_is_named(tmp_path, files, command, args):
    args = [str(a).format(files=files) for a in args]
    expect_cli_error(command, "--run-dir", tmp_path / "new", *args, *CPU, needles=["empty_folder", "is empty"])


def test_cli_make_dataset_refuses_existing_folders(tmp_path, existing):
    (tmp_path / "file.txt").write_text("x")
    expect_cli_error("make-dataset", existing["run"], "--clips", "2", "--size", "16", "--length", "4", needles=["already exists", "run"])
    expect_cli_error("make-dataset", tmp_path / "file.txt", "--clips", "2", needles=["already exists", "file.txt"])
    expect_cli_error("make-dataset", tmp_path / "new", "--clips", "0", needles=["num_clips must be an integer >= 1"])
    expect_cli_error("make-dataset", tmp_path / "new", "--size", "20", "--format", "mp4", needles=["multiple of 16"])
    assert_untouched(existing)
    assert (tmp_path / "file.txt").read_text() == "x" and not (tmp_path / "new").exists()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("lfae, needles", [
    ("foreign.pt", ["is not the released LFAE checkpoint", "foreign.pt"]),
    ("text.png", ["cannot be read", "text.png"]),
    ("zero.pt", ["zero.pt"]),
    ("missing.pth", ["does not exist", "missing.pth"]),
    ("lfae.pt", ["already an lfdm checkpoint"]),
])
def test_cli_convert_official_refuses_other_files(files, existing, lfae, needles):
    target = existing["run"] / "checkpoints" / "best.pt"
    expect_cli_error("convert-official", "--lfae", files / lfae, "--out", target, needles=needles)
    assert_untouched(existing)


def test_cli_usage_errors():
    code, _, err = cli("bogus")
    assert code == 2 and "invalid choice" in err
    code, _, err = cli("sample", "--class", "wave")
    assert code == 2 and "--image" in err
    assert cli()[0] == 2


# ---------------------------------------------------------------- the real console script

CONSOLE = {
    "sample-bad-image": (["sample", "--image", "{files}/text.png", "--class", "wave", "--out", "{tmp}/out.gif"], "text.png"),
    "sample-truncated": (["sample", "--image", STILL, "--class", "wave", "--checkpoint", "{files}/lfdm_truncated.pt",
                          "--out", "{tmp}/out.gif"], "lfdm_truncated.pt"),
    "train-unknown-key": (["train-lfae", "--run-dir", "{tmp}/run", "--set", "lfae.lrr=1", *CPU], "lfae.lrr"),
}


@pytest.fixture(scope="session")
def console(files, tmp_path_factory):
    "Run the console-script cases at the same time (each pays for importing torch): name -> (exit code, stderr, tmp)."
    assert LFDM_BIN.exists(), f"no console script at {LFDM_BIN}: install lfdm (pip install -e .) in this environment"
    procs = {}
    for name, (args, _) in CONSOLE.items():
        tmp = tmp_path_factory.mktemp(name)
        (tmp / "out.gif").write_bytes(b"keep me")
        procs[name] = (subprocess.Popen([str(LFDM_BIN), *[str(a).format(files=files, tmp=tmp) for a in args]], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=ENV), tmp)
    return {name: (p.wait(timeout=300), p.communicate()[1], tmp) for name, (p, tmp) in procs.items()}


@pytest.mark.parametrize("name", list(CONSOLE))
def test_console_script_exits_2_without_traceback(console, name):
    code, err, tmp = console[name]
    assert code == 2, err
    assert "Traceback" not in err and f"lfdm {CONSOLE[name][0][0]}: error:" in err and CONSOLE[name][1] in err, err
    assert (tmp / "out.gif").read_bytes() == b"keep me" and not (tmp / "run").exists()


# ---------------------------------------------------------------- evaluation (10_eval, being written)

def test_eval_python_api_rejects_bad_checkpoints(files, tmp_path):
    import lfdm.eval as ev
    out = tmp_path / "eval"; out.mkdir(); (out / "metrics.json").write_text("{}")
    before = digest(out)
    expect(lambda: ev.evaluate(files / "lfdm_truncated.pt", out_dir=out, log=False), "lfdm_truncated.pt", "cannot be read")
    expect(lambda: ev.evaluate(files / "lfae.pt", out_dir=out, log=False), "lfae.pt", "LFDM checkpoint is needed")
    expect(lambda: ev.load_motion_classifier(files / "zero.pt"), "zero.pt", "empty")
    expect(lambda: ev.load_motion_classifier(BUNDLED), BUNDLED.name, "MOTION-CLASSIFIER checkpoint is needed")
    assert digest(out) == before


@pytest.mark.parametrize("checkpoint, needles", [("lfdm_truncated.pt", ["cannot be read", "lfdm_truncated.pt"]),
                                                 ("lfae.pt", ["LFDM checkpoint is needed", "lfae.pt"]),
                                                 ("missing.pt", ["does not exist", "missing.pt"])])
def test_cli_eval_rejects_bad_checkpoints(files, existing, checkpoint, needles):
    assert "eval" in subcommands(), "`lfdm eval` is missing from lfdm/cli.py"
    expect_cli_error("eval", "--checkpoint", files / checkpoint, "--out", existing["run"], needles=needles)
    assert_untouched(existing)


# ================================================================ "portable and safe": checked before any work
# Each class below is built for the class, not the case: hostile values of every kind, through the Python API and the command line.
# Sampling is never reached in the refusal tests: the model loader (or `evaluate`) is replaced by one that fails the test if called.

import math
import re
import signal
import shutil
import time
from unittest import mock

import lfdm.cli as lfdm_cli
from lfdm.core import check_output_path


def _must_not_load(*a, **kw): raise AssertionError("the model was loaded: the option should have been refused before any work")


@pytest.fixture
def no_work():
    "Fail the test if a command loads a model or starts an evaluation."
    with mock.patch.object(lfdm_cli, "load_lfdm", _must_not_load), mock.patch("lfdm.eval.evaluate", _must_not_load):
        yield


def expect_one_line_cli_error(*args, needles=()):
    "`expect_cli_error`, and stderr is exactly one line."
    err = expect_cli_error(*args, needles=needles)
    assert len(err.strip().splitlines()) == 1, f"not one line: {err}"
    return err


def _no_temporaries(folder: Path):
    left = [p.name for p in Path(folder).iterdir() if p.name.startswith(".") and (p.suffix in (".gif", ".mp4") or "partial" in p.name)]
    assert not left, f"temporary files left behind: {left}"


# ---------------------------------------------------------------- output paths

def _bad_outputs(tmp: Path) -> list:
    "(path, words the message must contain) for hostile output paths; builds what they need under `tmp`."
    (tmp / "a_folder.gif").mkdir(exist_ok=True)
    (tmp / "notes.txt").write_text("a file")
    link = tmp / "to_proc"
    if not link.exists(): link.symlink_to("/proc")
    return [
        (tmp, ["is an existing folder"]), (tmp / "a_folder.gif", ["is an existing folder"]),
        (tmp / "notes.txt" / "out.gif", ["notes.txt is a file, not a folder"]),
        (tmp / "notes.txt" / "deeper" / "still" / "out.mp4", ["notes.txt is a file, not a folder"]),
        (Path("/proc/out.gif"), ["inside /proc"]), (Path("/proc/self/out.gif"), ["inside /proc"]), (Path("/sys/out.gif"), ["inside /sys"]),
        (link / "out.gif", ["inside /proc"]),                                                  # a symlink does not hide /proc
        (tmp / "out.png", ["must end in .gif or .mp4"]), (tmp / "out.txt", ["must end in .gif or .mp4"]),
        (tmp / "out", ["must end in .gif or .mp4", "no extension"]), (tmp / "out.gif.bak", ["must end in .gif or .mp4"]),
        (tmp / ("x" * 300 + ".gif"), ["too long"]),
    ]


def test_check_output_path_refuses_each_bad_path(tmp_path):
    before = digest(tmp_path)
    for path, needles in _bad_outputs(tmp_path):
        before = digest(tmp_path)
        expect(lambda: check_output_path(path), str(path)[:60], *needles)
        assert digest(tmp_path) == before, f"checking {path} changed the folder"
    expect(lambda: check_output_path(""), "empty")
    expect(lambda: check_output_path(str(tmp_path / "a\x00.gif")), "NUL byte")
    expect(lambda: check_output_path("/dev/null", suffixes=None), "/dev/null", "not a regular file")
    expect(lambda: check_output_path(tmp_path / "notes.txt", folder=True), "notes.txt", "is a file, not a folder")
    expect(lambda: check_output_path(Path("/proc/run"), folder=True), "inside /proc")
    assert check_output_path(tmp_path / "new" / "deeper" / "ok.GIF") == tmp_path / "new" / "deeper" / "ok.GIF"   # creatable: fine
    assert not (tmp_path / "new").exists(), "the check created a folder"


def test_check_output_path_full_disk_and_unwritable_folder(tmp_path):
    full = shutil._ntuple_diskusage(10**9, 10**9 - 10, 10)
    with mock.patch("lfdm.core.shutil.disk_usage", return_value=full):
        expect(lambda: check_output_path(tmp_path / "out.gif"), str(tmp_path), "full", "10 bytes free")
    with mock.patch("lfdm.core.os.access", return_value=False):
        expect(lambda: check_output_path(tmp_path / "sub" / "out.gif"), str(tmp_path), "not writable")


def test_read_only_folder_is_refused_exactly_when_writing_really_fails(tmp_path):
    "A chmod 555 folder: refused for normal users; the superuser (tests often run as root) may write there, so it is then accepted."
    ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o555)
    try:
        try: (ro / "probe").write_bytes(b"x"); (ro / "probe").unlink(); writable = True
        except OSError: writable = False
        if writable: assert check_output_path(ro / "out.gif") == ro / "out.gif"
        else: expect(lambda: check_output_path(ro / "out.gif"), str(ro), "not writable")
    finally: ro.chmod(0o755)


@pytest.mark.parametrize("command", ["demo", "sample"])
def test_cli_bad_out_paths_are_refused_before_sampling(tmp_path, existing, no_work, command):
    for path, needles in _bad_outputs(tmp_path):
        before = digest(tmp_path)
        args = ["--image", STILL, "--class", "wave"] if command == "sample" else []
        expect_one_line_cli_error(command, *args, "--out", path, "--steps", "1", needles=[*needles, str(path)[:60]])
        assert digest(tmp_path) == before
    assert_untouched(existing)


def test_cli_full_disk_is_refused_before_sampling(existing, no_work):
    with mock.patch("lfdm.core.shutil.disk_usage", return_value=shutil._ntuple_diskusage(10**9, 10**9, 0)):
        expect_one_line_cli_error("demo", "--out", existing["out"], needles=["full", str(existing["out"].parent)])
    assert_untouched(existing)


def test_write_video_refuses_bad_paths_and_keeps_files(tmp_path):
    clip = torch.rand(3, 2, 8, 8)
    for path, needles in _bad_outputs(tmp_path):
        before = digest(tmp_path)
        expect(lambda: write_video(clip, path), *needles)
        assert digest(tmp_path) == before


def test_other_commands_check_their_output_folders(tmp_path, existing, no_work):
    (tmp_path / "notes.txt").write_text("x")
    expect_one_line_cli_error("eval", "--out", tmp_path / "notes.txt", needles=["notes.txt", "is a file, not a folder"])
    expect_one_line_cli_error("eval", "--out", "/proc/eval", needles=["inside /proc"])
    expect_one_line_cli_error("eval", "--out", tmp_path / "notes.txt" / "eval", needles=["notes.txt is a file"])
    expect_one_line_cli_error("convert-official", "--lfae", BUNDLED, "--out", "/proc/x.pt", needles=["inside /proc"])
    expect_one_line_cli_error("convert-official", "--lfae", BUNDLED, "--out", tmp_path, needles=["is an existing folder"])
    for command in ["train-lfae", "train-dm", "finetune-decoder"]:
        expect_one_line_cli_error(command, "--run-dir", tmp_path / "notes.txt", *CPU, needles=["notes.txt", "is a file, not a folder"])
        expect_one_line_cli_error(command, "--run-dir", "/proc/run", *CPU, needles=["inside /proc"])
    assert (tmp_path / "notes.txt").read_text() == "x"
    assert_untouched(existing)


# ---------------------------------------------------------------- numeric options

BAD_SEEDS = ["-1", "-9999999999999999999999", str(2**63), str(2**64), str(10**40)]
BAD_FPS = ["0", "-1", "1e-9", "0.05", "121", "1e9", "nan", "inf", "-inf"]
BAD_STEPS = ["0", "-1", "-1000"]
BAD_GUIDANCE = ["nan", "inf", "-inf", "-1", "-0.5", "1e300", "1000"]


def _cases(*groups):
    return [(option, value, needle) for option, values, needle in groups for value in values]


DEMO_OPTIONS = _cases(("--seed", BAD_SEEDS, "seed must be an integer from 0 to 2**63 - 1"),
                      ("--fps", BAD_FPS, "fps must be a positive number from 0.1 to 120"),
                      ("--steps", BAD_STEPS, "sampling steps (--steps) must be an integer >= 1"))
SAMPLE_OPTIONS = DEMO_OPTIONS + _cases(("--guidance", BAD_GUIDANCE, "guidance must be a finite number from 0 to 100"))


@pytest.mark.parametrize("option, value, needle", DEMO_OPTIONS, ids=[f"{o}={v}" for o, v, _ in DEMO_OPTIONS])
def test_cli_demo_refuses_out_of_range_options_before_work(existing, no_work, option, value, needle):
    expect_one_line_cli_error("demo", "--out", existing["out"], f"{option}={value}", needles=[needle])   # = : argparse reads '-inf' as a flag
    assert_untouched(existing)


@pytest.mark.parametrize("option, value, needle", SAMPLE_OPTIONS, ids=[f"{o}={v}" for o, v, _ in SAMPLE_OPTIONS])
def test_cli_sample_refuses_out_of_range_options_before_work(existing, no_work, option, value, needle):
    expect_one_line_cli_error("sample", "--image", STILL, "--class", "wave", "--out", existing["out"], f"{option}={value}", needles=[needle])
    assert_untouched(existing)


EVAL_OPTIONS = _cases(("--seed", BAD_SEEDS, "seed must be an integer"), ("--steps", BAD_STEPS, "sampling steps"),
                      ("--guidance", BAD_GUIDANCE, "guidance must be a finite number"),
                      ("--clips-per-class", ["0", "-3", "100000"], "--clips-per-class must be an integer"),
                      ("--stage1-clips", ["-1", "10000000"], "--stage1-clips must be an integer"))


@pytest.mark.parametrize("option, value, needle", EVAL_OPTIONS, ids=[f"{o}={v}" for o, v, _ in EVAL_OPTIONS])
def test_cli_eval_refuses_out_of_range_options_before_work(existing, no_work, option, value, needle):
    expect_one_line_cli_error("eval", "--out", existing["run"], f"{option}={value}", needles=[needle])
    assert_untouched(existing)


@pytest.mark.parametrize("kw, needle", [
    *[(dict(seed=s), "seed must be an integer") for s in (-1, 2**63, 2**70, 1.5, "0", True, None)],
    *[(dict(fps=f), "fps must be a positive number") for f in (0, 1e-9, 121, math.nan, math.inf, "8", None)],
    *[(dict(steps=s), "sampling steps") for s in (0, -5, 2.5, "10", True)],
], ids=lambda v: repr(v) if not isinstance(v, dict) else "-".join(f"{k}={v!r}" for k, v in v.items()))
def test_python_demo_and_sample_refuse_bad_options_before_work(existing, no_work, kw, needle):
    expect(lambda: lfdm_cli.demo(existing["out"], **kw), needle)
    expect(lambda: lfdm_cli.sample(STILL, "wave", existing["out"], **kw), needle)
    assert_untouched(existing)


@pytest.mark.parametrize("guidance", [math.nan, math.inf, -math.inf, -1.0, 1e300, "2", True], ids=repr)
def test_lfdm_sample_refuses_bad_guidance_naming_it(model, guidance):
    msg = expect(lambda: model.sample(_img(model, 3, "S", "S"), "wave", guidance=guidance, steps=1, num_frames=2), "guidance must be")
    assert "guidance" in msg


@pytest.mark.parametrize("kw, needle", [(dict(steps=2.5), "sampling steps"), (dict(steps=True), "sampling steps"),
                                        (dict(steps=-1), "sampling steps"), (dict(num_frames=10**5), "num_frames"),
                                        (dict(num_frames=0), "num_frames"), (dict(num_frames="16"), "num_frames")], ids=repr)
def test_lfdm_sample_refuses_bad_counts(model, kw, needle):
    expect(lambda: model.sample(_img(model, 3, "S", "S"), "wave", **dict(dict(steps=1, num_frames=2), **kw)), needle)


# ---------------------------------------------------------------- load_image: size and EXIF orientation

@pytest.mark.parametrize("size", ["64", b"64", "64x64", "", 64.5, math.nan, True, (64,), (64, 64, 3), (64, "64"), ["8", "8"],
                                  (0, 8), (8, -1), -1, 0, 10**6, (10**6, 8), {"h": 8}, object()], ids=lambda s: "object()" if type(s) is object else repr(s))
def test_load_image_refuses_bad_sizes(files, size):
    msg = expect(lambda: load_image(files / "ok.png", size=size), "size must be")
    if isinstance(size, str): assert "string" in msg
    expect(lambda: load_image(files / "missing.png", size=size), "size must be")      # checked before the file is read


def test_load_image_accepts_good_sizes(files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageResizedWarning)
        for size, shape in [(8, (8, 8)), (np.int64(8), (8, 8)), ((4, 12), (4, 12)), ([12, 4], (12, 4)), (16.0, (16, 16))]:
            assert load_image(files / "ok.png", size=size).shape[1:] == shape, size


def _exif_expected(a: np.ndarray, tag: int) -> np.ndarray:
    "What a viewer shows for stored pixels `a` (h w c) with EXIF orientation `tag` (the EXIF 2.3 table, written independently)."
    return {1: lambda x: x, 2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
            5: lambda x: x.transpose(1, 0, 2), 6: lambda x: np.rot90(x, -1), 7: lambda x: np.rot90(x, 2).transpose(1, 0, 2),
            8: lambda x: np.rot90(x, 1)}[tag](a)


@pytest.mark.parametrize("ext", ["png", "webp"])
@pytest.mark.parametrize("tag", range(1, 9))
def test_load_image_applies_exif_orientation(tmp_path, ext, tag):
    stored = np.random.default_rng(tag).integers(0, 256, (3, 5, 3), dtype=np.uint8)     # 3 rows x 5 columns, no symmetry
    exif = Image.Exif(); exif[274] = tag
    path = tmp_path / f"photo.{ext}"
    Image.fromarray(stored).save(path, exif=exif, **({"lossless": True} if ext == "webp" else {}))
    x = load_image(path)
    want = torch.from_numpy(np.ascontiguousarray(_exif_expected(stored, tag))).permute(2, 0, 1).float() / 255
    assert tuple(x.shape) == tuple(want.shape), (tag, x.shape, want.shape)
    torch.testing.assert_close(x, want, atol=1e-6, rtol=0)


def test_load_image_phone_jpeg_is_upright(tmp_path):
    "A landscape sensor image with orientation 6 (a portrait photo from a phone) becomes portrait, its top-left block at the top-right."
    a = np.zeros((48, 64, 3), np.uint8); a[:16, :16] = (255, 0, 0)
    exif = Image.Exif(); exif[274] = 6
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    x = load_image(tmp_path / "phone.jpg")
    assert x.shape == (3, 64, 48)
    assert x[0, :16, -16:].mean() > 0.9 and x[0, :16, :16].mean() < 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageResizedWarning)
        assert load_image(tmp_path / "phone.jpg", size=32, fit="pad").shape == (3, 32, 32)


def test_load_image_with_a_broken_exif_block_still_loads(tmp_path):
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "odd.png", exif=b"Exif\x00\x00garbage")
    assert load_image(tmp_path / "odd.png").shape[0] == 3


# ---------------------------------------------------------------- write_video: float range

@pytest.mark.parametrize("make", [lambda v: v * 255, lambda v: v + 0.01, lambda v: v - 0.2, lambda v: torch.full_like(v, 255.0),
                                  lambda v: v * 1e30, lambda v: v.double() * 2, lambda v: v.half() * 100],
                         ids=["0..255", "over-by-0.01", "negative", "all-255", "huge", "float64x2", "float16x100"])
def test_write_video_refuses_floats_outside_0_1(existing, make):
    torch.manual_seed(0)
    video = make(torch.rand(3, 2, 8, 8).clamp(0.001, 0.999))
    msg = expect(lambda: write_video(video, existing["out"]), "must be in [0, 1]", "float frames", "go from")
    low, high = (float(x) for x in re.search(r"go from (\S+) to (\S+?);", msg).groups())     # the range found, in the message
    assert math.isclose(low, float(video.min()), rel_tol=1e-3) and math.isclose(high, float(video.max()), rel_tol=1e-3), msg
    assert "255" in msg                                                              # says how to fix 8-bit values
    assert_untouched(existing)
    _no_temporaries(existing["out"].parent)


def test_write_video_tolerates_rounding(tmp_path):
    v = torch.rand(3, 2, 8, 8)
    v[0, 0, 0, 0], v[1, 0, 0, 0] = 1 + 5e-5, -5e-5
    write_video(v, tmp_path / "ok.gif")
    assert read_video(tmp_path / "ok.gif").shape == (3, 2, 8, 8)


# ---------------------------------------------------------------- checkpoints: stored sizes and finite weights

def _edited_checkpoint(tmp: Path, name: str, edit) -> Path:
    "The bundled checkpoint, loaded safely, edited by `edit(ckpt)`, saved to tmp/name."
    ck = torch.load(BUNDLED, map_location="cpu", weights_only=True)
    edit(ck)
    torch.save(ck, tmp / name)
    return tmp / name


def _set(where, key, value):
    def edit(ck):
        d = {"config": lambda: ck["config"], "unet": lambda: ck["config"]["unet"], "lfae": lambda: ck["lfae"]["config"]}[where]()
        d[key] = value
    return edit


HUGE_CONFIGS = [
    ("config", "num_frames", 100_000), ("config", "num_frames", 10**12), ("config", "num_frames", -5), ("config", "num_frames", "16"),
    ("config", "num_frames", 16.5), ("config", "num_frames", None), ("config", "timesteps", 10**9), ("config", "sampling_steps", 10**9),
    ("config", "batch_size", 10**9), ("unet", "dim", 10**6), ("unet", "dim_mults", [1, 2, 10**4]), ("unet", "dim_mults", list(range(1, 40))),
    ("unet", "dim_mults", "124"), ("unet", "attn_heads", 10**5), ("unet", "attn_dim_head", 10**6), ("unet", "cond_dim", 10**7),
    ("unet", "cond_channels", 10**6), ("unet", "channels", 10**5), ("unet", "num_frames", 10**6), ("unet", "rel_pos_buckets", 10**8),
    ("unet", "init_kernel_size", 1001), ("unet", "num_classes", 10**9), ("lfae", "image_size", 10**6), ("lfae", "num_regions", 10**6),
    ("lfae", "max_features", 10**7), ("lfae", "block_expansion", True), ("lfae", "num_down_blocks", 100),
    ("lfae", "region_max_features", 10**8), ("lfae", "scale_factor", 1e6), ("lfae", "scale_factor", math.nan),
    ("config", "eta", "1"), ("config", "eta", 5.0), ("config", "eta", math.nan), ("config", "guidance", math.inf),
    ("lfae", "temperature", 0.0), ("lfae", "temperature", math.nan), ("lfae", "occlusion_bias_init", math.nan),
    ("config", "snr_gamma", math.inf),
]


@pytest.mark.parametrize("where, key, value", HUGE_CONFIGS, ids=[f"{w}.{k}={v!r}"[:40] for w, k, v in HUGE_CONFIGS])
def test_checkpoint_with_absurd_stored_sizes_is_refused_before_building(tmp_path, where, key, value):
    path = _edited_checkpoint(tmp_path, "edited.pt", _set(where, key, value))
    bundled_before = digest(BUNDLED)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for loader in (load_checkpoint, load_lfdm, load_lfae if where == "lfae" else load_lfdm):
        expect(lambda: loader(path), "edited.pt", key)
    expect_one_line_cli_error("sample", "--image", STILL, "--class", "wave", "--checkpoint", path, "--out", tmp_path / "out.gif",
                              needles=["edited.pt", key])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 300_000, "a model of the absurd size was allocated"
    assert not (tmp_path / "out.gif").exists() and digest(BUNDLED) == bundled_before


# Stored configs whose every field is within CONFIG_LIMITS but whose *products* are huge: a 4096-wide U-Net, an LFAE with 64
# bottleneck blocks of 8192 features, 256 frames of 512² latents. Their cost is measured on the meta device and refused before
# anything is built (`LIMITS['model_parameters']`, `LIMITS['activation_bytes']`).
COSTLY_CONFIGS = [
    (dict(unet=dict(dim=4096, dim_mults=[1, 2])), ["its stored U-Net", "model parameters", "LIMITS['model_parameters']"]),
    (dict(lfae=dict(block_expansion=1024, max_features=8192, num_bottleneck_blocks=64)), ["its stored LFAE", "model parameters"]),
    (dict(lfae=dict(image_size=2048, block_expansion=256)), ["its stored LFAE (2048² images)", "activation bytes"]),
    (dict(config=dict(num_frames=256), lfae=dict(image_size=2048)), ["its stored U-Net (256 frames of 512² latents)", "activation bytes"]),
    (dict(config=dict(sampling_steps=5000)), ["sampling_steps = 5000", "from 1 to 1000", "LIMITS['sampling_steps']"]),
    (dict(config=dict(timesteps=20_000, sampling_steps=10)), ["timesteps = 20000", "LIMITS['timesteps']"]),
]


def _edit_many(edits):
    def edit(ck):
        for where, kv in edits.items(): {"config": ck["config"], "unet": ck["config"]["unet"], "lfae": ck["lfae"]["config"]}[where].update(kv)
    return edit


@pytest.mark.parametrize("edits, needles", COSTLY_CONFIGS, ids=[str(e)[:40] for e, _ in COSTLY_CONFIGS])
def test_checkpoint_whose_config_costs_too_much_is_refused_before_building(tmp_path, edits, needles):
    path = _edited_checkpoint(tmp_path, "costly.pt", _edit_many(edits))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for loader in (load_checkpoint, load_lfdm, load_lfae if "unet" not in edits and "config" not in edits else load_lfdm):
        expect(lambda: loader(path), "costly.pt", "over lfdm's limit" if "LIMITS" not in needles[-1] else "", *needles)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 300_000, "a model of the huge size was allocated"


def test_a_raised_limit_lets_the_user_load_what_they_mean(tmp_path, monkeypatch):
    "Each bound is a number in `lfdm.core.LIMITS`; a user who means a larger model raises it."
    from lfdm.core import LIMITS
    path = _edited_checkpoint(tmp_path, "steps.pt", _edit_many(dict(config=dict(sampling_steps=1500))))
    expect(lambda: load_lfdm(path), "sampling_steps = 1500")
    monkeypatch.setitem(LIMITS, "sampling_steps", 2000)
    assert load_lfdm(path).config.sampling_steps == 1500
    monkeypatch.setitem(LIMITS, "model_parameters", 2_700_000)        # the bundled LFAE has 2.62 M weights, its U-Net 2.76 M
    expect(lambda: load_lfdm(BUNDLED), "its stored U-Net", "2,756,003 model parameters, over lfdm's limit of 2,700,000")


def test_checkpoint_that_unpacks_far_beyond_its_size_is_refused_unread(tmp_path):
    "A zip whose entries are compressed (torch never writes one) could hide gigabytes in a small file: refused from its directory."
    import zipfile
    ck = torch.load(BUNDLED, map_location="cpu", weights_only=True)
    ck["padding"] = torch.zeros(64 * 2 ** 20 // 4)                         # 64 MB of zeros: 64 KB once deflated
    torch.save(ck, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as zin, zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist(): zout.writestr(info.filename, zin.read(info.filename))
    expect(lambda: load_checkpoint(tmp_path / "bomb.pt"), "bomb.pt", "bytes unpacked from", "LIMITS['checkpoint_expansion']")
    assert load_checkpoint(tmp_path / "plain.pt")["kind"] == "lfdm"          # the same contents stored plainly load

def test_checkpoint_with_nan_weights_names_the_file(tmp_path, existing):
    def nan_unet(ck): k = next(iter(ck["state_dict"])); ck["state_dict"][k] = ck["state_dict"][k].float() * math.nan
    def inf_lfae(ck): k = next(iter(ck["lfae"]["state_dict"])); ck["lfae"]["state_dict"][k] = ck["lfae"]["state_dict"][k].float() + math.inf
    for name, edit in [("nan_unet.pt", nan_unet), ("inf_lfae.pt", inf_lfae)]:
        path = _edited_checkpoint(tmp_path, name, edit)
        expect(lambda: load_lfdm(path), name, "NaN or infinite weights")
        expect(lambda: load_lfae(path) if name == "inf_lfae.pt" else load_checkpoint(path), name, "NaN or infinite weights")
        expect_one_line_cli_error("sample", "--image", STILL, "--class", "wave", "--checkpoint", path, "--out", existing["out"],
                                  "--steps", "1", needles=[name, "NaN or infinite weights"])
    assert_untouched(existing)


def test_weights_that_overflow_while_sampling_name_the_checkpoint(tmp_path, existing):
    "Finite weights that overflow to inf/NaN inside the network: the error names the checkpoint, not just 'video contains NaN'."
    def overflow(ck): ck["state_dict"]["init_conv.weight"] = torch.full_like(ck["state_dict"]["init_conv.weight"].float(), 1e38)
    path = _edited_checkpoint(tmp_path, "overflow.pt", overflow)
    model = load_lfdm(path)
    expect(lambda: model.sample(_img(model, 3, "S", "S"), "wave", steps=1, num_frames=2), "overflow.pt", "NaN or infinite values")
    expect_one_line_cli_error("sample", "--image", STILL, "--class", "wave", "--checkpoint", path, "--out", existing["out"],
                              "--steps", "1", needles=["overflow.pt", "NaN or infinite"])
    assert_untouched(existing)


# ---------------------------------------------------------------- Ctrl-C

@pytest.mark.parametrize("command, args, target", [
    ("demo", ["--steps", "1"], "lfdm.cli.load_lfdm"),
    ("sample", ["--image", STILL, "--class", "wave", "--steps", "1"], "lfdm.cli.load_lfdm"),
    ("sample", ["--image", STILL, "--class", "wave", "--steps", "1"], "lfdm.lfdm.LFDM.sample"),      # in the middle of sampling
    ("sample", ["--image", STILL, "--class", "wave", "--steps", "1"], "lfdm.cli.write_video"),      # while writing
    ("eval", [], "lfdm.eval.evaluate"),
], ids=["demo-loading", "sample-loading", "sample-sampling", "sample-writing", "eval"])
def test_ctrl_c_exits_130_with_one_line(existing, command, args, target):
    out = existing["run"] if command == "eval" else existing["out"]
    with mock.patch(target, side_effect=KeyboardInterrupt):
        code, stdout, err = cli(command, *args, "--out", out)
    assert code == 130, (code, err)
    assert err == "Interrupted.\n" and "Traceback" not in err, err
    assert_untouched(existing)
    _no_temporaries(existing["out"].parent)


@pytest.mark.parametrize("delay, inherited", [(0.2, "default"), (1.5, "default"), (1.5, "ignored")],
                         ids=["while-starting", "while-sampling", "while-sampling-sigint-ignored-by-parent"])
def test_real_sigint_during_sampling_exits_130(tmp_path, existing, delay, inherited):
    """A real SIGINT to a real process that is starting, loading or sampling (it says 'ready' once imported; a 1000-step run is cut
    short). 'ignored': started the way a non-interactive shell starts a background job (`cmd &`), with SIGINT ignored; Python then
    installs no KeyboardInterrupt handler of its own, so `lfdm` must install one (this once made the test hang under `nohup ... &`)."""
    code = "import sys, lfdm.cli; print('ready', flush=True); sys.exit(lfdm.cli.main(sys.argv[1:]))"
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if inherited == "ignored" else None
    p = subprocess.Popen([sys.executable, "-c", code, "demo", "--out", str(existing["out"]), "--steps", "1000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=ignore)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(delay)                                         # 0.2 s: main is starting; 1.5 s: loading the model, or sampling
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, (p.returncode, err)
    assert err.strip() == "Interrupted." and "Traceback" not in err, err
    assert_untouched(existing)
    _no_temporaries(existing["out"].parent)


@pytest.mark.parametrize("signame, code, ignored", [("SIGTERM", 143, False), ("SIGHUP", 129, False), ("SIGHUP", 130, True)],
                         ids=["sigterm", "sighup", "sighup-under-nohup"])
def test_sigterm_and_sighup_stop_sampling_as_cleanly_as_ctrl_c(existing, signame, code, ignored):
    """`docker stop`, Slurm and `kill` send SIGTERM, a closed terminal SIGHUP: the same clean stop as Ctrl-C, with the shell's exit code.
    Under `nohup` (SIGHUP ignored by the parent) SIGHUP must stay ignored: the run goes on until the SIGINT that follows."""
    # the child starts with the dispositions this case is about, whatever the suite's own (under nohup SIGHUP is ignored for it);
    # set before lfdm is imported, which is where lfdm reads them
    hup = "SIG_IGN" if ignored else "SIG_DFL"
    script = (f"import signal; signal.signal(signal.SIGHUP, signal.{hup}); signal.signal(signal.SIGINT, signal.default_int_handler); "
              "signal.signal(signal.SIGTERM, signal.SIG_DFL); "
              "import sys, lfdm.cli; print('ready', flush=True); sys.exit(lfdm.cli.main(sys.argv[1:]))")
    p = subprocess.Popen([sys.executable, "-c", script, "demo", "--out", str(existing["out"]), "--steps", "1000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(1.5)
        p.send_signal(getattr(signal, signame))
        if ignored: time.sleep(1.0); assert p.poll() is None, "SIGHUP stopped a run whose parent ignores it (nohup)"; p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == code, (p.returncode, err)
    assert err.strip() == ("Interrupted." if code == 130 else f"Interrupted by {signame}.") and "Traceback" not in err, err
    assert_untouched(existing)
    _no_temporaries(existing["out"].parent)

def test_ctrl_c_while_lfdm_is_still_importing_is_one_line(existing):
    "The console script imports torch for 1-2 s before `main` runs; a Ctrl-C then must not end in Python's traceback."
    p = subprocess.Popen([str(LFDM_BIN), "demo", "--out", str(existing["out"]), "--steps", "1000"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        time.sleep(0.4)                                           # Python is up; lfdm.cli (and torch) are being imported
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130 and err.strip() == "Interrupted." and "Traceback" not in err, (p.returncode, err)
    assert_untouched(existing)

# ---------------------------------------------------------------- make-dataset: folders that must not be used

@pytest.mark.parametrize("where, target, needle", [
    ("empty", ".", "is the current folder"), ("nonempty", ".", "already exists and is not an empty folder"),
    ("nonempty", "..", "already exists"), ("empty", "/", "already exists"), ("empty", "/proc/clips", "inside /proc"),
    ("nonempty", "notes.txt/clips", "notes.txt is a file"), ("nonempty", "notes.txt", "already exists"), ("nonempty", "", "is empty"),
    ("nonempty", "  ", "is empty"),
], ids=["empty-cwd", "cwd", "parent", "root", "proc", "under-a-file", "a-file", "empty-name", "blank-name"])
def test_make_dataset_refuses_folders_it_must_not_use(tmp_path, monkeypatch, where, target, needle):
    cwd = tmp_path / "cwd"; cwd.mkdir()
    if where == "nonempty": (cwd / "notes.txt").write_text("keep")
    monkeypatch.chdir(cwd)
    before, parent_before = digest(cwd), sorted(p.name for p in tmp_path.iterdir())
    expect_one_line_cli_error("make-dataset", target, "--clips", "2", "--size", "16", "--length", "4", needles=[needle])
    assert digest(cwd) == before and sorted(p.name for p in tmp_path.iterdir()) == parent_before


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "seed must be an integer"), (["--seed", str(2**64)], "seed must be an integer"),
    (["--size", "100000"], "size (--size) must be an integer from 8 to 512"), (["--size", "0"], "size"),
    (["--length", "100000000"], "length (--length) must be an integer from 2 to 256"), (["--length", "1"], "length"),
    (["--clips", "10000000000"], "num_clips (--clips) must be an integer from 1 to 1000000"), (["--clips", "-1"], "num_clips"),
], ids=lambda v: "_".join(v) if isinstance(v, list) else None)
def test_make_dataset_refuses_out_of_range_options(tmp_path, args, needle):
    expect_one_line_cli_error("make-dataset", tmp_path / "new", *args, needles=[needle])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a second campaign (each case once found a gap)

def test_weights_stored_as_integers_are_refused(tmp_path):
    def ints(ck): ck["state_dict"] = {k: v.long() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    expect(lambda: load_lfdm(_edited_checkpoint(tmp_path, "ints.pt", ints)), "ints.pt", "are damaged", "stored as torch.int64")


def test_stored_class_names_must_be_printable(tmp_path):
    def names(ck): ck["config"]["classes"] = ["", "a\nb"] + list(ck["config"]["classes"][2:])
    expect(lambda: load_lfdm(_edited_checkpoint(tmp_path, "names.pt", names)), "names.pt", "class names must be printable text")


def test_a_huge_photo_is_reduced_before_it_is_converted(tmp_path):
    "A 4000² RGBA PNG (~100 KB) asked for at 64²: shrunk in its 8-bit pixels first, not converted to float at full size (~1 GB)."
    Image.new("RGBA", (4000, 4000), (10, 20, 30, 128)).save(tmp_path / "big.png")
    code = ("import resource, sys; from lfdm.core import load_image; base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            f"x = load_image({str(tmp_path / 'big.png')!r}, size=64, warn=False); assert x.shape == (3, 64, 64); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)")
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV).stdout.split()[-1])
    assert grown < 300_000, f"{grown} KB more while loading"


PATHS_AND_ODD_ARGUMENTS = [
    ("write_video meta", lambda t: write_video(torch.zeros(3, 2, 16, 16, device="meta"), t / "a.gif"), ["on the meta device"]),
    ("write_video bytes", lambda t: write_video(torch.rand(3, 2, 16, 16), os.fsencode(t / "b.gif")), None),
    ("load_image int", lambda t: load_image(3), ["image path must be a file path", "int"]),
    ("read_video None", lambda t: read_video(None), ["video path must be a file path"]),
    ("load_checkpoint int", lambda t: load_checkpoint(7), ["checkpoint path must be a file path"]),
    ("background nan", lambda t: load_image(STILL, background=float("nan")), ["background must be a grey level from 0 to 1"]),
    ("wide mp4", lambda t: write_video(torch.rand(3, 1, 1, 100_000), t / "wide.mp4"), ["too large for MP4", "100000 x 1 "]),
    ("png named gif", lambda t: (t / "still.gif").write_bytes(STILL.read_bytes()) and read_video(t / "still.gif"), ["is a PNG image with a .gif name"]),
]


@pytest.mark.parametrize("name, call, needles", PATHS_AND_ODD_ARGUMENTS, ids=[c[0] for c in PATHS_AND_ODD_ARGUMENTS])
def test_paths_and_odd_arguments(tmp_path, name, call, needles):
    if needles is None: assert call(tmp_path).exists()                      # bytes paths are paths
    else: expect(lambda: call(tmp_path), *needles)


def test_integer_tensors_are_frame_indices():
    clip = BUNDLED.parent / "clips" / "wave.gif"
    torch.testing.assert_close(read_video(clip, frames=torch.tensor([0, 1])), read_video(clip, frames=[0, 1]))


def test_a_utf16_csv_is_named_as_such(tmp_path, files):
    root = tmp_path / "ds"; (root / "wave").mkdir(parents=True)
    write_video(torch.rand(3, 4, 16, 16), root / "wave" / "a.gif")
    (root / "clips.csv").write_bytes("path,label\nwave/a.gif,wave\n".encode("utf-16"))
    expect(lambda: VideoFolder(root, size=16), "is UTF-16 text", "iconv -f utf-16 -t utf-8")



def test_ddpm_over_the_step_bound_is_refused_when_sampling_not_when_loading(tmp_path):
    "A model trained with T = 10,000 loads (its DDIM sampling is fine); DDPM, which takes all T steps, is refused with the way out."
    def long_ddpm(ck): ck["config"].update(timesteps=10_000, sampler="ddpm")
    model = load_lfdm(_edited_checkpoint(tmp_path, "ddpm.pt", long_ddpm))
    expect(lambda: model.sample(_img(model, 3, "S", "S"), "wave", num_frames=2), "DDPM would take all 10000 timesteps", "sampler='ddim'")


def test_a_config_that_builds_no_model_is_one_line(tmp_path):
    from lfdm.train import apply_overrides, preset
    config = apply_overrides(preset("tiny"), ["lfae.region_num_blocks=0", "lfae_train.device=cpu", "data.num_clips=8"])
    expect(lambda: train("lfae", config, tmp_path / "run", progress=False), "No model can be built from the config's sizes")
    assert not (tmp_path / "run").exists()


def test_huge_numbers_are_refused_not_overflowed():
    expect(lambda: apply_overrides(preset_tiny(), ["lfae.lr=" + "1" * 400]), "config.lfae.lr must be")      # one line, no OverflowError


def preset_tiny():
    from lfdm.train import preset
    return preset("tiny")


def test_review_cases_of_the_second_campaign(tmp_path):
    "Found by reading the change: padding after a GIF's trailer, the line of a bad byte deep in a CSV, the size a resize warning names."
    gif = tmp_path / "padded.gif"; write_video(torch.rand(3, 3, 16, 16), gif)
    gif.write_bytes(gif.read_bytes() + b"\x00\x00")
    assert read_video(gif).shape == (3, 3, 16, 16)
    root = tmp_path / "ds"; (root / "wave").mkdir(parents=True); write_video(torch.rand(3, 4, 16, 16), root / "wave" / "a.gif")
    (root / "clips.csv").write_bytes(b"path,label\n" + b"wave/a.gif,wave\n" * 1500 + "wave/caf\xe9.gif,wave\n".encode("latin-1"))
    expect(lambda: VideoFolder(root, layout="csv", size=16), "byte 0xe9 on line 1502")
    (root / "clips.csv").unlink(); (root / "notes.csv").write_bytes("remarques,\xe9t\xe9\n".encode("latin-1"))   # not a clip list
    assert len(VideoFolder(root, size=16)) == 1                               # an unreadable CSV that lists no clips does not block 'auto'
    Image.new("RGB", (3000, 2000)).save(tmp_path / "photo.png")
    with pytest.warns(ImageResizedWarning, match="resized from 3000x2000 to 64x64"): load_image(tmp_path / "photo.png", size=64)


def test_checkpoint_checks_are_registered_by_any_entry_point():
    "load_checkpoint runs what CHECKPOINT_CHECKS holds (08's appendix registers it): importing any lfdm module that loads checkpoints fills it."
    for module in ("lfdm.lfdm", "lfdm.eval", "lfdm.cli", "lfdm.train", "lfdm.claims", "lfdm.convert"):
        code = (f"import {module}, lfdm.lfdm as L; c = L.CHECKPOINT_CHECKS; "
                "assert c['file'] == [L._check_unpacked_size] and c['contents'] == [L._check_stored_sizes, L._check_finite_weights], c")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
        assert r.returncode == 0, f"importing {module}: {r.stderr[-500:]}"
