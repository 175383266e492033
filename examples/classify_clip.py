"""Build ViViT-B Factorised Encoder (Model 2) and classify one random clip: shapes, size, time."""

from __future__ import annotations

import time

import torch

import vivit

torch.manual_seed(0)
model = vivit.create_model("vivit_b_fe").eval()
video = torch.rand(1, 3, 32, 224, 224) * 2 - 1  # (B, C, T, H, W), pixels in [-1, 1]
with torch.inference_mode():
    start = time.perf_counter()
    logits = model(video)
    seconds = time.perf_counter() - start
print(
    f"model      vivit_b_fe ({type(model).__name__}), {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
)
print(f"input      {tuple(video.shape)} (B, C, T, H, W) -> token grid {model.grid_size} (t, h, w)")
print(f"logits     {tuple(logits.shape)}, top class {logits.argmax(-1).item()} (random weights)")
print(f"forward    {seconds:.2f} s on {torch.get_num_threads()} CPU threads")
