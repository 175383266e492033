"""Train the bundled offline demo: `vivit_demo` and its sample clip (vivit/assets/).

The recipe is examples/finetune.py's: a tiny image ViT pretrained on single frames of the
moving-discs generator, inflated (central frame) into Model 1 and fine-tuned to tell which way the
disc moves. The weights and one held-out clip (as uint8 frames, the way a decoded video arrives) ship
with the package, so `vivit predict` shows a real prediction on a fresh machine without network.

    python examples/make_demo.py          # about a minute on 2 CPU threads
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see finetune.py: spinning threads on a busy CPU

import argparse
from pathlib import Path

import numpy as np
import torch
from finetune import (
    DIRECTIONS,
    MovingDiscs,
    Settings,
    Sizes,
    build_video_model,
    clip_batches,
    evaluate,
    init_video_model,
    pretrain_image_vit,
    train,
)

import vivit
from vivit.weights import save_safetensors

ASSETS = Path(vivit.__file__).resolve().parent / "assets"


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """One clip `(3, T, H, W)` in [-1, 1] -> uint8 frames `(T, H, W, 3)`, as a video decoder returns them."""
    pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)

    data, sizes = MovingDiscs(), Sizes()
    settings = Settings(steps=args.steps, seed=args.seed, progress=False)
    vit, _, _ = pretrain_image_vit(settings, data, sizes)
    torch.manual_seed(args.seed)
    model = init_video_model(build_video_model("model1", sizes, data.num_frames, data.num_classes), vit, "central")
    train(
        model, clip_batches(data, settings.batch_size, args.seed + 200), settings.steps, lr=settings.lr, progress=True
    )

    video, labels, _ = data.sample(2000, torch.Generator().manual_seed(args.seed + 300))
    accuracy = evaluate(model, video, labels)
    # the same held-out clips after uint8 quantisation and the package's own preprocessing
    model.pretrained_cfg = dict(vivit.create_model("vivit_demo").pretrained_cfg)
    transform = vivit.create_transform(model.pretrained_cfg)
    quantised = torch.stack([transform(to_uint8_frames(v)) for v in video[:500]])
    accuracy_uint8 = evaluate(model, quantised, labels[:500])

    ASSETS.mkdir(exist_ok=True)
    with torch.no_grad():  # the sample: the first held-out clip the model gets right
        correct = (model.eval()(video[:50]).argmax(-1) == labels[:50]).nonzero()[0].item()
    np.savez_compressed(
        ASSETS / "sample_clip.npz", frames=to_uint8_frames(video[correct]), label=DIRECTIONS[labels[correct]]
    )
    save_safetensors(model, ASSETS / "vivit_demo.safetensors", trained_by="examples/make_demo.py")
    print(f"held-out accuracy {accuracy:.1f}% (float clips), {accuracy_uint8:.1f}% (uint8 frames + transform)")
    print(f"wrote {ASSETS / 'vivit_demo.safetensors'} and {ASSETS / 'sample_clip.npz'} ({DIRECTIONS[labels[correct]]})")


if __name__ == "__main__":
    main()
