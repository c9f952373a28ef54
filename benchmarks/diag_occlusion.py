"""Diagnostic: which part of the generated state smears the limbs, and why? (issue "Stage two catches up", item 3)

    python benchmarks/diag_occlusion.py [CLIPS_PER_CLASS] [THREADS] [OUT.json]     # 7 December 2026: 2 clips per class, 1 thread

With the bundled model (DDIM-25, its guidance), on held-out clips of data seed 0:

1. **Swap the halves of the state.** Decode the generated flow with the LFAE's occlusion of the real clip, and the LFAE's flow of
   the real clip with the generated occlusion; score each with the motion classifier. The half that carries the damage is the one
   whose swap-in hurts.
2. **Where the occlusion goes wrong.** The mean generated occlusion on the background (where the LFAE's own occlusion is > 0.95),
   for DDIM with eta = 0 (the deterministic ODE) and eta = 1 (fresh noise every step).
3. **Is it the network or the sampler?** Noise the LFAE's states of the real clips to step t and let the U-Net predict s0 in one
   step: if that prediction's background occlusion is right at every t, the network is unbiased on the data and the error comes
   from the path the sampler takes.

Measured on 16 clips, 1 thread (7 December 2026, the bundled pair; `benchmarks/results/diag_occlusion.json`): the background
occlusion of the LFAE is 0.999; generated with eta = 0 it is 0.933, with eta = 1 0.976. The one-step prediction is close to the
LFAE's at every t up to 700 (0.990-0.998; 0.942 at t = 950, where the best guess is an average). Classifier FVD of the swaps (16
clips, so only large differences count; the LFAE alone 1.73, generated 2.11 / 1.84 at eta = 0 / 1): LFAE flow + generated occlusion
2.09 / 2.17; generated flow + LFAE occlusion 2.66 / 2.23 (an occlusion from another motion does not fit the generated flow). The
swaps do not single out one half at this clip count; the demo clip's frames do (the generated occlusion smears the LFAE's arms).
"""
import json, sys, time
import torch
from lfdm.lfdm import load_lfdm, bundled_checkpoint, keep_in_frame
from lfdm.eval import evaluation_clips, reconstruct_clips, as_float_video, classify, load_motion_classifier, _set_scores
from lfdm.diffusion import state_to_flows, flows_to_state

n_per_class = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
out = sys.argv[3] if len(sys.argv) > 3 else None
model, clf = load_lfdm(bundled_checkpoint()), load_motion_classifier()
real, ref = evaluation_clips(n_per_class, seed=0)
ref["features"], _ = classify(clf, ref["video"])
images = as_float_video(real["video"][:, :, 0])
recon, rstates = reconstruct_clips(model, real["video"])
background = state_to_flows(rstates)[1] > 0.95
result = dict(clips=len(images), lfae_background_occlusion=float(state_to_flows(rstates)[1][background].mean()))

def score(videos) -> dict:
    s = _set_scores(ref, *classify(clf, videos), real["label"], real["appearance"])
    return dict(accuracy=s["accuracy"], classifier_fvd=s["classifier_fvd"])

def generate(eta: float):
    g, parts = torch.Generator().manual_seed(0), []
    for i in range(0, len(images), 8):
        parts.append(model.sample(images[i:i + 8], real["label"][i:i + 8], steps=25, eta=eta, generator=g, return_states=True)[1])
    return torch.cat(parts)

with torch.no_grad():
    enc = model.lfae.encode(images)
    decode = lambda s: model.decode_states(enc, keep_in_frame(s)).clamp(0, 1)
    result["sets"] = {"LFAE reconstruction": score(recon)}
    for eta in (0.0, 1.0):
        t0 = time.time()
        states = generate(eta)
        gf, go = state_to_flows(states)
        rf, ro = state_to_flows(rstates)
        result[f"eta={eta:g}"] = dict(background_occlusion=float(go[background].mean()), seconds=time.time() - t0)
        result["sets"][f"generated, eta={eta:g}"] = score(decode(states))
        result["sets"][f"generated flow + LFAE occlusion, eta={eta:g}"] = score(decode(flows_to_state(gf, ro)))
        result["sets"][f"LFAE flow + generated occlusion, eta={eta:g}"] = score(decode(flows_to_state(rf, go)))
        print(eta, result[f"eta={eta:g}"], flush=True)
    x0 = model.to_diffusion(rstates)
    den = model.denoiser(enc.bottleneck, model.class_ids(real["label"], len(images)), 1.0)
    one_step, gen = {}, torch.Generator().manual_seed(1)
    for t in (5, 40, 200, 400, 700, 950):
        tt = torch.full((len(x0),), t, dtype=torch.long)
        xt = model.diffusion.q_sample(x0, tt, torch.randn(x0.shape, generator=gen))
        _, x0_hat = model.diffusion.predict(xt, tt, den(xt, tt), threshold=False)
        one_step[t] = float(state_to_flows(model.from_diffusion(x0_hat))[1][background].mean())
    result["one_step_background_occlusion"] = one_step

for k, v in result["sets"].items(): print(f"{k:45s} accuracy {v['accuracy']:.3f}  classifier FVD {v['classifier_fvd']:.3f}")
print("background occlusion: LFAE", round(result["lfae_background_occlusion"], 4),
      {k: round(v["background_occlusion"], 4) for k, v in result.items() if k.startswith("eta=")}, "one step:", one_step)
if out: json.dump(result, open(out, "w"), indent=1)
