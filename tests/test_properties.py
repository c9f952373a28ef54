"""Property-based tests (hypothesis) of the warping helpers (02_warp) and the noise schedules (06_diffusion).

Conventions (see the notebooks): flows are absolute backward sampling grids `b h w 2` (x, y), normalised to [-1, 1] at pixel
centres (align_corners=False); `warp(x, flow)[u] = x[flow[u]]`. Schedules are float64 tables of length T.
"""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from lfdm.core import InputError
from lfdm.diffusion import (Diffusion, DiffusionSchedule, OBJECTIVES, beta_schedule, ddim_timesteps, dynamic_threshold, extract,
                            q_sample)
from lfdm.warp import (affine_flow, compose_flows, displacement_to_flow, flow_to_displacement, flow_to_pixels, flow_to_rgb,
                       identity_grid, pixels_to_flow, resize_flow, resize_occlusion, warp)

FAST = settings(max_examples=40, deadline=None)
side = st.integers(1, 12)
seeds = st.integers(0, 2**31 - 1)
dtypes = st.sampled_from([torch.float32, torch.float64])


def rand(seed, *shape, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def tol(dtype):
    return 1e-5 if dtype == torch.float32 else 1e-10


def random_flow(seed, b, h, w, dtype=torch.float32, scale=0.3):
    "The identity plus a random displacement of up to `scale` (normalised units)."
    return identity_grid(b, h, w, dtype=dtype) + scale * (2 * rand(seed, b, h, w, 2, dtype=dtype) - 1)


# ---------------------------------------------------------------- warping

@FAST
@given(b=st.integers(1, 3), c=st.integers(1, 6), h=side, w=side, mode=st.sampled_from(["bilinear", "nearest", "bicubic"]),
       padding=st.sampled_from(["zeros", "border", "reflection"]), dtype=dtypes, seed=seeds)
def test_warp_with_identity_grid_is_identity(b, c, h, w, mode, padding, dtype, seed):
    x = rand(seed, b, c, h, w, dtype=dtype)
    out = warp(x, identity_grid(b, h, w, dtype=dtype), padding_mode=padding, mode=mode)
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out, x, atol=tol(dtype), rtol=0)


@FAST
@given(b=st.integers(1, 2), c=st.integers(1, 4), h=st.integers(2, 10), w=st.integers(2, 10), seed=seeds,
       dx=st.integers(-3, 3), dy=st.integers(-3, 3), mode=st.sampled_from(["bilinear", "nearest"]))
def test_warp_by_whole_pixels_is_a_shift(b, c, h, w, seed, dx, dy, mode):
    "A backward flow of (dx, dy) pixels reads x[y + dy, x + dx]; outside the image, zeros."
    x = rand(seed, b, c, h, w, dtype=torch.float64)
    px = torch.tensor([float(dx), float(dy)], dtype=torch.float64).expand(b, h, w, 2)
    out = warp(x, pixels_to_flow(px), padding_mode="zeros", mode=mode)
    expected = torch.zeros_like(x)
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    src_ys, src_xs = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
    if ys.start < ys.stop and xs.start < xs.stop: expected[..., ys, xs] = x[..., src_ys, src_xs]
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=0)


@FAST
@given(b=st.integers(1, 3), h=side, w=side, dtype=dtypes, seed=seeds)
def test_displacement_conversions_round_trip(b, h, w, dtype, seed):
    identity = identity_grid(b, h, w, dtype=dtype)
    assert flow_to_displacement(identity).abs().max() == 0                     # the identity has no displacement
    assert flow_to_pixels(identity).abs().max() == 0
    flow = random_flow(seed, b, h, w, dtype)
    torch.testing.assert_close(displacement_to_flow(flow_to_displacement(flow)), flow, atol=tol(dtype), rtol=0)
    torch.testing.assert_close(pixels_to_flow(flow_to_pixels(flow)), flow, atol=tol(dtype), rtol=0)
    px = flow_to_pixels(flow)                                                    # x in units of W/2, y of H/2
    torch.testing.assert_close(px[..., 0], (flow - identity)[..., 0] * w / 2, atol=tol(dtype) * max(w, 1), rtol=0)
    torch.testing.assert_close(px[..., 1], (flow - identity)[..., 1] * h / 2, atol=tol(dtype) * max(h, 1), rtol=0)


@FAST
@given(b=st.integers(1, 3), h=side, w=side, dtype=dtypes, seed=seeds)
def test_composing_with_the_identity_changes_nothing(b, h, w, dtype, seed):
    flow = random_flow(seed, b, h, w, dtype)
    identity = identity_grid(b, h, w, dtype=dtype)
    torch.testing.assert_close(compose_flows(identity, flow), flow, atol=tol(dtype), rtol=0)   # identity first
    torch.testing.assert_close(compose_flows(flow, identity), flow, atol=tol(dtype), rtol=0)   # identity second
    torch.testing.assert_close(compose_flows(identity, identity), identity, atol=tol(dtype), rtol=0)


