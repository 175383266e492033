"""Start-up: build a model for a local checkpoint and load its weights, the old way and vivit's way.

Issue 23 point 4: `vivit predict` with `vivit_b_fe` spent 2.6 s of 7 s building the model and loading
its weights; the target is at most 25% of that. Both ways run in one process, alternating, and the
medians are printed with the machine's load average (compare only figures taken together).

* before: what vivit did until this change (and what a plain PyTorch script does): the model built
  with its random init, the checkpoint read into new tensors (`safetensors.torch.load_file`), every
  value checked with `isfinite` (vivit's check, in chunks), then copied in (`load_state_dict`);
* after: `vivit.create_model(name, pretrained=PATH)`: the header checked, the model built on the meta
  device (no init), the file's tensors memory-mapped, checked with one sum each, and assigned.

Usage: python benchmarks/startup.py [--model vivit_b_fe] [--rounds 5] [--checkpoint DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import vivit
from vivit.models.registry import get_entry


def before(name: str, checkpoint: Path) -> torch.nn.Module:
    entry = get_entry(name)
    model = entry.model_cls(**entry.model_args)  # random init, about to be overwritten
    state = load_file(str(checkpoint / "model.safetensors"))  # a copy of every tensor
    for tensor in state.values():  # the finiteness check as it was: a boolean temporary per chunk
        flat = tensor.reshape(-1)
        for i in range(0, flat.numel(), 1 << 22):
            if not bool(torch.isfinite(flat[i : i + (1 << 22)]).all()):
                raise ValueError("not finite")
    model.load_state_dict(state, strict=True)  # a second copy
    return model.eval()


def after(name: str, checkpoint: Path) -> torch.nn.Module:
    return vivit.create_model(name, pretrained=checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vivit_b_fe")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained folder (default: a random one, written now)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="vivit-startup-") as tmp:
        checkpoint = args.checkpoint or Path(tmp)
        if args.checkpoint is None:
            vivit.create_model(args.model).save_pretrained(checkpoint)
        size = (checkpoint / "model.safetensors").stat().st_size
        ways = {"before": before, "after": after}
        ref = before(args.model, checkpoint).state_dict()  # also warms the page cache
        got = after(args.model, checkpoint).state_dict()
        assert all(torch.equal(ref[k], got[k]) for k in ref), "the two ways loaded different weights"
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way, load in ways.items():
                start = time.perf_counter()
                model = load(args.model, checkpoint)
                times[way].append(time.perf_counter() - start)
                del model
        load_avg = os.getloadavg()[0]
    median = {way: statistics.median(t) for way, t in times.items()}
    print(
        f"{args.model}: build + load of a {size / 2**20:.0f} MiB checkpoint, {args.rounds} alternating rounds, "
        f"{torch.get_num_threads()} threads, load average {load_avg:.2f}"
    )
    for way, t in times.items():
        print(f"  {way:<6} median {median[way]:.3f} s  (min {min(t):.3f}, max {max(t):.3f})")
    print(f"  after / before = {median['after'] / median['before']:.1%} (target <= 25%)")


if __name__ == "__main__":
    main()
