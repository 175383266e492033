"""What a `vivit train` step costs, and what ranks and accumulation change.

1. **Overhead**: one update of `vivit train` (Scenic's SGD recipe: seeding per micro-batch, soft-target
   loss, global-norm clipping, the schedule, logging, the sampler) against the bare
   `loss = F.cross_entropy(model(x), y); loss.backward(); optimizer.step()` of the same model and batch
   size. The job's step is its log line's `seconds_per_step - data_seconds_per_step` (wall time per update
   minus the time spent waiting for the DataLoader, which the data benchmarks cover). The two contenders
   alternate in one process, `--rounds` times; the medians over steps (first steps dropped) and rounds
   are compared. Clips are uint8 .npy arrays at the crop size, decoded in the main process by default
   (`--workers 0`: their time is the wait that is subtracted, and no worker takes CPU from the step).
2. **Ranks and accumulation**: 2 gloo ranks x batch 2 against 1 rank x batch 2 x 2 accumulation steps
   (the same global batches, `vivit train` under `torch.distributed.run`), 10 updates of a tiny model:
   the largest weight difference. Equal by construction up to float rounding (see tests/test_train_distributed.py).

    python benchmarks/train_step.py --threads 1                # vivit_s_fe, 8 x 112^2, batch 4: ~10 min
    python benchmarks/train_step.py --model vivit_b_fe --frames 8 --size 224 --batch 2 --rounds 3

The load average is printed with every figure: on a shared 2-core machine, trust only ratios measured
while it stays below ~1.5, and always the same-run alternation, never figures from different runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import vivit
from vivit.train import train

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def write_clips(root: Path, count: int, frames: int, size: int, classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        path = root / f"c{i % classes}" / f"{i:04d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))


def bare_steps(args: argparse.Namespace, steps: int) -> list[float]:
    """Seconds of each `forward + backward + optimizer.step` on one fixed batch."""
    torch.manual_seed(0)
    model = vivit.create_model(args.model, num_frames=args.frames, img_size=args.size, num_classes=4).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size)
    y = torch.arange(args.batch) % 4
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def job_steps(args: argparse.Namespace, data: Path, steps: int) -> list[float]:
    """Seconds of each `vivit train` update, minus its wait for data (from log.jsonl)."""
    out = Path(tempfile.mkdtemp(prefix="train_step_"))
    shutil.rmtree(out)
    try:
        train(
            data,
            None,
            args.model,
            out,
            recipe="k400",
            pretrained=False,
            model_args={"num_frames": args.frames, "img_size": args.size},
            batch_size=args.batch,
            accum_steps=1,
            epochs=1,
            color_prob=0.0,  # not in this build before the trainlib merge; the data side is not timed here
            color_drop_prob=0.0,
            frame_stride=1,
            workers=args.workers,
            log_every=1,
            checkpoint_every=10**9,
            tensorboard=False,
        )
        lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return [line["seconds_per_step"] - line["data_seconds_per_step"] for line in lines if line["event"] == "train"]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def overhead(args: argparse.Namespace) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="train_step_data_"))
    write_clips(data, args.steps * args.batch, args.frames, args.size)
    skip = 2
    bare_rounds, job_rounds = [], []
    try:
        for r in range(args.rounds):  # alternate, so that both see the same machine
            bare = statistics.median(bare_steps(args, args.steps)[skip:])
            job = statistics.median(job_steps(args, data, args.steps)[skip:])
            bare_rounds.append(bare)
            job_rounds.append(job)
            print(f"  round {r + 1}: bare {bare * 1000:.0f} ms, vivit train {job * 1000:.0f} ms ({load()})", flush=True)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    bare, job = statistics.median(bare_rounds), statistics.median(job_rounds)
    return {"bare_ms": bare * 1000, "job_ms": job * 1000, "ratio": job / bare}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranks_vs_accumulation() -> float:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_train import TINY
    from test_train import write_clips as write_disc_clips

    work = Path(tempfile.mkdtemp(prefix="train_ranks_"))
    try:
        write_disc_clips(work / "train", 20, seed=0)
        common = [str(work / "train"), "--model", "vivit_ti_st", "--recipe", "ek100", "--randaugment", "none"]
        common += [arg for k, v in TINY.items() for arg in ("--override", f"{k}={v}")]
        common += ["--frame-stride", "1", "--lr", "0.05", "--batch-size", "2", "--epochs", "2", "--no-tensorboard"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        one = [sys.executable, "-m", "vivit", "train", *common, "--accum-steps", "2", "--out", str(work / "one")]
        two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
        two += ["--master_port", str(free_port()), "-m", "vivit", "train", *common, "--accum-steps", "1"]
        two += ["--out", str(work / "two")]
        for command in (one, two):
            subprocess.run(command, check=True, capture_output=True, env=env, cwd=work, timeout=900)
        from safetensors.torch import load_file

        a, b = (load_file(work / run / "last" / "model.safetensors") for run in ("one", "two"))
        return max(float((a[k] - b[k]).abs().max()) for k in a)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vivit_s_fe")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=12, help="updates per contender and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="the job's DataLoader workers (default 0: decoding happens between steps and is subtracted; "
        "workers would take CPU from the step on a 2-core machine)",
    )
    p.add_argument("--skip-ranks", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.model}, {args.frames}x{args.size}^2, batch {args.batch}, {args.threads} threads, torch {torch.__version__}"
    )
    print(f"1. overhead of a vivit train step vs bare forward + backward + optimizer.step ({load()})")
    result = overhead(args)
    print(
        f"   median: bare {result['bare_ms']:.0f} ms, vivit train {result['job_ms']:.0f} ms: "
        f"x{result['ratio']:.3f} (target <= 1.10; {load()})"
    )
    if not args.skip_ranks:
        print(f"2. 2 gloo ranks x batch 2 vs 1 rank x batch 2 x 2 accumulation, 10 updates ({load()})")
        diff = ranks_vs_accumulation()
        print(f"   max |weight difference| = {diff:.3g}")


if __name__ == "__main__":
    main()
