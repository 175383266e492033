"""examples/finetune_folder.py under torchrun: 2 gloo ranks fine-tune an inflated model on a folder of real videos.

The classes differ by a colour tint (learnable in a few steps, so a short run shows the whole pipeline
working: decoding in workers, DistributedSampler, DDP, held-out accuracy, saving). One video is broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_features_job import free_port
from video_datasets import disc_clips, write_video

import vivit

pytestmark = [pytest.mark.distributed]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_folder.py"


def test_two_gloo_ranks_fine_tune_and_the_loss_falls(tmp_path):
    clips, _ = disc_clips(16, frames=8, seed=0)
    for i, clip in enumerate(clips):
        tinted = clip.astype(np.int64)
        tinted[..., i % 2] += 80
        write_video(
            tmp_path / "train" / ("reddish", "greenish")[i % 2] / f"v{i:02d}.mp4",
            np.clip(tinted, 0, 255).astype(np.uint8),
        )
    (tmp_path / "train" / "reddish" / "zz_broken.mp4").write_bytes(b"not a video" * 20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(EXAMPLE),
        str(tmp_path / "train"),
        "--tiny",
        "--steps",
        "20",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "2 process(es) on cpu; 8 clips per step" in done.stdout and done.stdout.count("step 20/20") == 1
    )  # rank 0 logs
    log = json.loads((tmp_path / "run" / "log.json").read_text(encoding="utf-8"))
    losses = log["loss"]
    assert len(losses) == 20 and abs(losses[0] - np.log(2)) < 0.05  # a new zero head: ln 2 for two classes
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])  # measured: 0.65 -> 0.19
    (held_out,) = log["held_out"]
    assert held_out["videos"] == 3 and held_out["step"] == 20  # every fifth of 17 videos, over both ranks
    assert log["failed_videos"] >= 1  # the broken video was skipped, not fatal
    model = vivit.create_model(
        "vivit_ti_st",
        pretrained=str(tmp_path / "run" / "model.safetensors"),
        img_size=32,
        num_frames=8,
        patch_size=8,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_dim=128,
    )
    assert list(model.pretrained_cfg["label_names"]) == ["greenish", "reddish"] and model.num_classes == 2
