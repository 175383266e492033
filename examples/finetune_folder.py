"""Fine-tune ViViT on your own folder of videos, in one process or many (torchrun + DistributedDataParallel).

The data is a class-folder tree, `TRAIN/<class>/<video>` (any format FFmpeg reads, or uint8 .npy/.npz
frame arrays), read by `vivit.data.VideoDataset`: one random clip per video and step with the paper's
augmentation (scale jitter, random crop, flip), decoded in DataLoader workers. Held-out accuracy uses
the test protocol (centre clip, centre crop by default) on `--val VAL/<class>/<video>`, or on every
fifth video of TRAIN when no `--val` is given.

The model starts from a 2D image ViT inflated into video (paper Sec. 3.4, `vivit.weights.inflate_vit`):
a registry name with in21k weights (`--model vivit_b_fe_in21k`, downloaded from the Hub), or any name
plus `--vit PATH` (a timm / HF / Google .npz ViT checkpoint), or `--tiny` (a tiny random 2D ViT made
here, 32x32 pixels, 8 frames: the smoke test CI runs). The classification head is new.

    python examples/finetune_folder.py TRAIN --val VAL --model vivit_b_fe_in21k --steps 2000 --out runs/b
    torchrun --nproc_per_node 4 examples/finetune_folder.py TRAIN --val VAL --model vivit_b_fe_in21k
    torchrun --nproc_per_node 2 examples/finetune_folder.py TRAIN --tiny --steps 30   # CPU, gloo

Under torchrun each process trains on its share of every epoch (`DistributedSampler`), gradients are
averaged by `DistributedDataParallel` (nccl on GPUs, gloo on CPUs), and rank 0 logs and saves. A video
that cannot be decoded is skipped with a warning (the next one stands in, so batches keep their size).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

import vivit
from vivit.data import VideoDataset, VideoRecord, collate_videos, resolve_data_config
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
TINY_CFG = {
    "input_size": (3, 8, 32, 32),
    "frame_stride": 1,
    "resize_size": 32,
    "crop_size": 32,
    "antialias": False,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "test_views": (1, 1),
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


def build_model(args: argparse.Namespace, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The inflated video model with a fresh `num_classes` head, and its preprocessing cfg."""
    if args.tiny:
        model = vivit.create_model(args.model, **TINY_ARGS, num_classes=num_classes)
        model.load_state_dict(inflate_vit(tiny_image_vit(seed=args.seed), model), strict=True)
        return model, dict(TINY_CFG)
    if args.vit:
        from safetensors.torch import load_file

        model = vivit.create_model(args.model, num_classes=num_classes)
        image = load_file(args.vit) if args.vit.endswith(".safetensors") else dict(__import__("numpy").load(args.vit))
        model.load_state_dict(inflate_vit(image, model), strict=True)
    else:  # e.g. vivit_b_fe_in21k: the entry inflates its ImageNet-21k ViT itself
        model = vivit.create_model(args.model, pretrained=True, num_classes=num_classes)
    return model, resolve_data_config(model=model)


