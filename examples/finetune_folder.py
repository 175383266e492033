"""Fine-tune ViViT on your own folder of videos, in one process or many: a thin script over `vivit.train.train`.

The data is a class-folder tree, `TRAIN/<class>/<video>` (any format FFmpeg reads, or uint8 .npy/.npz
frame arrays). Held-out accuracy uses `--val VAL/<class>/<video>`, or every fifth video of TRAIN when no
`--val` is given. Everything else is the library's `vivit train` job (`vivit.train.train`): Scenic's
recipe (`--recipe k400`: SGD with momentum, warm-up + cosine, gradient clipping, the paper's augmentation),
gradient accumulation to the recipe's global batch, evaluation as `vivit evaluate` does it, checkpoints
that survive a kill (re-run the same command to resume), `OUT/last/` and `OUT/best/`, `OUT/log.jsonl`.
The command line `vivit train` does the same for registered names; this script adds what it cannot
take: a model inflated here from a 2D ViT file (paper Sec. 3.4, `vivit.weights.inflate_vit`).

The model: a registry name with in21k weights (`--model vivit_b_fe_in21k`, downloaded from the Hub), or any
name plus `--vit PATH` (a timm / HF / Google .npz ViT checkpoint), or `--tiny` (a tiny random 2D ViT made
here, 32x32 pixels, 8 frames: the smoke test CI runs). The classification head is new.

    python examples/finetune_folder.py TRAIN --val VAL --model vivit_b_fe_in21k --epochs 10 --out runs/b
    torchrun --nproc_per_node 4 examples/finetune_folder.py TRAIN --val VAL --model vivit_b_fe_in21k --out runs/b
    torchrun --nproc_per_node 2 examples/finetune_folder.py TRAIN --tiny --epochs 20 --out runs/t   # CPU, gloo

Under torchrun each process trains on its share of every global batch (DistributedDataParallel: nccl on
GPUs, gloo on CPUs) and rank 0 logs and saves. A video that cannot be decoded is skipped and counted.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch

import vivit
from vivit.data import VideoDataset, VideoRecord
from vivit.train import train
from vivit.weights import inflate_vit

TINY_ARGS = {
    "img_size": 32,
    "num_frames": 8,
    "patch_size": 8,
    "tubelet_size": 2,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 4,
    "mlp_dim": 128,
}
#: Recipe changes for the tiny demo: its frames are one apart, one view, no flips (its classes can be
#: directions of motion) and no colour augmentation (they can be colours).
TINY_SETTINGS = {
    "frame_stride": 1,
    "test_views": (1, 1),
    "hflip": 0.0,
    "color_prob": 0.0,
    "color_drop_prob": 0.0,
}


def tiny_image_vit(
    embed_dim: int = 64, depth: int = 4, mlp_dim: int = 128, patch: int = 8, img: int = 32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The state dict of a tiny 2D ViT with timm's names and layouts (random weights, timm's init scales).

    Stands in for a real image checkpoint so the example runs offline; pass `--vit` for a real one.
    """
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    d, tokens = embed_dim, (img // patch) ** 2 + 1
    state = {
        "patch_embed.proj.weight": normal(d, 3, patch, patch),
        "patch_embed.proj.bias": torch.zeros(d),
        "cls_token": normal(1, 1, d),
        "pos_embed": normal(1, tokens, d),
        "norm.weight": torch.ones(d),
        "norm.bias": torch.zeros(d),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": torch.ones(d),
                b + "norm1.bias": torch.zeros(d),
                b + "attn.qkv.weight": normal(3 * d, d),
                b + "attn.qkv.bias": torch.zeros(3 * d),
                b + "attn.proj.weight": normal(d, d),
                b + "attn.proj.bias": torch.zeros(d),
                b + "norm2.weight": torch.ones(d),
                b + "norm2.bias": torch.zeros(d),
                b + "mlp.fc1.weight": normal(mlp_dim, d),
                b + "mlp.fc1.bias": torch.zeros(mlp_dim),
                b + "mlp.fc2.weight": normal(d, mlp_dim),
                b + "mlp.fc2.bias": torch.zeros(d),
            }
        )
    return state


