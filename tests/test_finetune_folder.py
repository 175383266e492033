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
        "--epochs",
        "20",
        "--eval-every",
        "20",
        "--lr",
        "0.1",
        "--batch-size",
        "4",
        "--accum-steps",
        "1",
        "--log-every",
        "1",
        "--workers",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1800, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # 17 videos: every fifth held out (3), 14 to train; 1 step of 2 ranks x 4 clips per epoch
    assert "14 training videos (2 classes), 3 held out; 2 process(es) on cpu; 8 clips per step" in done.stdout
    assert done.stdout.count("step 20/20") == 1  # rank 0 logs, rank 1 does not
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if line["event"] == "train"]
    assert len(losses) == 20 and abs(losses[0] - np.log(2)) < 1e-5  # a new zero head: ln 2 for two classes
    print(f"losses, first and last five: {np.mean(losses[:5]):.3g} -> {np.mean(losses[-5:]):.3g}")  # 0.40 -> 9e-8
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])
    (held_out,) = [line for line in lines if line["event"] == "eval"]
    assert held_out["num_videos"] == 3 and held_out["step"] == 20  # every fifth of 17 videos, over both ranks
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["num_failed"] == 1 and result["failed"][0].endswith("zz_broken.mp4")  # skipped, not fatal
    model = vivit.create_model(f"local-dir:{tmp_path / 'run' / 'last'}", pretrained=True)
    assert list(model.pretrained_cfg["label_names"]) == ["greenish", "reddish"] and model.num_classes == 2
    assert (model.num_frames, model.img_size) == (8, (32, 32))
