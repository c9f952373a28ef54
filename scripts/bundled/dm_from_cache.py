"""Bundled tiny DM (the one in data_samples/lfdm_tiny.pt): train LFDMConfig.tiny() (residual flows x 3) on the flows that dm.py cached.

Usage: python scripts/bundled/dm_from_cache.py lfae_final.pt dm_cache.pt data_samples/lfdm_tiny.pt 22 2
Arguments: LFAE weights, cache written by dm.py, output checkpoint, minutes of DM training, torch threads.
"""
import sys, time, json, torch
from lfdm.core import seed_everything
from lfdm.lfae import LFAE, LFAEConfig
from lfdm.lfdm import LFDM, LFDMConfig, EncodedClips, fit_dm, save_lfdm
lfae_path, cache_path, out, minutes, threads = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
seed_everything(0)
lfae = LFAE(LFAEConfig.tiny(region_scale_factor=0.5)); lfae.load_state_dict(torch.load(lfae_path))
model = LFDM(lfae, LFDMConfig.tiny())
print(model.config, flush=True)
cache = torch.load(cache_path)
t1 = time.time()
losses = fit_dm(model, EncodedClips(cache), seconds=minutes * 60, log_every=50)
print(f"trained {len(losses)} steps in {time.time() - t1:.0f} s", flush=True)
save_lfdm(model, out, half=True, dm_steps=len(losses))
json.dump(losses, open(out + ".losses.json", "w"))