@FAST
@given(b=st.integers(1, 2), h=side, w=side, h2=side, w2=side, dtype=dtypes, seed=seeds)
def test_resize_flow_keeps_the_identity_and_constant_displacements(b, h, w, h2, w2, dtype, seed):
    identity = identity_grid(b, h, w, dtype=dtype)
    torch.testing.assert_close(resize_flow(identity, (h2, w2)), identity_grid(b, h2, w2, dtype=dtype), atol=tol(dtype), rtol=0)
    shift = (2 * rand(seed, b, 1, 1, 2, dtype=dtype) - 1) * 0.5                 # one normalised displacement per flow
    moved = resize_flow(identity + shift, (h2, w2))
    torch.testing.assert_close(moved, identity_grid(b, h2, w2, dtype=dtype) + shift, atol=tol(dtype), rtol=0)
    flow = random_flow(seed, b, h, w, dtype)
    assert resize_flow(flow, (h, w)) is flow                                     # same size: the flow itself


@FAST
@given(b=st.integers(1, 2), h=side, w=side, h2=side, w2=side, seed=seeds)
def test_resize_occlusion_stays_in_unit_range(b, h, w, h2, w2, seed):
    occ = rand(seed, b, 1, h, w)
    out = resize_occlusion(occ, (h2, w2))
    assert out.shape == (b, 1, h2, w2)
    assert out.min() >= 0 and out.max() <= 1


@FAST
@given(b=st.integers(1, 3), h=side, w=side, seed=seeds)
def test_affine_flow_of_identity_and_translations(b, h, w, seed):
    eye = torch.eye(2, 3).expand(b, 2, 3)
    torch.testing.assert_close(affine_flow(eye, h, w), identity_grid(b, h, w), atol=1e-6, rtol=0)
    t = 2 * rand(seed, b, 2) - 1
    theta = torch.cat([torch.eye(2).expand(b, 2, 2), t[..., None]], -1)
    torch.testing.assert_close(affine_flow(theta, h, w), identity_grid(b, h, w) + t[:, None, None], atol=1e-6, rtol=0)


@FAST
@given(b=st.integers(1, 2), h=side, w=side, seed=seeds)
def test_flow_colours_are_white_for_no_motion_and_in_range(b, h, w, seed):
    assert torch.equal(flow_to_rgb(identity_grid(b, h, w)), torch.ones(b, 3, h, w))
    rgb = flow_to_rgb(random_flow(seed, b, h, w))
    assert rgb.shape == (b, 3, h, w) and rgb.min() >= 0 and rgb.max() <= 1


# ---------------------------------------------------------------- schedules

@FAST
@given(name=st.sampled_from(["linear", "cosine"]), T=st.integers(1, 3000))
def test_beta_schedules_are_monotone_and_in_range(name, T):
    if name == "linear" and T <= 20:                                             # its last beta 0.02 * 1000 / T would reach 1
        with pytest.raises(InputError, match="timesteps > 20"): beta_schedule(name, T)
        return
    b = beta_schedule(name, T)
    assert b.shape == (T,) and b.dtype == torch.float64
    assert ((b > 0) & (b < 1)).all()
    assert (b[1:] >= b[:-1]).all()                                               # noise is added faster and faster
    if name == "linear" and T > 1: assert (b[1:] > b[:-1]).all()


@FAST
@given(name=st.sampled_from(["linear", "cosine"]), T=st.integers(21, 3000))
def test_schedule_tables_are_consistent(name, T):
    s = DiffusionSchedule(name, T)
    betas, abar = s.betas, s.alphas_cumprod
    assert s.timesteps == T and all(v.shape == (T,) and v.dtype == torch.float64 for v in s.tables().values())
    torch.testing.assert_close(abar, torch.cumprod(1 - betas, 0), rtol=1e-12, atol=0)
    assert (abar > 0).all() and (abar < 1).all() and (abar[1:] < abar[:-1]).all()
    assert s.alphas_cumprod_prev[0] == 1 and torch.equal(s.alphas_cumprod_prev[1:], abar[:-1])
    torch.testing.assert_close(s.sqrt_alphas_cumprod ** 2 + s.sqrt_one_minus_alphas_cumprod ** 2, torch.ones_like(abar), rtol=0, atol=1e-12)
    torch.testing.assert_close(s.sqrt_recip_alphas_cumprod * s.sqrt_alphas_cumprod, torch.ones_like(abar), rtol=1e-12, atol=0)
    assert (s.posterior_variance >= 0).all() and (s.posterior_variance <= betas * (1 + 1e-12)).all()
    snr = s.snr()
    assert (snr[1:] < snr[:-1]).all()


