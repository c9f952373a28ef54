"""Bundled tiny DM: encode 2,048 training clips with the final LFAE, train the tiny DM on the cached flows, save the LFDM (float16).

Usage: python scripts/bundled/dm.py lfae_final.pt data_samples/lfdm_tiny.pt 33 2
Arguments: LFAE weights, output checkpoint, minutes of DM training, torch threads.
"""
import sys, time, json, torch, numpy as np
from lfdm.core import seed_everything
from lfdm.data import ProceduralActions, ClipDataset
from lfdm.lfae import LFAE, LFAEConfig
from lfdm.lfdm import LFDM, LFDMConfig, encode_clips, EncodedClips, fit_dm, save_lfdm
lfae_path, out, minutes, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
seed_everything(0)
lfae = LFAE(LFAEConfig.tiny(region_scale_factor=0.5)); lfae.load_state_dict(torch.load(lfae_path))
model = LFDM(lfae, LFDMConfig.tiny())
t0 = time.time()
cache = encode_clips(model, ClipDataset(ProceduralActions(num_clips=2048, size=64, split="train"), num_frames=16, seed=0), batch_size=16)
torch.save(cache, "dm_cache.pt")
print(f"encoded 2048 clips in {time.time() - t0:.0f} s", flush=True)
t1 = time.time()
losses = fit_dm(model, EncodedClips(cache), seconds=minutes * 60, log_every=50)
print(f"trained {len(losses)} steps in {time.time() - t1:.0f} s", flush=True)
save_lfdm(model, out, half=True, dm_steps=len(losses))
json.dump(losses, open("dm_losses.json", "w"))
