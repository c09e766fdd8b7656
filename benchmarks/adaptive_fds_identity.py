#!/usr/bin/env python
"""Is the adaptive-FDS conditioning map bit-identical to the clean map? Then `gesco evaluate` makes the same images.

    python benchmarks/adaptive_fds_identity.py      # demo model, 101 CamVid val maps at 64x80, AWGN 30..1 dB

Uses the evaluator's own channel seeding (item i: derive_seed(0 + i, 1)), so the answer holds for the images of
benchmarks/evaluate_demo.sh (same seeds, deterministic sampling).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gesco_diffusers import GescoPipeline  # noqa: E402
from gesco_diffusers.evaluation.data import EvaluationData  # noqa: E402
from gesco_diffusers.evaluation.protocol import ChannelCondition  # noqa: E402
from gesco_diffusers.evaluation.sources import GenerationSettings, PipelineImages  # noqa: E402

torch.set_num_threads(1)
pipe = GescoPipeline.from_pretrained("gesco_diffusers/assets/demo/camvid")
data = EvaluationData("camvid", "val", (64, 80), data_dir="../shared/data/camvid")
items = [data.item(i) for i in range(len(data))]
settings = GenerationSettings(15, 1.5, 0)
clean = [m.denoised for m in PipelineImages(pipe, "none", ChannelCondition(), settings).received_maps(items, "none")]
for psnr in (30, 20, 15, 10, 5, 1):
    maker = PipelineImages(pipe, "adaptive", ChannelCondition("awgn", psnr), settings)
    maps = [m.denoised for m in maker.received_maps(items, "adaptive")]
    same = sum(torch.equal(a, b) for a, b in zip(maps, clean))
    print(f"AWGN {psnr} dB: adaptive-FDS map identical to the clean map on {same}/{len(items)} maps")