@FAST
@given(betas=st.lists(st.floats(1e-6, 0.999), min_size=1, max_size=200))
def test_custom_betas_give_their_cumulative_product(betas):
    s = DiffusionSchedule(betas=torch.tensor(betas, dtype=torch.float64))
    assert s.name == "custom" and s.timesteps == len(betas)
    expected = torch.tensor([math.prod(1 - b for b in betas[:i + 1]) for i in range(len(betas))], dtype=torch.float64)
    torch.testing.assert_close(s.alphas_cumprod, expected, rtol=1e-9, atol=1e-300)


@FAST
@given(bad=st.sampled_from([0.0, 1.0, -0.1, 1.5, float("nan")]), n=st.integers(1, 5), at=st.integers(0, 4))
def test_custom_betas_outside_the_open_unit_interval_are_refused(bad, n, at):
    betas = [0.1] * n
    betas[at % n] = bad
    with pytest.raises(InputError, match=r"betas must be a 1-D table of values in \(0, 1\)"):
        DiffusionSchedule(betas=torch.tensor(betas))


@FAST
@given(name=st.sampled_from(["linear", "cosine"]), T=st.integers(21, 2000), b=st.integers(1, 4), f=st.integers(1, 3), seed=seeds,
       dtype=dtypes)
def test_q_sample_closed_form(name, T, b, f, seed, dtype):
    s = DiffusionSchedule(name, T)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(b, 3, f, 4, 4, generator=g, dtype=dtype)
    t = torch.randint(0, T, (b,), generator=g)
    abar = s.alphas_cumprod[t].to(dtype).view(b, 1, 1, 1, 1)
    torch.testing.assert_close(q_sample(s, x0, t, torch.zeros_like(x0)), abar.sqrt() * x0)          # no noise: a scaled x0
    noise = torch.randn(x0.shape, generator=g, dtype=dtype)
    torch.testing.assert_close(q_sample(s, torch.zeros_like(x0), t, noise), (1 - abar).sqrt() * noise)   # no signal: scaled noise
    assert extract(s.betas, t, x0).shape == (b, 1, 1, 1, 1)


@FAST
@given(objective=st.sampled_from(OBJECTIVES), name=st.sampled_from(["linear", "cosine"]), T=st.integers(21, 1000),
       b=st.integers(1, 3), seed=seeds)
def test_predict_inverts_the_training_target(objective, name, T, b, seed):
    "For every objective, the network output that equals its target gives back the true noise and x0."
    d = Diffusion(torch.nn.Identity(), DiffusionSchedule(name, T), objective=objective, thresholding=None)
    g = torch.Generator().manual_seed(seed)
    x0, noise = torch.randn(b, 3, 2, 4, 4, generator=g, dtype=torch.float64), torch.randn(b, 3, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (b,), generator=g)
    eps, x0_hat = d.predict(d.q_sample(x0, t, noise), t, d.target(x0, noise, t), threshold=False)
    torch.testing.assert_close(x0_hat, x0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(eps, noise, atol=1e-6, rtol=1e-6)


@FAST
@given(T=st.integers(1, 2000), data=st.data())
def test_ddim_timesteps(T, data):
    steps = data.draw(st.integers(1, T), label="steps")
    ts = ddim_timesteps(T, steps)
    assert ts.dtype == torch.int64 and ts.shape == (steps,)
    assert ts[0] == T - 1                                                        # starts at the noisiest step
    assert (ts[1:] < ts[:-1]).all()                                              # strictly decreasing: no step twice
    assert ts.min() >= 0 and (steps == 1 or ts[-1] == 0)                         # ends on the clean step
    if steps == T: assert torch.equal(ts, torch.arange(T - 1, -1, -1))


@FAST
@given(T=st.integers(1, 2000), bad=st.sampled_from(["zero", "too many", "float"]))
def test_ddim_timesteps_refuses_impossible_step_counts(T, bad):
    steps = {"zero": 0, "too many": T + 1, "float": 2.5}[bad]
    with pytest.raises(InputError, match="number of sampling steps"):
        ddim_timesteps(T, steps)


@FAST
@given(b=st.integers(1, 3), n=st.integers(1, 50), scale=st.floats(0.01, 20), p=st.floats(0.5, 0.99), seed=seeds)
def test_dynamic_threshold_stays_in_unit_range(b, n, scale, p, seed):
    x0 = (2 * rand(seed, b, n, dtype=torch.float64) - 1) * scale
    out = dynamic_threshold(x0, p)
    assert out.shape == x0.shape and out.abs().max() <= 1 + 1e-12
    if scale <= 1: torch.testing.assert_close(out, x0)                           # already in [-1, 1]: unchanged
