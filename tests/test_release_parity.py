"""Release parity: converted weights compute what the official LFDM release computes, to float noise.

`tests/fixtures/release_parity/` holds two small models in the release's own file formats, fixed inputs and the outputs the release
itself computed at every stage (its README). Here they are converted the way a user converts them (`convert_official`, and the
`lfdm convert-official` command), loaded with `load_lfdm`, and every stage is recomputed and compared within the README's tolerance
(section 6): max |diff| <= 1e-5 per entry (5e-4 for the four entries read at the estimated flow: `lfdm.convert.SAMPLED_ENTRIES`
explains why), `dm_x0_raw_t999` relative to its magnitude, the affines through A A^T.
"""
import hashlib
import math
import re
from pathlib import Path

import pytest
import torch

import lfdm.diffusion
from lfdm.cli import main
from lfdm.convert import (RELEASE_TOLERANCE, SAMPLED_TOLERANCE, convert_official, entry_tolerance, fixture_outputs, parity_report,
                          with_compat)
from lfdm.core import InputError
from lfdm.lfdm import bundled_checkpoint, load_checkpoint, load_lfdm

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "release_parity"
ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    return torch.load(FIXTURE / name, map_location="cpu", weights_only=True)


def test_fixture_files_match_their_sha256():
    "The five data files are the ones the fixture's README lists (bytes and sha256)."
    rows = re.findall(r"^\| `([^`]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|$", (FIXTURE / "README.md").read_text(encoding="utf-8"), re.M)
    assert {name for name, *_ in rows} == {"RegionMM_small.pth", "flowdiff_small.pth", "inputs.pt", "outputs.pt", "config.json"}
    for name, size, digest in rows:
        data = (FIXTURE / name).read_bytes()
        assert len(data) == int(size.replace(",", "")), name
        assert hashlib.sha256(data).hexdigest() == digest, name


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    "The fixture's two files converted to an lfdm checkpoint (64² frames, 8 frames per clip) and loaded back."
    out = convert_official(FIXTURE / "RegionMM_small.pth", FIXTURE / "flowdiff_small.pth",
                           out=tmp_path_factory.mktemp("parity") / "small.pt", image_size=64, num_frames=8, verbose=False)
    return load_lfdm(out)


@pytest.fixture(scope="session")
def release():
    return _load("outputs.pt")


@pytest.fixture(scope="session")
def ours(converted, release):
    "Every stage recomputed by the converted model, with 1 thread (as the release's numbers were computed)."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try: return fixture_outputs(converted, _load("inputs.pt"), release)
    finally: torch.set_num_threads(threads)


ENTRIES = sorted(_load("outputs.pt"))


def test_every_entry_is_compared(ours, release):
    assert len(ENTRIES) == 54 and set(ours) >= set(release)


@pytest.mark.parametrize("name", ENTRIES)
def test_stage_matches_the_release(ours, release, name):
    report = parity_report({name: ours[name]}, {name: release[name]})
    diff, ok = report[name]
    assert ours[name].shape == release[name].shape, name
    assert ok, f"{name}: max |diff| {diff:.3g} > {entry_tolerance(name):g}"


def test_affines_match_up_to_column_signs(ours, release):
    "lfdm normalises the SVD's column signs, the release keeps LAPACK's: A A^T (= the covariance) is what both define."
    for frame in ("source", "driving"):
        A, B = ours[f"lfae_{frame}_affine"], release[f"lfae_{frame}_affine"]
        torch.testing.assert_close(A.abs(), B.abs(), atol=1e-5, rtol=0)
        torch.testing.assert_close(A @ A.mT, ours[f"lfae_{frame}_covar"], atol=1e-6, rtol=0)


def test_posterior_log_variance_at_t0_is_clamped_as_the_release(converted, ours, release):
    "Both clamp the posterior variance at 1e-20 (log = -46.05) at t = 0, where it is 0. Never used: t = 0 adds no noise."
    assert math.isclose(release["dm_posterior_log_variance_t0"].item(), math.log(1e-20), abs_tol=1e-3)
    assert math.isclose(ours["dm_posterior_log_variance_t0"].item(), math.log(1e-20), abs_tol=1e-3)
    assert ours["dm_posterior_variance_t0"].item() == release["dm_posterior_variance_t0"].item() == 0.0


def test_lfdm_sampler_reproduces_the_release_trajectory(converted, release, monkeypatch):
    "06_diffusion's own `ddpm_step`, fed the stored noise in place of its random draws, walks the release's 10 steps."
    inputs = _load("inputs.pt")
    noise = list(inputs["traj_noise"][:-1])                        # t = 0 draws none in lfdm (the release multiplies it by 0)
    monkeypatch.setattr(lfdm.diffusion, "_randn", lambda shape, generator, like: noise.pop(0).to(like))
    denoise = converted.denoiser(inputs["dm_fea"], inputs["dm_cond"])
    x, states = inputs["traj_x_start"], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in inputs["traj_timesteps"].tolist():
            x, _ = converted.diffusion.ddpm_step(x, t, denoise)
            states.append(x)
    finally: torch.set_num_threads(threads)
    assert not noise
    torch.testing.assert_close(torch.stack(states), release["traj_states"], atol=RELEASE_TOLERANCE, rtol=0)