def split_folder(root: str) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Every fifth video of each class held out (deterministic), the rest for training."""
    records = VideoDataset(root, "eval").records
    train, val = [], []
    for i, record in enumerate(sorted(records, key=lambda r: (r.labels.get("label", ""), str(r.path)))):
        (val if i % 5 == 4 else train).append(record)
    return train, val


def held_out_accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, int]:
    """Top-1 over this rank's share of the held-out videos, summed over ranks: (percent, videos)."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64)
    with torch.inference_mode():
        for batch in loader:
            if "video" not in batch:
                continue
            views = batch["video"].to(device)  # (B, V, C, T, H, W)
            logits = model(views.flatten(0, 1)).unflatten(0, views.shape[:2]).mean(1)
            counts += torch.tensor(
                [(logits.argmax(1).cpu() == batch["label"]).sum().item(), len(views)], dtype=torch.float64
            )
    if dist.is_initialized():
        dist.all_reduce(counts)
    model.train()
    return float(100 * counts[0] / max(counts[1], 1)), int(counts[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train", help="TRAIN/<class>/<video>")
    p.add_argument("--val", help="VAL/<class>/<video> (default: every fifth video of TRAIN)")
    p.add_argument("--model", default="vivit_ti_st", help="registry name (default vivit_ti_st)")
    p.add_argument("--vit", help="2D ViT checkpoint to inflate (.safetensors timm/HF, or Google .npz)")
    p.add_argument(
        "--tiny", action="store_true", help="tiny model inflated from a random tiny 2D ViT (offline demo, CI)"
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8, help="clips per step and process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default: a tenth of the steps)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (labels that depend on direction)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader processes per training process")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=0, help="held-out accuracy every N steps (default: at the end)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for model.safetensors (vivit format) and log.json")
    args = p.parse_args()

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(args.seed)

    if args.val:
        train_source: Any = args.train
        val_source: Any = args.val
    else:
        train_source, val_source = split_folder(args.train)
    classes = VideoDataset(args.train, "eval").classes
    assert classes is not None
    model, cfg = build_model(args, len(classes))
    if args.no_flip or args.tiny:
        cfg["hflip"] = 0.0  # the tiny demo's classes are directions of motion
    train = VideoDataset(train_source, "train", pretrained_cfg=cfg, label_names=classes, seed=args.seed)
    val = VideoDataset(val_source, "eval", pretrained_cfg=cfg, label_names=classes, views=(1, 1))
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(
        train,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=collate_videos,
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    val_indices = list(range(rank, len(val), world))
    val_loader = DataLoader(
        torch.utils.data.Subset(val, val_indices), batch_size=4, num_workers=args.workers, collate_fn=collate_videos
    )
    if len(loader) == 0:
        raise SystemExit(
            f"{len(train)} training videos are fewer than {world} processes x batch size {args.batch_size}"
        )

    model = model.to(device).train()
    ddp = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if distributed
        else model
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 10)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, args.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    say = print if rank == 0 else (lambda *a, **k: None)
    say(
        f"{len(train)} training videos ({len(classes)} classes), {len(val)} held out; {world} process(es) on {device}; "
        f"{args.batch_size * world} clips per step"
    )
    log: dict[str, Any] = {"loss": [], "held_out": []}
    step, epoch, start = 0, 0, time.time()
    while step < args.steps:
        sampler.set_epoch(epoch)
        train.set_epoch(epoch)
        for batch in loader:
            if step >= args.steps:
                break
            clips, labels = batch["video"].to(device, non_blocking=True), batch["label"].to(device)
            loss = F.cross_entropy(ddp(clips), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            mean_loss = loss.detach()
            if distributed:
                dist.all_reduce(mean_loss)
                mean_loss /= world
            log["loss"].append(round(float(mean_loss), 5))
            if step % args.log_every == 0 or step == args.steps:
                say(
                    f"step {step}/{args.steps}  loss {float(mean_loss):.4f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                    f"{time.time() - start:.0f} s"
                )
            if (args.eval_every and step % args.eval_every == 0) or step == args.steps:
                accuracy, count = held_out_accuracy(model, val_loader, device)
                log["held_out"].append({"step": step, "top1": accuracy, "videos": count})
                say(f"step {step}: held-out top-1 {accuracy:.1f}% ({count} videos)")
        epoch += 1
    failed = torch.tensor([train.num_failed + val.num_failed])
    if distributed:
        dist.all_reduce(failed)
    log["failed_videos"] = int(failed)
    if rank == 0 and args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model.pretrained_cfg = {**cfg, "label_names": tuple(classes), "num_classes": len(classes)}
        vivit.weights.save_safetensors(model, out / "model.safetensors")
        (out / "log.json").write_text(json.dumps(log) + "\n", encoding="utf-8")
        say(
            f"saved {out / 'model.safetensors'}; load it with vivit.create_model({args.model!r}, "
            f"pretrained={str(out / 'model.safetensors')!r}{', **TINY_ARGS' if args.tiny else ''})"
        )
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
