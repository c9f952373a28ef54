"""Bundled tiny LFAE, phase 2: continue phase 1's weights with data seed 1, saving every 5 minutes, then evaluate.

Usage: python scripts/bundled/lfae_phase2.py r05.pt lfae_final.pt 2400 1
Arguments: initial weights, output weights, seconds of training, torch threads.
"""
import sys, time, json, torch
from lfdm.core import seed_everything, atomic_write
from lfdm.data import ProceduralActions, FramePairDataset
from lfdm.lfae import LFAE, LFAEConfig, LFAETrainer, evaluate_lfae
from lfdm.regions import RegionPredictor
init, out, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
seed_everything(1)
cfg = LFAEConfig.tiny()
model = LFAE(cfg)
c = cfg
model.region_predictor = RegionPredictor(block_expansion=c.region_block_expansion, num_regions=c.num_regions, num_channels=3,
    max_features=c.region_max_features, num_blocks=c.region_num_blocks, temperature=c.temperature, scale_factor=0.5)
model.load_state_dict(torch.load(init))
src = ProceduralActions(num_clips=4096, size=64, split="train")
loader = torch.utils.data.DataLoader(FramePairDataset(src, max_gap=16, seed=1), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
tr = LFAETrainer(model, device="cpu")
t0 = time.time(); last = t0
while time.time() - t0 < seconds:
    tr.fit(loader, seconds=min(300, seconds - (time.time() - t0)), log_every=200)
    with atomic_write(out) as tmp: torch.save(model.state_dict(), tmp)
    print("saved", len(tr.history), "steps", round(time.time() - t0), "s", flush=True)
ev = evaluate_lfae(model, ProceduralActions(num_clips=128, size=64, split="test"), num_clips=64)
print(json.dumps(ev))