def test_lfdm_mode_does_not_match(converted, release):
    "The same weights in lfdm's default mode miss the release at each of the five causes: the mode is what closes the gap."
    report = parity_report(fixture_outputs(with_compat(converted, "lfdm"), _load("inputs.pt"), release), release)
    for name in ("lfae_down_source", "lfae_source_shift", "lfae_sparse_motions", "lfae_flow", "lfae_prediction",
                 "lfae_decode_own_flow", "lfae_decode_identity_m1", "dm_eps_t500", "traj_video"):
        assert report[name][0] > 1e-3, name


def test_converted_checkpoint_stores_the_mode(converted, tmp_path):
    assert (converted.lfae.config.compat, converted.unet.config.compat) == ("release", "release")
    assert (converted.lfae.config.image_size, converted.config.num_frames, converted.unet.config.image_size) == (64, 8, 16)
    assert converted.config.anchor_first_frame is False
    assert converted.unet.config.cond_mode == "embedding" and not converted.unet.config.learn_null


def test_command_line_conversion(tmp_path, release):
    "`lfdm convert-official --image-size 64 --num-frames 8` writes a checkpoint that `load_lfdm` runs in release mode."
    out = tmp_path / "cli.pt"
    code = main(["convert-official", "--lfae", str(FIXTURE / "RegionMM_small.pth"), "--dm", str(FIXTURE / "flowdiff_small.pth"),
                 "--out", str(out), "--image-size", "64", "--num-frames", "8"])
    assert code == 0
    ckpt = load_checkpoint(out, "lfdm")
    assert ckpt["config"]["unet"]["compat"] == "release" and ckpt["lfae"]["config"]["compat"] == "release"
    model = load_lfdm(out)
    inputs = _load("inputs.pt")
    with torch.no_grad():
        generated = model.lfae(inputs["source"], inputs["driving"]).generated
        eps = model.unet(inputs["dm_x_t"], torch.tensor([500]), inputs["dm_fea"], cond=inputs["dm_cond"])
    torch.testing.assert_close(generated, release["lfae_prediction"], atol=SAMPLED_TOLERANCE, rtol=0)   # sampled at the estimated flow
    torch.testing.assert_close(eps, release["dm_eps_t500"], atol=RELEASE_TOLERANCE, rtol=0)


def test_wrong_image_size_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="pass the size the model was trained at"):
        convert_official(FIXTURE / "RegionMM_small.pth", out=tmp_path / "x.pt", image_size=66, verbose=False)
    with pytest.raises(InputError, match="num_frames must be an integer of at least 2"):
        convert_official(FIXTURE / "RegionMM_small.pth", FIXTURE / "flowdiff_small.pth", out=tmp_path / "x.pt", num_frames=1,
                         verbose=False)
    assert not (tmp_path / "x.pt").exists()


# --- the default mode is unchanged ---------------------------------------------------------------------------------------------

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "default_mode_reference.pt"


def test_bundled_model_computes_its_reference():
    """`data_samples/lfdm_tiny.pt` computes, in the default `compat='lfdm'`, the numbers stored for it in the reference (written by
    `tests/fixtures/make_default_mode_reference.py` when the bundle was made): a change of the code that silently changes what the
    bundled model computes fails here. Tolerance 1e-4: measured differences between 1 and 2 threads are below 1e-5.
    A golden file detects change, not correctness: that the bundled model does its job is checked independently by 10_eval's
    fast quality test (the asked class on 16 held-out clips, with a random U-Net and a copy-frame-0 model failing it) and by
    08's where-it-moves test (wave moves the arms, jump the legs; a random U-Net fails it)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_ref", REFERENCE.parent / "make_default_mode_reference.py")
    make_ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(make_ref)
    path = bundled_checkpoint()
    ref = torch.load(REFERENCE, weights_only=True)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ref["checkpoint_sha256"], (
        "data_samples/lfdm_tiny.pt was replaced: run `python tests/fixtures/make_default_mode_reference.py` and commit the reference")
    model = load_lfdm(path)
    assert (model.lfae.config.compat, model.unet.config.compat) == ("lfdm", "lfdm")
    for name, value in make_ref.outputs(model, ref).items():
        torch.testing.assert_close(value, ref[name], atol=1e-4, rtol=0, msg=name)


def test_a_checkpoint_from_before_compat_loads_in_lfdm_mode(tmp_path):
    "Files saved before the `compat` field existed have no such key: the default, lfdm's own conventions, fills it in."
    ck = load_checkpoint(bundled_checkpoint())
    for section in (ck["config"]["unet"], ck["lfae"]["config"]): section.pop("compat", None)
    torch.save(ck, tmp_path / "old.pt")
    model = load_lfdm(tmp_path / "old.pt")
    assert (model.lfae.config.compat, model.unet.config.compat) == ("lfdm", "lfdm")
