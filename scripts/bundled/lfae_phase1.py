"""Bundled tiny LFAE, phase 1 (as run for data_samples/lfdm_tiny.pt): train from scratch with the region predictor at scale 0.5.

Usage (from the repository root): python scripts/bundled/lfae_phase1.py r05 0.5 2e-4 1500   -> r05.pt, r05.json
Arguments: run name, region-predictor scale, learning rate, seconds of training. One torch thread.
"""
import sys, time, json, torch
from lfdm.core import seed_everything
from lfdm.data import ProceduralActions, FramePairDataset
from lfdm.lfae import LFAE, LFAEConfig, LFAETrainer, evaluate_lfae, format_evaluation
from lfdm.regions import RegionPredictor
name, rscale, lr, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(1)
seed_everything(0)
cfg = LFAEConfig.tiny(lr=lr)
model = LFAE(cfg)
if rscale != cfg.scale_factor:
    c = cfg
    model.region_predictor = RegionPredictor(block_expansion=c.region_block_expansion, num_regions=c.num_regions, num_channels=3,
        max_features=c.region_max_features, num_blocks=c.region_num_blocks, temperature=c.temperature, scale_factor=rscale)
src = ProceduralActions(num_clips=4096, size=64, split="train")
loader = torch.utils.data.DataLoader(FramePairDataset(src, max_gap=16, seed=0), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
tr = LFAETrainer(model, device="cpu")
t0 = time.time()
tr.fit(loader, seconds=seconds, log_every=200)
print("steps", len(tr.history), "time", time.time() - t0, flush=True)
torch.save(model.state_dict(), f"{name}.pt")
ev = evaluate_lfae(model, ProceduralActions(num_clips=128, size=64, split="test"), num_clips=64)
print(format_evaluation(ev) if not isinstance(format_evaluation(ev), type(None)) else ev)
json.dump(ev, open(f"{name}.json", "w"), indent=1)