def build_model(args: argparse.Namespace) -> str | vivit.ViViT:
    """A registry name for `train` to build, or a model inflated here from a 2D ViT (the head is replaced later)."""
    if args.tiny:
        model = vivit.create_model(args.model, **TINY_ARGS)
        model.load_state_dict(inflate_vit(tiny_image_vit(seed=args.seed), model), strict=True)
        return model
    if args.vit:
        from safetensors.torch import load_file

        model = vivit.create_model(args.model)
        image = load_file(args.vit) if args.vit.endswith(".safetensors") else dict(__import__("numpy").load(args.vit))
        model.load_state_dict(inflate_vit(image, model), strict=True)
        return model
    return args.model  # e.g. vivit_b_fe_in21k: the entry inflates its ImageNet-21k ViT itself


def split_folder(root: str) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Every fifth video of each class held out (deterministic), the rest for training."""
    records = VideoDataset(root, "eval").records
    kept, held_out = [], []
    for i, record in enumerate(sorted(records, key=lambda r: (r.labels.get("label", ""), str(r.path)))):
        (held_out if i % 5 == 4 else kept).append(record)
    return kept, held_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train", help="TRAIN/<class>/<video>")
    p.add_argument("--val", help="VAL/<class>/<video> (default: every fifth video of TRAIN)")
    p.add_argument("--model", default="vivit_ti_st", help="registry name (default vivit_ti_st)")
    p.add_argument("--vit", help="2D ViT checkpoint to inflate (.safetensors timm/HF, or Google .npz)")
    p.add_argument(
        "--tiny", action="store_true", help="tiny model inflated from a random tiny 2D ViT (offline demo, CI)"
    )
    p.add_argument("--recipe", default="k400", help="Scenic's settings: k400, ek100, ssv2 (vivit train --show)")
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--lr", type=float, help="base learning rate (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass and process")
    p.add_argument("--accum-steps", type=int, help="micro-batches per update (default: reach the recipe's batch 64)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (labels that depend on direction)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes per training process")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    p.add_argument("--eval-every", type=int, help="epochs between held-out evaluations (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the run's folder (re-run the same command to resume)")
    args = p.parse_args()

    if args.val:
        train_source: Any = args.train
        val_source: Any = args.val
    else:
        train_source, val_source = split_folder(args.train)
    settings: dict[str, Any] = dict(TINY_SETTINGS) if args.tiny else {}
    for key in ("epochs", "lr", "eval_every"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.no_flip:
        settings["hflip"] = 0.0
    rank0 = os.environ.get("RANK", "0") == "0"
    total = 0

    def progress(event: dict[str, Any]) -> None:  # called on rank 0 only
        nonlocal total
        if event["event"] == "start":
            total = event["total_steps"]
            print(
                f"{event['train_videos']} training videos ({event['classes']} classes), {event['val_videos']} held "
                f"out; {event['world_size']} process(es) on {event['device']}; {event['global_batch']} clips per step"
            )
        elif event["event"] == "log":
            print(f"step {event['step']}/{total}  loss {event['loss']:.4f}  lr {event['lr']:.2e}")
        elif event["event"] == "eval":
            print(f"step {event['step']}: held-out top-1 {event['top1']:.1f}% ({event['num_videos']} videos)")

    result = train(
        train_source,
        val_source,
        build_model(args),
        args.out,
        recipe=args.recipe,
        batch_size=args.batch_size,
        accum_steps=args.accum_steps,
        workers=args.workers,
        seed=args.seed,
        log_every=args.log_every,
        progress=progress,
        **settings,
    )
    if rank0:
        print(f"held-out top-1 {result.metrics.get('top1', float('nan')):.1f}%; {result.num_failed} videos skipped")
        print(f"saved {args.out}/last and {args.out}/best; load with vivit.create_model('local-dir:{args.out}/best')")


if __name__ == "__main__":
    main()
