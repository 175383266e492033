"""Small labelled datasets of real encoded videos (H.264 in .mp4, written with PyAV) for the dataset jobs' tests.

The clips are the moving discs of `examples/finetune.py` (which way does the disc move: right, left,
down, up), the task the bundled `vivit_demo` model was trained on, so a real model gets them right.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from finetune import DIRECTIONS, MovingDiscs

__all__ = ["DIRECTIONS", "disc_clips", "write_class_folders", "write_video"]


def disc_clips(n: int, frames: int = 8, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """`n` clips as uint8 `(n, T, 32, 32, 3)` frames and their direction labels."""
    video, labels, _ = MovingDiscs(num_frames=frames).sample(n, torch.Generator().manual_seed(seed))
    pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (n, 3, T, H, W)
    return pixels.permute(0, 2, 3, 4, 1).numpy(), labels.tolist()


def write_video(path: Path, frames: np.ndarray, rate: int = 8) -> Path:
    """Encode uint8 `(T, H, W, 3)` frames as H.264 (near lossless, so the labels survive)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "4", "preset": "ultrafast"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv444p"  # no chroma subsampling: 32x32 clips keep their colours
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


def write_class_folders(root: Path, n: int, frames: int = 8, seed: int = 0) -> list[tuple[Path, str]]:
    """`root/<direction>/clip_<i>.mp4` for `n` random clips; returns (path, label name) in order."""
    clips, labels = disc_clips(n, frames, seed)
    out = []
    for i, (clip, label) in enumerate(zip(clips, labels, strict=True)):
        name = DIRECTIONS[label]
        out.append((write_video(root / name / f"clip_{i:03d}.mp4", clip), name))
    return out
