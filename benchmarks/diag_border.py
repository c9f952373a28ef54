"""Diagnostic: do generated flows read outside the frame, and is that the dark band along the border of generated videos?

    python benchmarks/diag_border.py [CLIPS_PER_CLASS] [THREADS]        # default 4 and 1; 7 December 2026 used 2 and 1 (16 clips)

Generates held-out clips with the bundled model (DDIM-25, its guidance), then compares, for real clips, LFAE reconstructions, the
generated clips and the same generated flows with the sampling grid clamped inside the frame (what `padding_mode="border"` would
read): the share of latent grid points that read outside the frame, the mean brightness of a 3-pixel border band against the inside
and the bottom rows, and the classifier's accuracy and FVD. Measured on 16 clips of data seed 0 (bundled pair of 3 December 2026):
11.5 % of the generated grid points read outside the frame (LFAE of real clips: 2.3 %); the border band of the generated frames is
darker than the real clips' (0.460 against 0.478; bottom rows 0.473 against 0.496), and clamping the grid restores it (0.478; bottom
0.492) while accuracy (100 %) and FVD (2.10 / 2.11) do not change. The warp pads with zeros (as the release), so what the DM's flow
reads outside the frame is black.
"""
import sys, time, torch, json
from lfdm.lfdm import load_lfdm, bundled_checkpoint
from lfdm.eval import (evaluation_clips, generate_clips, classify, load_motion_classifier, as_float_video, _set_scores, reconstruct_clips)
from lfdm.diffusion import state_to_flows, flows_to_state
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
n_per_class = int(sys.argv[1]) if len(sys.argv) > 1 else 4
model = load_lfdm(bundled_checkpoint()); clf = load_motion_classifier()
real, ref = evaluation_clips(n_per_class, seed=0)
ref["features"], _ = classify(clf, ref["video"])
imgs = as_float_video(real["video"][:, :, 0])
t0 = time.time()
vids, states, _ = generate_clips(model, imgs, real["label"], steps=25, seed=0)
print("generated", time.time() - t0, flush=True)
with torch.no_grad(): rstates, _ = model.encode_videos(as_float_video(real["video"]))
h = states.shape[-1]; lim = 1 - 1 / h
def outside(s):
    g = state_to_flows(s)[0]
    return float((g.abs() > lim + 1e-6).any(-1).float().mean()), float((g.abs() - lim).clamp(min=0).amax(-1).mean())
print("fraction of latent grid points reading outside the frame (gen / LFAE of real):", outside(states), outside(rstates))
def clamp_states(s):
    g, o = state_to_flows(s)
    return flows_to_state(g.clamp(-lim, lim), o)
with torch.no_grad():
    enc = model.lfae.encode(imgs)
    vids_c = model.decode_states(enc, clamp_states(states)).clamp(0, 1)
    recon = model.decode_states(enc, rstates).clamp(0, 1)
def band(v, w=3):
    x = v[:, :, 1:].mean(1)   # n f H W luminance-ish
    m = torch.zeros(x.shape[-2:], dtype=torch.bool); m[:w] = m[-w:] = True; m[:, :w] = m[:, -w:] = True
    return float(x[..., m].mean()), float(x[..., ~m].mean()), float(x[..., -w:, :].mean())
realv = as_float_video(real["video"])
for name, v in dict(real=realv, recon=recon, gen=vids, gen_clamped=vids_c).items():
    feats, logits = classify(clf, v)
    s = _set_scores(ref, feats, logits, real["label"], real["appearance"])
    print(f"{name:12s} acc {s['accuracy']:.3f} fvd {s['classifier_fvd']:.3f}  border/inner/bottom mean {band(v)}  per-class {[round(a,2) for a in s['per_class']['accuracy']]}", flush=True)
print("mean |gen - gen_clamped|", float((vids - vids_c).abs().mean()), "max", float((vids - vids_c).abs().max()))
